//! TODO: profile
