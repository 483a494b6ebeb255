//! The root filesystem's contents: reading the tarball ([`input`]; one pass shared by several
//! builds, [`fanout`]), importing it into the in-memory tree while file data streams into the
//! image ([`import`]). The profile's sections edit the tree afterwards (`crate::sections`).

pub mod acl;
pub mod fanout;
pub mod import;
pub mod input;
pub mod sparse;

use import::Route;

/// How a build routes each tar path: files below `boot/` to the FAT boot partition, the
/// files the node's sections read (`captured`, from `crate::sections::captured_paths`) into
/// memory, everything else straight into the image.
pub fn route(path: &[u8], captured: &[&str]) -> Route {
    if path.starts_with(b"boot/") {
        Route::Boot
    } else if captured.iter().any(|c| c.as_bytes() == path) {
        Route::Capture
    } else {
        Route::Keep
    }
}
