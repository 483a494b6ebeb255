//! TODO: build
