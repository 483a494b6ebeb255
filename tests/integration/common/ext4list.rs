//! An independent listing of an ext4 image (the `ext4-view` crate, which shares no code with
//! hc1img's writer), in the same shape as `tests/tools/tarlist.py`'s listing of a tarball, so
//! tests can compare the two. Extended attributes and device numbers, which ext4-view does
//! not read, are compared with `debugfs` by the tests themselves.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ext4_view::{Ext4, Ext4Read};
use serde_json::{Value, json};

struct OffsetFile {
    f: File,
    off: u64,
}

impl Ext4Read for OffsetFile {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.f.seek(SeekFrom::Start(self.off + start))?;
        self.f.read_exact(dst)?;
        Ok(())
    }
}

pub fn open(image: &Path, offset: u64) -> Ext4 {
    let f = File::open(image).unwrap();
    Ext4::load(Box::new(OffsetFile { f, off: offset }))
        .unwrap_or_else(|e| panic!("ext4-view cannot load {}: {e}", image.display()))
}

/// Every path in the filesystem except `lost+found`, like tarlist.py (without xattrs/devices).
pub fn list(fs: &Ext4) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let root = fs.metadata("/").unwrap();
    out.insert(String::new(), entry(fs, "/", &root));
    walk(fs, "", &mut out);
    out
}

fn walk(fs: &Ext4, dir: &str, out: &mut BTreeMap<String, Value>) {
    let abs = format!("/{dir}");
    for e in fs.read_dir(abs.as_str()).unwrap() {
        let e = e.unwrap();
        let name = String::from_utf8_lossy(e.file_name().as_ref()).into_owned();
        if name == "." || name == ".." || (dir.is_empty() && name == "lost+found") {
            continue;
        }
        let rel = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        let md = e.metadata().unwrap();
        out.insert(rel.clone(), entry(fs, &format!("/{rel}"), &md));
        if md.is_dir() {
            walk(fs, &rel, out);
        }
    }
}

fn entry(fs: &Ext4, path: &str, md: &ext4_view::Metadata) -> Value {
    let ft = md.file_type();
    let mut v = json!({
        "mode": md.mode() & 0o7777,
        "uid": md.uid(),
        "gid": md.gid(),
        "mtime": md.modified().seconds(),
    });
    let m = v.as_object_mut().unwrap();
    if ft.is_dir() {
        m.insert("type".into(), json!("dir"));
    } else if ft.is_symlink() {
        m.insert("type".into(), json!("symlink"));
        let t = fs
            .read_link(path)
            .unwrap_or_else(|e| panic!("ext4-view cannot read link {path}: {e:?}"));
        m.insert("target".into(), json!(String::from_utf8_lossy(t.as_ref())));
    } else if ft.is_regular_file() {
        m.insert("type".into(), json!("file"));
        let data = fs
            .read(path)
            .unwrap_or_else(|e| panic!("ext4-view cannot read {path}: {e:?}"));
        m.insert("size".into(), json!(data.len()));
        m.insert("sha256".into(), json!(super::sha256_hex(&data)));
    } else if ft.is_char_dev() {
        m.insert("type".into(), json!("char"));
    } else if ft.is_block_dev() {
        m.insert("type".into(), json!("block"));
    } else if ft.is_fifo() {
        m.insert("type".into(), json!("fifo"));
    } else {
        m.insert("type".into(), json!("socket"));
    }
    v
}
