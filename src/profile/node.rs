//! A TOML document kept with the file and byte span of every key and value, and a serde
//! `Deserializer` over such a tree (after the `extends` merge of [`super::layers`]) whose
//! errors name the file, the line and the dotted key path they come from.
//!
//! The syntax is TOML 1.0/1.1 as parsed by the `toml` crate ([`toml::de::DeTable`] keeps
//! spans); this module only adds provenance, so an error in a merged profile still points at
//! the file that wrote the offending value.

use crate::values::did_you_mean;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// One source text the tree's nodes point into.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// 1-based line number of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let bytes = &self.text.as_bytes()[..end];
        bytes.iter().filter(|&&b| b == b'\n').count() + 1
    }
}

/// All files read while loading one profile; nodes refer to them by index.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sources {
    pub files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: &Path, text: String) -> usize {
        self.files.push(SourceFile {
            path: path.to_path_buf(),
            text,
        });
        self.files.len() - 1
    }

    /// `FILE:LINE` for a location.
    pub fn where_(&self, loc: Loc) -> String {
        match self.files.get(loc.file) {
            Some(f) => format!("{}:{}", f.path.display(), f.line_of(loc.offset)),
            None => "<unknown>".to_string(),
        }
    }
}

/// A place in one of the [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: usize,
    pub offset: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub loc: Loc,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(BTreeMap<String, Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key_loc: Loc,
    pub value: Node,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a datetime",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }

    pub fn table(&self) -> Option<&BTreeMap<String, Entry>> {
        match &self.kind {
            Kind::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn table_mut(&mut self) -> Option<&mut BTreeMap<String, Entry>> {
        match &mut self.kind {
            Kind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// The entry at a key path (table keys only).
    pub fn entry(&self, path: &[&str]) -> Option<&Entry> {
        let (first, rest) = path.split_first()?;
        let e = self.table()?.get(*first)?;
        if rest.is_empty() {
            Some(e)
        } else {
            e.value.entry(rest)
        }
    }

    /// Location of the value at a key path, or of the deepest existing table on it.
    pub fn loc_of(&self, path: &[&str]) -> Loc {
        let mut node = self;
        for k in path {
            match node.table().and_then(|t| t.get(*k)) {
                Some(e) => node = &e.value,
                None => break,
            }
        }
        node.loc
    }
}

/// Parse one TOML file into a [`Node`] tree tagged with `file`.
pub(crate) fn parse(sources: &Sources, file: usize) -> anyhow::Result<Node> {
    let src = sources
        .files
        .get(file)
        .ok_or_else(|| anyhow::anyhow!("internal: no source file #{file}"))?;
    match toml::de::DeTable::parse(&src.text) {
        Ok(doc) => {
            let span = doc.span();
            let table = convert_table(doc.get_ref(), file, sources)?;
            Ok(Node {
                loc: Loc {
                    file,
                    offset: span.start,
                },
                kind: Kind::Table(table),
            })
        }
        Err(e) => {
            let line = e.span().map(|s| src.line_of(s.start)).unwrap_or(1);
            let msg = e.message().trim().replace('\n', " ");
            anyhow::bail!(
                "{}:{}: invalid TOML: {}",
                src.path.display(),
                line,
                msg.trim_end_matches('.')
            )
        }
    }
}

fn loc(file: usize, span: Range<usize>) -> Loc {
    Loc {
        file,
        offset: span.start,
    }
}

fn convert_table(
    t: &toml::de::DeTable<'_>,
    file: usize,
    sources: &Sources,
) -> anyhow::Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    for (k, v) in t.iter() {
        let value = convert_value(v, file, sources)?;
        out.insert(
            k.get_ref().to_string(),
            Entry {
                key_loc: loc(file, k.span()),
                value,
            },
        );
    }
    Ok(out)
}

fn convert_value(
    v: &toml::Spanned<toml::de::DeValue<'_>>,
    file: usize,
    sources: &Sources,
) -> anyhow::Result<Node> {
    use toml::de::DeValue;
    let l = loc(file, v.span());
    let bad = |what: &str| {
        anyhow::anyhow!(
            "{}: {what} out of range",
            sources.where_(l) // file:line
        )
    };
    let kind = match v.get_ref() {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            Kind::Int(i64::from_str_radix(&digits, i.radix()).map_err(|_| bad("integer"))?)
        }
        DeValue::Float(f) => {
            let s: String = f.as_str().chars().filter(|c| *c != '_').collect();
            let s = s.trim_start_matches('+');
            let x = match s {
                "nan" | "-nan" => f64::NAN,
                _ => s.parse::<f64>().map_err(|_| bad("float"))?,
            };
            Kind::Float(x)
        }
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Datetime(d.to_string()),
        DeValue::Array(a) => {
            let mut items = Vec::new();
            for item in a.iter() {
                items.push(convert_value(item, file, sources)?);
            }
            Kind::Array(items)
        }
        DeValue::Table(t) => Kind::Table(convert_table(t, file, sources)?),
    };
    Ok(Node { loc: l, kind })
}

/// An error met while deserialising a [`Node`] tree; rendered by [`DeError::render`].
#[derive(Debug)]
pub(crate) struct DeError {
    msg: String,
    /// Outer keys first.
    path: Vec<String>,
    loc: Option<Loc>,
    /// Set when the error is about a key itself (unknown key), not a value.
    unknown_key: Option<(String, Vec<&'static str>)>,
}

impl DeError {
    fn at(mut self, l: Loc) -> Self {
        if self.loc.is_none() {
            self.loc = Some(l);
        }
        self
    }

    fn under(mut self, seg: String) -> Self {
        self.path.insert(0, seg);
        self
    }

    /// One line: `FILE:LINE: path: message` (or the unknown-key form).
    pub fn render(&self, sources: &Sources, fallback: Loc) -> String {
        let where_ = sources.where_(self.loc.unwrap_or(fallback));
        let path = join_path(&self.path);
        if let Some((key, expected)) = &self.unknown_key {
            let section = if path.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{path}]")
            };
            let hint = match did_you_mean(key, expected) {
                Some(s) => format!("; did you mean `{s}`?"),
                None if expected.is_empty() => String::new(),
                None => format!(
                    " (known keys: {})",
                    expected
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return format!("{where_}: unknown key `{key}` {section}{hint}");
        }
        if path.is_empty() {
            format!("{where_}: {}", self.msg)
        } else {
            format!("{where_}: {path}: {}", self.msg)
        }
    }
}

/// Render a key path as dotted TOML, quoting keys that are not bare.
pub(crate) fn join_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.starts_with('[') {
            out.push_str(seg);
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        let bare = !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if bare {
            out.push_str(seg);
        } else {
            out.push_str(&format!("{seg:?}"));
        }
    }
    out
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: msg.to_string(),
            path: Vec::new(),
            loc: None,
            unknown_key: None,
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format_args!("unknown key `{field}`"));
        e.unknown_key = Some((field.to_string(), expected.to_vec()));
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let list = expected
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        let hint = did_you_mean(variant, expected)
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        Self::custom(format_args!("expected {list}, found \"{variant}\"{hint}"))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("missing required key `{field}`"))
    }
}

/// Deserialise a typed value from a node; the error is already rendered as one line.
pub(crate) fn from_node<T: de::DeserializeOwned>(
    node: &Node,
    sources: &Sources,
) -> Result<T, String> {
    T::deserialize(NodeDe { node }).map_err(|e| e.render(sources, node.loc))
}

struct NodeDe<'a> {
    node: &'a Node,
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Int(i) => visitor.visit_i64(*i),
            Kind::Float(x) => visitor.visit_f64(*x),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Datetime(s) => visitor.visit_str(s),
            Kind::Array(items) => visitor.visit_seq(Seq {
                iter: items.iter().enumerate(),
            }),
            Kind::Table(t) => visitor.visit_map(Map {
                iter: t.iter(),
                pending: None,
            }),
        };
        r.map_err(|e| e.at(self.node.loc))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Str(s) => {
                let d: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(d)
            }
            _ => {
                let list = variants
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(" or ");
                Err(de::Error::custom(format_args!(
                    "expected {list}, found {}",
                    self.node.type_name()
                )))
            }
        };
        r.map_err(|e| e.at(self.node.loc))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Table(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::custom(format_args!(
                "expected a table, found {}",
                self.node.type_name()
            )))
            .map_err(|e: DeError| e.at(self.node.loc)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

struct Seq<'a> {
    iter: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> SeqAccess<'de> for Seq<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((i, node)) => seed
                .deserialize(NodeDe { node })
                .map(Some)
                .map_err(|e| e.under(format!("[{i}]"))),
        }
    }
}

struct Map<'a> {
    iter: std::collections::btree_map::Iter<'a, String, Entry>,
    pending: Option<(&'a String, &'a Entry)>,
}

impl<'de> MapAccess<'de> for Map<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((k, e)) => {
                self.pending = Some((k, e));
                let d: de::value::StrDeserializer<'_, DeError> = k.as_str().into_deserializer();
                seed.deserialize(d)
                    .map(Some)
                    .map_err(|err| err.at(e.key_loc))
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.pending.take() {
            Some((k, e)) => seed
                .deserialize(NodeDe { node: &e.value })
                .map_err(|err| err.under(k.clone())),
            None => Err(de::Error::custom("internal: value asked before key")),
        }
    }
}
