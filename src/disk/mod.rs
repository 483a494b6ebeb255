//! TODO: disk
