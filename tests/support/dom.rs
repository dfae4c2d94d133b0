//! Reading the DOM that headless Chromium prints with `--dump-dom`: start
//! tags with their attributes, end tags and text, so tests can find rows by
//! attribute and read what an element shows.
//!
//! This is not an HTML parser. It reads what the DOM serializer writes,
//! which is regular: attribute values always in double quotes with `&`, `"`,
//! `<`, `>` escaped; text with `&`, `<`, `>` escaped; `script` and `style`
//! contents raw. So outside those two, a `<` always starts a tag, and a tag
//! in the output is an element in the DOM.

/// A start tag.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub attrs: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Token {
    Start(Tag),
    End(String),
    Text(String),
}

/// A dumped document, as a flat list of tokens.
#[derive(Debug)]
pub struct Dom {
    tokens: Vec<Token>,
}

/// One element of a `Dom`.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    dom: &'a Dom,
    index: usize,
    pub tag: &'a Tag,
}

impl Dom {
    pub fn parse(html: &str) -> Dom {
        let mut tokens = Vec::new();
        let mut rest = html;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                tokens.push(Token::Text(decode(rest)));
                break;
            };
            if lt > 0 {
                tokens.push(Token::Text(decode(&rest[..lt])));
            }
            rest = &rest[lt..];
            if let Some(comment) = rest.strip_prefix("<!--") {
                rest = comment.split_once("-->").map_or("", |(_, after)| after);
            } else if rest.starts_with("<!") {
                rest = rest.split_once('>').map_or("", |(_, after)| after);
            } else if let Some(end) = rest.strip_prefix("</") {
                let (name, after) = end.split_once('>').unwrap_or((end, ""));
                tokens.push(Token::End(name.trim().to_ascii_lowercase()));
                rest = after;
            } else {
                let (tag, after) = start_tag(&rest[1..]);
                rest = after;
                if tag.name == "script" || tag.name == "style" {
                    // Raw text up to the end tag: not markup, not shown.
                    let close = format!("</{}", tag.name);
                    rest = rest.find(&close).map_or("", |at| &rest[at..]);
                }
                tokens.push(Token::Start(tag));
            }
        }
        Dom { tokens }
    }

    /// Every element with this tag name, in document order.
    pub fn elements(&self, name: &str) -> Vec<Element<'_>> {
        self.tokens
            .iter()
            .enumerate()
            .filter_map(|(index, t)| match t {
                Token::Start(tag) if tag.name == name => Some(Element {
                    dom: self,
                    index,
                    tag,
                }),
                _ => None,
            })
            .collect()
    }

    /// Elements with this tag name and class, in document order.
    pub fn select(&self, name: &str, class: &str) -> Vec<Element<'_>> {
        let mut found = self.elements(name);
        found.retain(|e| e.has_class(class));
        found
    }

    /// The element with this `id`.
    pub fn by_id(&self, id: &str) -> Option<Element<'_>> {
        self.tokens
            .iter()
            .enumerate()
            .find_map(|(index, t)| match t {
                Token::Start(tag) if tag.attrs.iter().any(|(n, v)| n == "id" && v == id) => {
                    Some(Element {
                        dom: self,
                        index,
                        tag,
                    })
                }
                _ => None,
            })
    }
}

impl<'a> Element<'a> {
    pub fn attr(&self, name: &str) -> Option<&'a str> {
        let tag: &'a Tag = self.tag;
        tag.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.attr("class")
            .is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }

    /// The element's text, as `Dom::text` writes it.
    pub fn text(&self) -> String {
        collapse(self.dom.tokens[self.inside()].iter())
    }

    /// Descendants with this tag name and class, in document order.
    pub fn select(&self, name: &str, class: &str) -> Vec<Element<'a>> {
        let inside = self.inside();
        let mut found = self.dom.select(name, class);
        found.retain(|e| inside.contains(&e.index));
        found
    }

    /// Token indexes between this element's start tag and its end tag.
    fn inside(&self) -> std::ops::Range<usize> {
        let start = self.index + 1;
        let mut depth = 0usize;
        for (i, t) in self.dom.tokens.iter().enumerate().skip(start) {
            match t {
                Token::Start(tag) if tag.name == self.tag.name => depth += 1,
                Token::End(name) if *name == self.tag.name => {
                    if depth == 0 {
                        return start..i;
                    }
                    depth -= 1;
                }
                _ => {}
            }
        }
        start..self.dom.tokens.len()
    }
}

fn collapse<'t>(tokens: impl Iterator<Item = &'t Token>) -> String {
    let mut all = String::new();
    for t in tokens {
        match t {
            Token::Text(text) => all.push_str(text),
            _ => all.push(' '),
        }
    }
    all.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a start tag from just after its `<`; returns it and what follows.
fn start_tag(s: &str) -> (Tag, &str) {
    let name_end = s
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .unwrap_or(s.len());
    let name = s[..name_end].to_ascii_lowercase();
    let mut rest = &s[name_end..];
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix('>') {
            rest = after;
            break;
        }
        let attr_end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let attr = rest[..attr_end].to_ascii_lowercase();
        rest = &rest[attr_end..];
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix("=\"") {
            let (raw, after) = after.split_once('"').unwrap_or((after, ""));
            value = decode(raw);
            rest = after;
        } else if let Some(after) = rest.strip_prefix('=') {
            let end = after
                .find(|c: char| c.is_ascii_whitespace() || c == '>')
                .unwrap_or(after.len());
            value = decode(&after[..end]);
            rest = &after[end..];
        }
        attrs.push((attr, value));
    }
    (Tag { name, attrs }, rest)
}

/// Undoes the serializer's escaping (`&amp;` `&lt;` `&gt;` `&quot;` `&nbsp;`).
pub fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}
