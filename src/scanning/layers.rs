//! An image's file tree as its layers build it, reduced to the files an inventory reads:
//! layers applied in order, whiteouts (`.wh.<name>`) and opaque directories (`.wh..wh..opq`)
//! honoured, with caps on sizes so a hostile layer cannot exhaust memory.

use std::collections::BTreeMap;

/// The files an inventory needs, by absolute path (`/etc/os-release`), after every layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Files {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Symbolic links, path -> target as written.
    pub links: BTreeMap<String, String>,
}
