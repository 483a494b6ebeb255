#!/usr/bin/env python3
"""List a tarball the way the tests compare it with an image: one JSON object per path.

Independent of hc1img's own tar reader (Python's tarfile module). Paths are normalised like
bsdtar extracts them (leading ./ and / stripped); a later entry for the same path wins; hard
links carry their target's data. Usage: tarlist.py TARBALL > listing.json
"""
import hashlib
import json
import sys
import tarfile


def main():
    out = {}
    data = {}
    with tarfile.open(sys.argv[1], "r:*") as tf:
        for m in tf:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.lstrip("/").rstrip("/")
            if name == ".":
                name = ""
            if ".." in name.split("/"):
                continue
            e = {
                "mode": m.mode & 0o7777,
                "uid": m.uid,
                "gid": m.gid,
                "mtime": int(float(m.pax_headers.get("mtime", m.mtime))),
                "xattrs": {
                    k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape").hex()
                    for k, v in sorted(m.pax_headers.items())
                    if k.startswith("SCHILY.xattr.")
                },
            }
            if m.isdir():
                e["type"] = "dir"
            elif m.issym():
                e["type"] = "symlink"
                e["target"] = m.linkname
            elif m.islnk():
                target = m.linkname.lstrip("./") if m.linkname.startswith("./") else m.linkname
                out[name] = out[target]
                continue
            elif m.ischr() or m.isblk():
                e["type"] = "char" if m.ischr() else "block"
                e["major"], e["minor"] = m.devmajor, m.devminor
            elif m.isfifo():
                e["type"] = "fifo"
            else:
                e["type"] = "file"
                f = tf.extractfile(m)
                h = hashlib.sha256()
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                e["size"] = m.size
                e["sha256"] = h.hexdigest()
            out[name] = e
    json.dump(out, sys.stdout, sort_keys=True, ensure_ascii=False)


main()
