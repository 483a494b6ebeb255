//! The module graph of `src/` has no cycle among the crate's top-level modules (issue 17,
//! item 4), so each module can be read, tested and moved knowing only what lies below it.
//!
//! The graph is read from the sources themselves: module `A` (`src/A.rs` or any file under
//! `src/A/`) has an edge to module `B` for every `crate::B` in its text, doc links and
//! `use crate::{B, …}` groups included (a doc link up the graph is a dependency a reader has to
//! follow too). `src/lib.rs` and `src/main.rs` are the roots and are left out. A failure names
//! the cycle and the first `FILE:LINE` of each of its edges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `from -> to -> the first FILE:LINE where from names crate::to`.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Every `.rs` file under `dir`, sorted.
fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules of `src/` with their files.
fn top_modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    for e in std::fs::read_dir(src).expect("src/") {
        let p = e.expect("directory entry").path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            let mut files = Vec::new();
            rs_files(&p, &mut files);
            mods.insert(name, files);
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "lib"
            && stem != "main"
        {
            mods.entry(stem.to_string())
                .or_insert_with(Vec::new)
                .push(p.clone());
        }
    }
    mods
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first identifier of `s` (after leading whitespace).
fn leading_ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// Every `crate::NAME` of `text` as (NAME, line number): `crate::a::b` gives `a`, and
/// `crate::{a, b::c}` gives `a` and `b`.
fn crate_refs(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue; // e.g. `my_crate::`
        }
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push((
                            leading_ident(&group[item_start..k]).to_string(),
                            line_of(at),
                        ));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((
                            leading_ident(&group[item_start..k]).to_string(),
                            line_of(at),
                        ));
                        item_start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((leading_ident(rest).to_string(), line_of(at)));
        }
    }
    out.retain(|(n, _)| !n.is_empty());
    out
}

/// The `use crate::` graph among the top-level modules of `src`.
fn graph(src: &Path) -> Graph {
    let mods = top_modules(src);
    let mut g = Graph::new();
    for (name, files) in &mods {
        let edges = g.entry(name.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(f)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
            for (to, line) in crate_refs(&text) {
                if to != *name && mods.contains_key(&to) {
                    edges
                        .entry(to)
                        .or_insert_with(|| format!("{}:{line}", f.display()));
                }
            }
        }
    }
    g
}

/// A cycle of `g` as `[a, b, …, a]`, if it has one (depth-first search; the first back edge).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        g: &'a Graph,
        n: &'a str,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(n, Mark::OnPath);
        path.push(n);
        for to in g.get(n).into_iter().flat_map(|e| e.keys()) {
            match marks.get(to.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|p| p == to).expect("on the path");
                    let mut c: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                    c.push(to.clone());
                    return Some(c);
                }
                Mark::New => {
                    if let Some(c) = visit(g, to, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if marks.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(g, n, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_cycle_among_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    let edges: usize = g.values().map(BTreeMap::len).sum();
    assert!(
        g.len() > 10 && edges > 20,
        "the scan found only {} modules and {edges} edges in {}: is it still reading src/?",
        g.len(),
        src.display()
    );
    if let Some(c) = find_cycle(&g) {
        let why: Vec<String> = c
            .windows(2)
            .map(|w| format!("  {} -> {}: {}", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        panic!(
            "import cycle among src/'s top-level modules: {}\n{}\nmove what the lower module \
             needs into it or into a leaf module",
            c.join(" -> "),
            why.join("\n")
        );
    }
}

#[test]
fn the_checker_finds_references_and_cycles() {
    let refs = crate_refs(
        "use crate::disk::SECTOR;\nuse crate::{fat, profile::{Board, Boot}};\n\
         /// [`crate::plan`]\nuse my_crate::x;\n",
    );
    assert_eq!(
        refs,
        [
            ("disk".to_string(), 1),
            ("fat".to_string(), 2),
            ("profile".to_string(), 2),
            ("plan".to_string(), 3)
        ]
    );
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("d", "a")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), "x.rs:1".into());
    }
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into())
        .or_default()
        .insert("a".into(), "x.rs:1".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// README.md's "Repository layout" table names every top-level module of `src/` in its first
/// column (`src/NAME.rs` or `src/NAME/`), and every path that column names exists.
#[test]
fn readme_layout_table_names_every_top_level_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let table = readme
        .split("## Repository layout")
        .nth(1)
        .expect("README.md has a \"## Repository layout\" section");
    let mut listed = Vec::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let first = line.split('|').nth(1).unwrap_or("");
        listed.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    for p in &listed {
        let path = p.split_whitespace().next().unwrap_or(p);
        assert!(
            root.join(path.trim_end_matches('/')).exists(),
            "README.md's layout table names {p}, which does not exist"
        );
    }
    let mut missing = Vec::new();
    for name in top_modules(&root.join("src")).into_keys() {
        let want = if root.join("src").join(&name).is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}.rs")
        };
        if !listed.contains(&want) {
            missing.push(want);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's layout table does not name {missing:?}"
    );
}
