//! The build engine (being wired).
