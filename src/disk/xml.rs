//! The XML subset a block map ([`super::bmap`]) is written in, read into a small tree:
//! elements with attributes and character data, comments and the XML declaration
//! (XML 1.0, W3C REC-xml-20081126: §2.4 character data, §2.5 comments, §3.1 start-tags,
//! end-tags and empty-element tags, §4.1 character and the five predefined entity
//! references). A document type declaration, CDATA sections or any other entity is refused:
//! neither bmaptool nor hc1img writes them. Nesting is limited to [`MAX_DEPTH`].

/// One element: its name, attributes, character data (entities resolved, whitespace kept)
/// and child elements, with the line its start-tag is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
    pub line: usize,
}

impl Element {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Deepest element nesting read (a block map has 3 levels).
pub const MAX_DEPTH: usize = 16;

/// Parse `src` into its root element; the error names the line.
pub fn parse(src: &str) -> Result<Element, String> {
    let line = |at: usize| src[..at].bytes().filter(|&b| b == b'\n').count() + 1;
    let err = |at: usize, what: &str| format!("line {}: {what}", line(at));
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut pos = 0usize;
    while pos < src.len() {
        let tail = &src[pos..];
        if let Some(t) = tail.strip_prefix("<!--") {
            let end = t
                .find("-->")
                .ok_or_else(|| err(pos, "unterminated comment"))?;
            pos += 4 + end + 3;
        } else if let Some(t) = tail.strip_prefix("<?") {
            let end = t
                .find("?>")
                .ok_or_else(|| err(pos, "unterminated processing instruction"))?;
            pos += 2 + end + 2;
        } else if tail.starts_with("<!") {
            return Err(err(
                pos,
                "a document type declaration or CDATA section (not used in block maps)",
            ));
        } else if let Some(t) = tail.strip_prefix("</") {
            let end = t
                .find('>')
                .ok_or_else(|| err(pos, "unterminated end-tag"))?;
            let name = t[..end].trim_end();
            let Some(el) = stack.pop() else {
                return Err(err(pos, &format!("</{name}> closes no element")));
            };
            if el.name != name {
                return Err(err(
                    pos,
                    &format!("</{name}> closes <{}> (line {})", el.name, el.line),
                ));
            }
            attach(&mut stack, &mut root, el);
            pos += 2 + end + 1;
        } else if tail.starts_with('<') {
            let end = tag_end(tail).ok_or_else(|| err(pos, "unterminated start-tag"))?;
            let (inner, empty) = match tail[1..end].strip_suffix('/') {
                Some(i) => (i, true),
                None => (&tail[1..end], false),
            };
            if root.is_some() {
                return Err(err(pos, "a second root element"));
            }
            if stack.len() >= MAX_DEPTH {
                return Err(err(
                    pos,
                    &format!("elements nested deeper than {MAX_DEPTH}"),
                ));
            }
            let (name, attrs) = start_tag(inner).map_err(|e| err(pos, &e))?;
            let el = Element {
                name,
                attrs,
                text: String::new(),
                children: Vec::new(),
                line: line(pos),
            };
            if empty {
                attach(&mut stack, &mut root, el);
            } else {
                stack.push(el);
            }
            pos += end + 1;
        } else {
            let end = tail.find('<').unwrap_or(tail.len());
            let text = &tail[..end];
            match stack.last_mut() {
                Some(el) => el.text.push_str(&unescape(text).map_err(|e| err(pos, &e))?),
                None if text.trim().is_empty() => {}
                None => return Err(err(pos, "text outside the root element")),
            }
            pos += end;
        }
    }
    if let Some(open) = stack.last() {
        return Err(err(
            src.len(),
            &format!("<{}> (line {}) is never closed", open.name, open.line),
        ));
    }
    root.ok_or_else(|| "no root element".to_string())
}

/// Hang a finished element under its parent, or make it the root.
fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// The index of the `>` that ends the tag `tag` starts with (`>` inside a quoted attribute
/// value does not end it); none when another `<` comes first.
fn tag_end(tag: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in tag.char_indices().skip(1) {
        match (quote, c) {
            (None, '>') => return Some(i),
            (None, '<') => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            _ => {}
        }
    }
    None
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// The name and attributes of a start-tag's inside (`<` and `>` or `/>` removed).
#[allow(clippy::type_complexity)]
fn start_tag(inner: &str) -> Result<(String, Vec<(String, String)>), String> {
    let name_end = inner
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() {
        return Err("a tag without a name".to_string());
    }
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut rest = &inner[name_end..];
    loop {
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            break;
        }
        if trimmed.len() == rest.len() {
            return Err(format!("<{name}>: attributes must be separated by spaces"));
        }
        let n_end = trimmed
            .find(|c: char| !is_name_char(c))
            .unwrap_or(trimmed.len());
        let attr = &trimmed[..n_end];
        let after = trimmed[n_end..].trim_start();
        let Some(after) = after.strip_prefix('=') else {
            return Err(format!("<{name}>: attribute {attr:?} has no value"));
        };
        let after = after.trim_start();
        let Some(q) = after.chars().next().filter(|c| matches!(c, '"' | '\'')) else {
            return Err(format!("<{name}>: the value of {attr:?} is not quoted"));
        };
        let Some(close) = after[1..].find(q) else {
            return Err(format!("<{name}>: the value of {attr:?} is not closed"));
        };
        if attr.is_empty() || attrs.iter().any(|(n, _)| n == attr) {
            return Err(format!("<{name}>: attribute {attr:?} is empty or repeated"));
        }
        attrs.push((attr.to_string(), unescape(&after[1..1 + close])?));
        rest = &after[1 + close + 1..];
    }
    Ok((name.to_string(), attrs))
}

/// Resolve the predefined entities and character references of `s`.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or_else(|| "a `&` that starts no entity reference".to_string())?;
        let entity = &after[..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = entity.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = entity.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_attributes_text_and_comments() {
        let doc = parse(
            "<?xml version=\"1.0\" ?>\n<!-- a > b -->\n<bmap version='2.0'>\n  \
             <Size> 12 &amp; &#x41;&#66; </Size>\n  <Map>\n    <Range a=\"x>y\" b='&quot;'> 1-2 </Range>\n  \
             <Empty/>\n  </Map>\n</bmap>\n",
        )
        .unwrap();
        assert_eq!(doc.name, "bmap");
        assert_eq!(doc.attr("version"), Some("2.0"));
        assert_eq!(doc.child("Size").unwrap().text, " 12 & AB ");
        let map = doc.child("Map").unwrap();
        assert_eq!(map.line, 5);
        let r = map.child("Range").unwrap();
        assert_eq!(r.attr("a"), Some("x>y"));
        assert_eq!(r.attr("b"), Some("\""));
        assert_eq!(r.text.trim(), "1-2");
        assert!(map.child("Empty").unwrap().children.is_empty());
    }

    #[test]
    fn malformed_documents_are_errors_with_a_line() {
        for (doc, want) in [
            ("<a><b></a>", "line 1: </a> closes <b>"),
            ("<a>\n<b>\n</b>", "<a> (line 1) is never closed"),
            ("<a/><b/>", "a second root element"),
            ("x<a/>", "text outside the root element"),
            ("<a>&bogus;</a>", "unknown entity &bogus;"),
            ("<a>AT&T</a>", "starts no entity reference"),
            ("<!DOCTYPE a><a/>", "document type declaration"),
            ("<a x=1/>", "not quoted"),
            ("<a x='1'y='2'/>", "separated by spaces"),
            ("<a x='1' x='2'/>", "repeated"),
            ("<a", "unterminated start-tag"),
            ("<!-- x", "unterminated comment"),
            ("</a>", "closes no element"),
            ("", "no root element"),
        ] {
            let e = parse(doc).unwrap_err();
            assert!(e.contains(want), "{doc:?}: {e}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().contains("nested deeper"));
    }
}
