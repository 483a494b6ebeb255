//! TODO: uboot
