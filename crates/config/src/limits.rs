//! Limits on what one text may make the parser do: how many documents, how deep they
//! nest, how long one scalar is, how many values they expand to (YAML aliases can repeat
//! a subtree). A text over a limit is refused with an error naming the limit, before the
//! work it would cost is done.
//!
//! Why a scan comes first: serde_norway's loader (its libyaml port,
//! `unsafe-libyaml-norway`) reads a whole document's events before serde_norway's own
//! recursion limit (128) can act, and its scanner walks every open flow level's
//! simple-key slot for each token — so nested flow collections cost time quadratic in
//! their depth (`a: ` and 200,000 `[` took 149 s of a core in a release build). The scan
//! here counts `[`/`{` nesting in one linear pass, outside quoted scalars, comments and
//! block scalars, and refuses a document whose flow nesting passes the limit before the
//! loader sees it. It is a lexical approximation of YAML, exact for JSON and ordinary
//! YAML; the exact depth check is the one made while the values are built
//! ([`bounded_value`]), which also covers block nesting.
//!
//! Owns: the limits, the scan, the bounded value builder. Must not: do I/O.

use std::cell::Cell;

use serde::de::{DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_norway::Value;
use serde_norway::value::{Tag, TaggedValue};

/// What one text may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Documents (empty ones count); `None` for no limit.
    pub max_documents: Option<usize>,
    /// Nesting of collections (flow `[`/`{` and block ones alike).
    pub max_depth: usize,
    /// Bytes of one scalar (a string or a key).
    pub max_scalar_bytes: usize,
    /// Values (scalars and collections) of the whole text, after expanding aliases.
    pub max_values: usize,
}

impl Limits {
    /// For requests (`bowline apply`): 10,000 documents, depth 64, 1 MiB scalars,
    /// 1,000,000 values.
    pub const API: Limits = Limits {
        max_documents: Some(10_000),
        max_depth: 64,
        max_scalar_bytes: 1 << 20,
        max_values: 1_000_000,
    };

    /// For files the operator wrote (watched config, the lab's manifests): as
    /// [`Limits::API`] but any number of documents.
    pub const FILES: Limits = Limits {
        max_documents: None,
        ..Limits::API
    };
}

/// Which limit a text passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Limit {
    /// [`Limits::max_documents`].
    Documents,
    /// [`Limits::max_depth`].
    Depth,
    /// [`Limits::max_scalar_bytes`].
    ScalarBytes,
    /// [`Limits::max_values`].
    Values,
}

/// Where the scan found flow nesting deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    /// 1-based document index.
    pub(crate) document: usize,
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column (in bytes).
    pub(crate) column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Single,
    Double,
    Comment,
}

/// Scans `text` once for `[`/`{` nesting deeper than `limit`; returns where it first is.
pub(crate) fn scan_flow_depth(text: &str, limit: usize) -> Option<TooDeep> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut mode = Mode::Normal;
    let mut document = 1usize;
    let mut document_has_content = false;
    let (mut line, mut line_start) = (1usize, 0usize);
    // Indentation of the line holding a block scalar's header while inside its content.
    let mut block_scalar: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        if i == line_start {
            let rest = &bytes[i..];
            let indent = rest.iter().take_while(|b| **b == b' ').count();
            let blank = rest
                .get(indent)
                .is_none_or(|b| matches!(b, b'\n' | b'\r' | b'#'));
            if let Some(parent) = block_scalar {
                if blank || indent > parent {
                    i = next_line(bytes, i);
                    line += 1;
                    line_start = i;
                    continue;
                }
                block_scalar = None;
            }
            if is_document_marker(rest) {
                // libyaml ends any scalar and collection here (or refuses the text).
                if rest.starts_with(b"---") && document_has_content {
                    document += 1;
                }
                document_has_content = rest.starts_with(b"---");
                depth = 0;
                mode = Mode::Normal;
                i += 3;
                continue;
            }
        }
        let b = bytes[i];
        let previous = (i > line_start).then(|| bytes[i - 1]);
        let token_start = previous.is_none_or(|p| {
            matches!(
                p,
                b' ' | b'\t' | b'[' | b']' | b'{' | b'}' | b',' | b':' | b'\r'
            )
        });
        if b == b'\n' {
            if mode == Mode::Comment {
                mode = Mode::Normal;
            }
            line += 1;
            line_start = i + 1;
            i += 1;
            continue;
        }
        match mode {
            Mode::Comment => {}
            Mode::Single => {
                if b == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        mode = Mode::Normal;
                    }
                }
            }
            Mode::Double => {
                if b == b'\\' {
                    i += 1;
                } else if b == b'"' {
                    mode = Mode::Normal;
                }
            }
            Mode::Normal => {
                if !b.is_ascii_whitespace() {
                    document_has_content = true;
                }
                match b {
                    b'#' if previous.is_none_or(|p| p == b' ' || p == b'\t') => {
                        mode = Mode::Comment;
                    }
                    b'\'' if token_start => mode = Mode::Single,
                    b'"' if token_start => mode = Mode::Double,
                    b'[' | b'{' => {
                        depth += 1;
                        if depth > limit {
                            return Some(TooDeep {
                                document,
                                line,
                                column: i - line_start + 1,
                            });
                        }
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    b'|' | b'>'
                        if depth == 0 && token_start && block_scalar_header(&bytes[i + 1..]) =>
                    {
                        let indent = bytes[line_start..]
                            .iter()
                            .take_while(|b| **b == b' ')
                            .count();
                        block_scalar = Some(indent);
                        i = next_line(bytes, i);
                        line += 1;
                        line_start = i;
                        continue;
                    }
                    _ => {}
                }
            }
        }
        i += 1;
    }
    None
}

/// `---` or `...` at the start of a line, followed by a blank or the end.
fn is_document_marker(rest: &[u8]) -> bool {
    (rest.starts_with(b"---") || rest.starts_with(b"..."))
        && rest
            .get(3)
            .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// After `|` or `>`: indentation/chomping indicators, then a blank, a comment or the end
/// of the line.
fn block_scalar_header(rest: &[u8]) -> bool {
    let indicators = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-'))
        .count();
    rest.get(indicators)
        .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'#'))
}

/// The index just after the next line break (or the end).
fn next_line(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |p| from + p + 1)
}

/// What one text has used of its limits, shared by its documents.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    values: Cell<usize>,
    /// The limit that stopped the build, if one did.
    pub(crate) tripped: Cell<Option<Limit>>,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            values: Cell::new(0),
            tripped: Cell::new(None),
        }
    }

    fn refuse<E: serde::de::Error>(&self, limit: Limit, message: String) -> E {
        self.tripped.set(Some(limit));
        E::custom(message)
    }

    fn count<E: serde::de::Error>(&self) -> Result<(), E> {
        let values = self.values.get() + 1;
        self.values.set(values);
        if values > self.limits.max_values {
            return Err(self.refuse(
                Limit::Values,
                format!(
                    "more than {} values (counting what YAML aliases repeat); the limit is {} per text",
                    self.limits.max_values, self.limits.max_values
                ),
            ));
        }
        Ok(())
    }

    fn string<E: serde::de::Error>(&self, s: &str) -> Result<Value, E> {
        self.count()?;
        if s.len() > self.limits.max_scalar_bytes {
            return Err(self.refuse(
                Limit::ScalarBytes,
                format!(
                    "a scalar of {} bytes; the limit is {} bytes",
                    s.len(),
                    self.limits.max_scalar_bytes
                ),
            ));
        }
        Ok(Value::String(s.to_owned()))
    }
}

/// Builds one document's value within `budget`: like `serde_norway::Value`'s own
/// deserialization, but refusing as soon as a limit is passed.
pub(crate) fn bounded_value<'de, D: serde::Deserializer<'de>>(
    document: D,
    budget: &Budget,
) -> Result<Value, D::Error> {
    Bounded { depth: 0, budget }.deserialize(document)
}

/// One value at `depth` (the number of collections around it).
#[derive(Clone, Copy)]
struct Bounded<'b> {
    depth: usize,
    budget: &'b Budget,
}

impl Bounded<'_> {
    /// The seed for what a collection at this level holds.
    fn inside<E: serde::de::Error>(self) -> Result<Self, E> {
        self.budget.count()?;
        let depth = self.depth + 1;
        let max = self.budget.limits.max_depth;
        if depth > max {
            return Err(self.budget.refuse(
                Limit::Depth,
                format!("nested deeper than {max} levels; the limit is {max}"),
            ));
        }
        Ok(Self { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.string(v)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.budget.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inside()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inside()?;
        let mut mapping = serde_norway::Mapping::new();
        while let Some(key) = map.next_key_seed(inner)? {
            if mapping.contains_key(&key) {
                let shown = match &key {
                    Value::String(s) => format!("with key {s:?}"),
                    Value::Number(n) => format!("with key {n}"),
                    Value::Bool(b) => format!("with key `{b}`"),
                    Value::Null => "with null key".to_owned(),
                    _ => "in YAML map".to_owned(),
                };
                return Err(serde::de::Error::custom(format!("duplicate entry {shown}")));
            }
            let value = map.next_value_seed(inner)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // A `!tag value`.
        let (tag, value) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(serde::de::Error::custom("an empty YAML tag"));
        }
        let value = value.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_counts_flow_nesting_and_ignores_brackets_in_strings_and_comments() {
        assert_eq!(scan_flow_depth(&"[".repeat(64), 64), None);
        let deep = scan_flow_depth(&format!("a: {}", "[".repeat(65)), 64).unwrap();
        assert_eq!((deep.document, deep.line, deep.column), (1, 1, 68));
        let text = format!(
            "a: \"{open}\"\nb: '{open}'\n# {open}\nc: x[0]\nd: |\n  {open}\ne: [{{f: [1]}}]\n",
            open = "[".repeat(100)
        );
        assert_eq!(scan_flow_depth(&text, 64), None, "{text}");
        let second = format!("a: 1\n---\nb: {}\n", "{".repeat(70));
        assert_eq!(scan_flow_depth(&second, 64).unwrap().document, 2);
        // Quotes escaped inside quoted scalars do not end them.
        let escaped = format!(
            "a: 'it''s {o}'\nb: \"say \\\"{o}\\\"\"\n",
            o = "[".repeat(80)
        );
        assert_eq!(scan_flow_depth(&escaped, 64), None);
        // JSON with brackets in strings.
        let json = format!(
            "{{\"a\": \"{}\", \"b\": [[1], {{\"c\": \"]]]]\"}}]}}",
            "[".repeat(80)
        );
        assert_eq!(scan_flow_depth(&json, 64), None);
        // A closing bracket in a string does not hide real nesting.
        let hidden = format!("{}\"]]]]]]]]]]\"{}", "[".repeat(60), "[".repeat(10));
        assert!(scan_flow_depth(&hidden, 64).is_some());
    }
}
