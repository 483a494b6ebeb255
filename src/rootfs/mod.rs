//! The root filesystem's contents: reading the tarball ([`input`]), importing it into the
//! in-memory tree while file data streams into the image ([`import`]), and the profile's
//! edits applied to the tree afterwards.

pub mod edits;
pub mod import;
pub mod input;
