//! Tiny text templates for generated files and overlay files marked as templates.
//!
//! `{name}` is replaced by the variable `name` (names are letters, digits, `_`, `-`, `.`, so
//! `{swarm.manager}` works); `{{` and `}}` stand for literal braces; `${…}` (a shell or U-Boot
//! variable, as in `boot.txt`) is copied through untouched. An unknown variable, an unclosed
//! `{` or a lone `}` is an error naming the line, so a typo never ships silently. This is the
//! one template syntax of hc1img: overlay files, generated files and the board's `boot_txt`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

enum Piece<'a> {
    Text(String),
    Var(&'a str, usize),
}

/// Split `template` into literal text and placeholders (with their line numbers).
fn parse(template: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut line = 1;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        // `${name}` (shell, U-Boot) passes through; `${{` is `$` and an escaped brace.
        if rest.starts_with("${")
            && !rest.starts_with("${{")
            && let Some(end) = rest.find('}')
        {
            text.push_str(&rest[..=end]);
            rest = &rest[end + 1..];
        } else if let Some(r) = rest.strip_prefix("{{") {
            text.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            text.push('}');
            rest = r;
        } else if c == '{' {
            let body = &rest[1..];
            let len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
            if len == 0 || !body[len..].starts_with('}') {
                bail!(
                    "template line {line}: `{{` must start a placeholder like {{name}} \
                     (write `{{{{` for a literal brace)"
                );
            }
            pieces.push(Piece::Text(std::mem::take(&mut text)));
            pieces.push(Piece::Var(&body[..len], line));
            rest = &body[len + 1..];
        } else if c == '}' {
            bail!("template line {line}: lone `}}` (write `}}}}` for a literal brace)");
        } else {
            if c == '\n' {
                line += 1;
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

/// Render `template` with `vars`.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let known: Vec<&str> = vars.keys().map(String::as_str).collect();
    render_with(template, &|name| vars.get(name).cloned(), &known)
}

/// Render `template`, asking `lookup` for each placeholder; `known` names the variables in
/// the error for an unknown one.
pub fn render_with(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    known: &[&str],
) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    for p in parse(template)? {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var(name, line) => match lookup(name) {
                Some(v) => out.push_str(&v),
                None => bail!(
                    "template line {line}: unknown variable {{{name}}} (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            },
        }
    }
    Ok(out)
}

/// The placeholder names `template` uses, in order of first use (for checking a template
/// whose variables are only known later, e.g. a hostname rendered at first boot).
pub fn placeholders(template: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for p in parse(template)? {
        if let Piece::Var(n, _) = p
            && !names.iter().any(|x| x == n)
        {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_and_uboot_variables_pass_through() {
        let vars = BTreeMap::from([("bootargs".to_string(), "root=/dev/sda1".to_string())]);
        let out = render(
            "setenv bootargs \"{bootargs} ${extra}\"\nload ${devtype} ${devnum}\n",
            &vars,
        );
        assert_eq!(
            out.ok().as_deref(),
            Some("setenv bootargs \"root=/dev/sda1 ${extra}\"\nload ${devtype} ${devnum}\n")
        );
        assert!(render("{nope} ${ok}", &vars).is_err());
    }

    fn vars() -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert("name".to_string(), "hc1-a".to_string());
        v.insert("swarm.manager".to_string(), "10.0.0.1".to_string());
        v
    }

    #[test]
    fn renders_placeholders_and_escapes() {
        assert_eq!(
            render("host {name} joins {swarm.manager}:2377 {{x}} }}{{", &vars()).unwrap(),
            "host hc1-a joins 10.0.0.1:2377 {x} }{"
        );
        assert_eq!(render("", &vars()).unwrap(), "");
        assert_eq!(render("ünï {name}", &vars()).unwrap(), "ünï hc1-a");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = render("a\n{nope}", &vars()).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("{nope}"), "{e}");
        assert!(e.contains("swarm.manager"), "{e}");
        assert!(render("{name", &vars()).is_err());
        assert!(render("{}", &vars()).is_err());
        assert!(render("{a b}", &vars()).is_err());
        let e = render("x } y", &vars()).unwrap_err().to_string();
        assert!(e.contains("lone"), "{e}");
    }

    #[test]
    fn lists_placeholders() {
        assert_eq!(
            placeholders("hc1-{mac6}-{n}{{x}}").unwrap(),
            vec!["mac6".to_string(), "n".to_string()]
        );
        assert!(placeholders("{").is_err());
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_renders_back_to_itself(s in "\\PC*|[${}a]{0,12}") {
            let escaped = s.replace('{', "{{").replace('}', "}}");
            proptest::prop_assert_eq!(render(&escaped, &BTreeMap::new()).unwrap(), s);
        }

        #[test]
        fn render_succeeds_exactly_when_every_placeholder_is_known(s in "[a-z{}. \\n]{0,40}") {
            let v = vars();
            match placeholders(&s) {
                Ok(names) => proptest::prop_assert_eq!(
                    render(&s, &v).is_ok(),
                    names.iter().all(|n| v.contains_key(n))
                ),
                Err(_) => proptest::prop_assert!(render(&s, &v).is_err()),
            }
        }
    }
}
