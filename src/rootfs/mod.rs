//! TODO: rootfs
