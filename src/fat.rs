//! TODO: fat
