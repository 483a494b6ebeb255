//! The reference tables of docs/profiles.md are generated from the sections' own schema: the
//! registry (`hc1img::sections::schema_types`, the one list of sections) names each section's
//! type, the section's module (`src/sections/NAME.rs`) gives its fields and their doc comments,
//! and `Sections::default()` gives the defaults. `src/values.rs` gives the value types' table.
//!
//! The test fails when the committed docs differ from what the schema generates; with
//! `HC1IMG_BLESS=1` it rewrites the blocks between `<!-- reference:NAME:begin -->` and
//! `<!-- reference:NAME:end -->` instead:
//!
//!     HC1IMG_BLESS=1 cargo test --test integration docs_reference

use std::collections::BTreeMap;
use std::path::Path;

use quote::ToTokens;
use serde_json::Value;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/profiles.md");

/// The doc comment of an item or field, as one paragraph.
fn doc_of(attrs: &[syn::Attribute]) -> String {
    doc_of_metas(attrs.iter().map(|a| &a.meta))
}

/// [`doc_of`] for attribute contents (`doc = "…"`).
fn doc_of_metas<'a>(metas: impl Iterator<Item = &'a syn::Meta>) -> String {
    let mut lines = Vec::new();
    for m in metas {
        if let syn::Meta::NameValue(nv) = m
            && nv.path.is_ident("doc")
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            lines.push(s.value().trim().to_string());
        }
    }
    strip_doc_links(lines.join(" ").trim()).replace('|', "\\|")
}

/// Rustdoc's intra-doc links (``[`X`]``) as plain code (`` `X` ``): they do not resolve in
/// Markdown.
fn strip_doc_links(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("[`") {
        let after = &rest[i + 1..];
        match after.find("`]") {
            Some(j) if !after[j + 2..].starts_with('(') => {
                out.push_str(&rest[..i]);
                out.push_str(&after[..j + 1]);
                rest = &after[j + 2..];
            }
            _ => {
                out.push_str(&rest[..i + 2]);
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `#[serde(...)]` items of `attrs` as (name, Some(string value) | None).
fn serde_args(attrs: &[syn::Attribute]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = a.parse_nested_meta(|m| {
            let name = m.path.to_token_stream().to_string();
            let value = match m.value() {
                Ok(v) => Some(v.parse::<syn::LitStr>()?.value()),
                Err(_) => None,
            };
            out.push((name, value));
            Ok(())
        });
    }
    out
}

fn has(args: &[(String, Option<String>)], name: &str) -> bool {
    args.iter().any(|(n, _)| n == name)
}

fn arg<'a>(args: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

/// The structs and enums of one source file, by name.
struct Items {
    structs: BTreeMap<String, syn::ItemStruct>,
    enums: BTreeMap<String, syn::ItemEnum>,
    /// The value types of src/values.rs (`checked_string!` newtypes and enums).
    values: BTreeMap<String, String>,
    /// Functions whose body is one literal (`fn yes() -> bool { true }`: serde defaults).
    fns: BTreeMap<String, String>,
}

fn items_of(path: &Path) -> Items {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut it = Items {
        structs: BTreeMap::new(),
        enums: BTreeMap::new(),
        values: BTreeMap::new(),
        fns: BTreeMap::new(),
    };
    for item in file.items {
        match item {
            syn::Item::Struct(s) => {
                it.structs.insert(s.ident.to_string(), s);
            }
            syn::Item::Enum(e) => {
                it.enums.insert(e.ident.to_string(), e);
            }
            syn::Item::Fn(f) => {
                if let [syn::Stmt::Expr(syn::Expr::Lit(l), None)] = f.block.stmts.as_slice() {
                    it.fns
                        .insert(f.sig.ident.to_string(), l.to_token_stream().to_string());
                }
            }
            syn::Item::Macro(m) if m.mac.path.is_ident("checked_string") => {
                // `checked_string!(/// doc … Name, check_fn)`: the doc attributes, then the name.
                let tokens: Vec<proc_macro2::TokenTree> = m.mac.tokens.into_iter().collect();
                let mut doc = Vec::new();
                let mut k = 0;
                while k < tokens.len() {
                    match &tokens[k] {
                        proc_macro2::TokenTree::Punct(p) if p.as_char() == '#' => {
                            if let Some(proc_macro2::TokenTree::Group(g)) = tokens.get(k + 1) {
                                let meta: syn::Meta =
                                    syn::parse2(g.stream()).expect("a doc attribute");
                                doc.push(meta);
                            }
                            k += 2;
                        }
                        proc_macro2::TokenTree::Ident(id) => {
                            it.values.insert(id.to_string(), doc_of_metas(doc.iter()));
                            break;
                        }
                        _ => k += 1,
                    }
                }
            }
            _ => {}
        }
    }
    it
}

/// The last path segment of a type and its generic arguments.
fn segment(ty: &syn::Type) -> Option<(String, Vec<&syn::Type>)> {
    let syn::Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let args = match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((seg.ident.to_string(), args))
}

/// The serde names of an enum's variants, quoted.
fn variants(e: &syn::ItemEnum) -> String {
    let rename_all = serde_args(&e.attrs)
        .into_iter()
        .find(|(n, _)| n == "rename_all")
        .and_then(|(_, v)| v);
    e.variants
        .iter()
        .map(|v| {
            let name = v.ident.to_string();
            let shown = match rename_all.as_deref() {
                Some("lowercase") => name.to_lowercase(),
                Some("kebab-case") => {
                    let mut s = String::new();
                    for (i, c) in name.chars().enumerate() {
                        if c.is_uppercase() && i > 0 {
                            s.push('-');
                        }
                        s.extend(c.to_lowercase());
                    }
                    s
                }
                _ => name,
            };
            format!("`\"{shown}\"`")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a field's type reads in the docs.
fn type_words(ty: &syn::Type, local: &Items, values: &Items) -> String {
    let Some((name, args)) = segment(ty) else {
        return ty.to_token_stream().to_string();
    };
    match (name.as_str(), args.as_slice()) {
        ("String", _) => "string".to_string(),
        ("bool", _) => "bool".to_string(),
        ("u8" | "u16" | "u32" | "u64" | "i32" | "i64" | "usize", _) => "integer".to_string(),
        ("PathBuf", _) => "path".to_string(),
        ("Table", _) => "table".to_string(),
        ("Option", [t]) => type_words(t, local, values),
        ("Vec", [t]) => match segment(t) {
            Some((n, _)) if local.structs.contains_key(&n) => "tables".to_string(),
            _ => format!("list of {}", type_words(t, local, values)),
        },
        ("BTreeMap", [_, t]) => format!("table of {}", type_words(t, local, values)),
        _ if local.structs.contains_key(&name) => "table".to_string(),
        _ if local.enums.contains_key(&name) => variants(&local.enums[&name]),
        _ if values.enums.contains_key(&name) => variants(&values.enums[&name]),
        _ if values.values.contains_key(&name) => {
            format!("[{name}](#value-types)")
        }
        _ => format!("`{}`", ty.to_token_stream().to_string().replace(' ', "")),
    }
}

/// A default value as TOML would write it.
fn toml_words(v: &Value) -> String {
    match v {
        Value::Null => "unset".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("`{s:?}`"),
        Value::Array(a) if a.is_empty() => "`[]`".to_string(),
        Value::Array(a) => {
            let inner: Vec<String> = a
                .iter()
                .map(|x| toml_words(x).trim_matches('`').to_string())
                .collect();
            format!("`[{}]`", inner.join(", "))
        }
        Value::Object(o) if o.is_empty() => "`{}`".to_string(),
        Value::Object(o) => {
            let inner: Vec<String> = o
                .iter()
                .map(|(k, x)| {
                    let bare = k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    let key = if bare { k.clone() } else { format!("{k:?}") };
                    format!("{key} = {}", toml_words(x).trim_matches('`'))
                })
                .collect();
            format!("`{{ {} }}`", inner.join(", "))
        }
    }
}

/// The table of one struct's fields. `defaults`: the serialised default of the struct, when
/// there is one.
fn table(s: &syn::ItemStruct, defaults: Option<&Value>, local: &Items, values: &Items) -> String {
    let struct_default = serde_args(&s.attrs).iter().any(|(n, _)| n == "default");
    let mut out = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    let syn::Fields::Named(fields) = &s.fields else {
        panic!("{}: expected named fields", s.ident);
    };
    for f in &fields.named {
        let args = serde_args(&f.attrs);
        if has(&args, "skip") {
            continue;
        }
        let ident = f.ident.as_ref().expect("a named field").to_string();
        let key = arg(&args, "rename").unwrap_or(&ident).to_string();
        let mut shown = format!("`{key}`");
        for (n, v) in &args {
            if n == "alias"
                && let Some(a) = v
            {
                shown.push_str(&format!(" (alias `{a}`)"));
            }
        }
        let doc = doc_of(&f.attrs);
        let default = match defaults.and_then(|d| d.get(&key)) {
            _ if doc.contains("Required.") => "required".to_string(),
            Some(v) => toml_words(v),
            None if arg(&args, "skip_serializing_if") == Some("super::is_true") => {
                "`true`".to_string()
            }
            None if struct_default || has(&args, "default") => match segment(&f.ty) {
                Some((n, _)) if n == "Option" => "unset".to_string(),
                Some((n, _)) if n == "Vec" => "`[]`".to_string(),
                Some((n, _)) if n == "BTreeMap" => "`{}`".to_string(),
                Some((n, _)) if n == "bool" && arg(&args, "default").is_none() => {
                    "`false`".to_string()
                }
                _ => match arg(&args, "default").and_then(|f| local.fns.get(f)) {
                    Some(value) => format!("`{value}`"),
                    None => "see meaning".to_string(),
                },
            },
            None => "required".to_string(),
        };
        out.push_str(&format!(
            "| {shown} | {} | {default} | {} |\n",
            type_words(&f.ty, local, values),
            doc
        ));
    }
    out
}

/// The struct a field's type holds, when it is one of the file's own (`Vec<User>`, `Job`, …).
fn nested<'a>(ty: &syn::Type, local: &'a Items) -> Option<(&'a syn::ItemStruct, bool)> {
    let (name, args) = segment(ty)?;
    match (name.as_str(), args.as_slice()) {
        ("Vec", [t]) => nested(t, local).map(|(s, _)| (s, true)),
        ("Option", [t]) => nested(t, local),
        _ => local.structs.get(&name).map(|s| (s, false)),
    }
}

/// The generated reference of section `name` whose schema type is `type_name`.
fn section_reference(name: &str, type_name: &str, values: &Items) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = items_of(&root.join(format!("src/sections/{name}.rs")));
    // `hc1img::sections::users::Config`, `core::option::Option<hc1img::sections::swarm::Swarm>`.
    let inner = type_name
        .strip_prefix("core::option::Option<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(type_name);
    let struct_name = inner.rsplit("::").next().expect("a type name");
    let s = local
        .structs
        .get(struct_name)
        .unwrap_or_else(|| panic!("src/sections/{name}.rs has no struct {struct_name}"));
    let all = serde_json::to_value(hc1img::sections::Sections::default()).expect("defaults");
    let defaults = all.get(name).filter(|v| !v.is_null());
    let mut out = format!("<!-- reference:{name}:begin -->\n");
    out.push_str(&table(s, defaults, &local, values));
    let syn::Fields::Named(fields) = &s.fields else {
        unreachable!()
    };
    for f in &fields.named {
        let Some((item, many)) = nested(&f.ty, &local) else {
            continue;
        };
        let args = serde_args(&f.attrs);
        let ident = f.ident.as_ref().expect("named").to_string();
        let key = arg(&args, "rename").unwrap_or(&ident).to_string();
        // The defaults of one item: what an empty item deserialises to.
        let toml = if many {
            format!("[[{name}.{key}]]\n")
        } else {
            format!("[{name}.{key}]\n")
        };
        let item_default = toml::from_str::<hc1img::sections::Sections>(&toml)
            .ok()
            .and_then(|x| serde_json::to_value(x).ok())
            .and_then(|v| v.get(name)?.get(&key).cloned())
            .map(|v| {
                if many {
                    v.get(0).cloned().unwrap_or(Value::Null)
                } else {
                    v
                }
            });
        let heading = if many {
            format!("[[{name}.{key}]]")
        } else {
            format!("[{name}.{key}]")
        };
        out.push_str(&format!("\n`{heading}`:\n\n"));
        out.push_str(&table(item, item_default.as_ref(), &local, values));
    }
    out.push_str(&format!("<!-- reference:{name}:end -->"));
    out
}

/// The value types of src/values.rs.
fn value_types(values: &Items) -> String {
    let mut out = String::from(
        "<!-- reference:value-types:begin -->\n| type | what it accepts |\n|---|---|\n",
    );
    for (name, doc) in &values.values {
        out.push_str(&format!("| {name} | {doc} |\n"));
    }
    out.push_str("<!-- reference:value-types:end -->");
    out
}

/// Replace the block `tag` of `docs` by `block`; false when the markers are missing.
fn replace_block(docs: &mut String, tag: &str, block: &str) -> bool {
    let begin = format!("<!-- reference:{tag}:begin -->");
    let end = format!("<!-- reference:{tag}:end -->");
    let (Some(a), Some(b)) = (docs.find(&begin), docs.find(&end)) else {
        return false;
    };
    docs.replace_range(a..b + end.len(), block);
    true
}

#[test]
fn profiles_md_reference_tables_are_generated_from_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let values = items_of(&root.join("src/values.rs"));
    let committed = std::fs::read_to_string(DOCS).expect("docs/profiles.md");
    let mut docs = committed.clone();
    let mut missing = Vec::new();
    for (name, type_name, _) in hc1img::sections::schema_types() {
        let block = section_reference(name, type_name, &values);
        if !replace_block(&mut docs, name, &block) {
            missing.push(name.to_string());
        }
    }
    if !replace_block(&mut docs, "value-types", &value_types(&values)) {
        missing.push("value-types".to_string());
    }
    assert!(
        missing.is_empty(),
        "docs/profiles.md lacks the <!-- reference:NAME:begin/end --> markers of {missing:?}"
    );
    if docs != committed {
        if std::env::var_os("HC1IMG_BLESS").is_some() {
            std::fs::write(DOCS, &docs).expect("writing docs/profiles.md");
        } else {
            panic!(
                "docs/profiles.md's reference tables are stale: regenerate them with \
                 `HC1IMG_BLESS=1 cargo test --test integration docs_reference` and commit"
            );
        }
    }
}
