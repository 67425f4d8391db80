//! Reading a few fields out of an event's JSON without building a tree.
//!
//! An event body is forwarded byte for byte, so Herald only needs its type, id,
//! time and tenant. [`Document::parse`] validates the whole body once and
//! keeps the top-level members as borrowed slices; [`Document::pointer`] then
//! follows an RFC 6901 pointer, parsing only the members on its path. No
//! `serde_json::Value` tree is allocated per event.
//!
//! A document in which any object has a key twice is refused
//! ([`ParseError::DuplicateKey`]): parsers disagree on which occurrence
//! counts (Herald's would take the first, JavaScript's, Python's and Go's
//! take the last), so Herald could route such an event by a type or tenant
//! other than the one its receivers read. Every object is checked, not only
//! those on the configured pointers, so the rule does not depend on the
//! envelope configuration: a document Herald accepts reads the same
//! whichever occurrence a parser would keep.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Why a body is not a document Herald can read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all.
    #[error(transparent)]
    Invalid(#[from] serde_json::Error),
    /// JSON in which an object has a key more than once.
    #[error(transparent)]
    DuplicateKey(#[from] DuplicateKey),
}

/// A repeated key (the first the walk finds): where, and which. The key is
/// named (cut to [`MAX_KEY_SHOWN`] characters), never a value, which may be
/// a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key `{key}` appears more than once in {}", at_text(.at))]
pub struct DuplicateKey {
    /// RFC 6901 pointer to the object (`""`: the top level).
    pub at: String,
    pub key: String,
}

fn at_text(at: &str) -> String {
    if at.is_empty() {
        "the top-level object".to_owned()
    } else {
        format!("the object at `{at}`")
    }
}

/// Longest key (and pointer segment) a [`DuplicateKey`] shows.
pub const MAX_KEY_SHOWN: usize = 64;

/// A validated JSON document whose top-level members can be looked up.
pub struct Document<'a> {
    /// The whole document, valid JSON.
    text: &'a [u8],
    /// Top-level members, when the root is an object.
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Document<'a> {
    /// Validates `text` as JSON in which no object has a key twice, and
    /// indexes its top level.
    ///
    /// Two passes: one walks every value, which validates the document and
    /// finds repeated keys; one skips over the top-level values to index them.
    pub fn parse(text: &'a [u8]) -> Result<Document<'a>, ParseError> {
        unique_keys(text)?;
        let members = if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let mut de = serde_json::Deserializer::from_slice(text);
            de.deserialize_map(Members)?
        } else {
            Vec::new()
        };
        Ok(Document { text, members })
    }

    /// The value at `pointer` (`""` is the whole document), or `None` when the
    /// path does not exist.
    pub fn pointer(&self, pointer: &str) -> Option<&'a RawValue> {
        if pointer.is_empty() {
            return self.follow(std::iter::empty::<&str>());
        }
        self.follow(pointer.strip_prefix('/')?.split('/').map(unescape))
    }

    /// The value at the pointer whose reference tokens, already unescaped,
    /// are `tokens` (none: the whole document), or `None` when the path does
    /// not exist. A payload filter splits its pointers once, when the
    /// webhook is indexed, and follows them with this for every event.
    pub fn follow<T: AsRef<str>>(&self, tokens: impl IntoIterator<Item = T>) -> Option<&'a RawValue> {
        let mut tokens = tokens.into_iter();
        let Some(first) = tokens.next() else {
            return serde_json::from_slice(self.text).ok();
        };
        let first = first.as_ref();
        let mut current = if self.members.is_empty() {
            child_of(self.text, first)?
        } else {
            self.members.iter().find(|(k, _)| *k == first).map(|(_, v)| *v)?
        };
        for token in tokens {
            current = child(current, token.as_ref())?;
        }
        Some(current)
    }
}

/// The string a JSON value holds, borrowed from the document unless it has
/// escapes; `None` when it is not a string.
pub fn str_value(value: &RawValue) -> Option<Cow<'_, str>> {
    let text = value.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// The array index an RFC 6901 reference token names: `0`, or digits not
/// beginning with `0` (so `01`, `+1` and `-` name no element).
fn array_index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Checks that `text` is one JSON value in which no object has a key twice.
fn unique_keys(text: &[u8]) -> Result<(), ParseError> {
    let mut scratch = Scratch::default();
    let mut de = serde_json::Deserializer::from_slice(text);
    let walked = Unique { scratch: &mut scratch }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match walked {
        Ok(()) => Ok(()),
        Err(e) => match scratch.duplicate {
            Some(mut found) => {
                // The walk stopped at the repeat: a document that is not
                // JSON further on is reported as such.
                serde_json::from_slice::<IgnoredAny>(text)?;
                found.path.reverse();
                let at: String = found.path.iter().map(|segment| format!("/{segment}")).collect();
                Err(DuplicateKey { at, key: found.key }.into())
            }
            None => Err(e.into()),
        },
    }
}

/// State shared by the whole walk of [`unique_keys`].
#[derive(Default)]
struct Scratch<'de> {
    /// The keys of the objects being walked, outermost first: each object
    /// pushes its own above its parent's and removes them when done, so the
    /// walk allocates nothing per object once this has grown.
    keys: Vec<Cow<'de, str>>,
    duplicate: Option<Found>,
}

/// A repeated key, and the pointer segments to its object, innermost first
/// (added as the walk unwinds).
struct Found {
    key: String,
    path: Vec<String>,
}

/// Objects up to this many keys are checked by comparing each key with the
/// earlier ones; larger ones by sorting their keys once they are all read,
/// so a huge object costs O(n log n), not O(n²).
const LINEAR_KEYS: usize = 16;

/// Walks one value, failing at the first object with a key twice.
struct Unique<'s, 'de> {
    scratch: &'s mut Scratch<'de>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Unique<'_, '_> {
    /// Records `key` as repeated in the object being walked.
    fn repeated<E: de::Error>(&mut self, key: &str) -> E {
        self.scratch.duplicate = Some(Found {
            key: shown(key),
            path: Vec::new(),
        });
        E::custom("duplicate key")
    }

    /// Notes, as the walk unwinds past it, the segment leading to a repeated key.
    fn unwinding<E>(&mut self, result: Result<(), E>, segment: impl FnOnce() -> String) -> Result<(), E> {
        if result.is_err() {
            if let Some(found) = &mut self.scratch.duplicate {
                found.path.push(segment());
            }
        }
        result
    }
}

/// A key or pointer segment as a [`DuplicateKey`] shows it: escaped as RFC
/// 6901 asks, and cut short.
fn shown(key: &str) -> String {
    let cut: String = key.chars().take(MAX_KEY_SHOWN).collect();
    let cut = if cut.len() < key.len() { cut + "…" } else { cut };
    cut.replace('~', "~0").replace('/', "~1")
}

impl<'de> Visitor<'de> for Unique<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.scratch.keys.len();
        while let Some(key) = map.next_key_seed(Key)? {
            let read = &self.scratch.keys[start..];
            if read.len() < LINEAR_KEYS && read.contains(&key) {
                return Err(self.repeated(&key));
            }
            self.scratch.keys.push(key.clone());
            let value = map.next_value_seed(Unique {
                scratch: &mut *self.scratch,
            });
            self.unwinding(value, || shown(&key))?;
        }
        let keys = &mut self.scratch.keys[start..];
        if keys.len() > LINEAR_KEYS {
            keys.sort_unstable();
            if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
                let key = pair[0].clone();
                return Err(self.repeated(&key));
            }
        }
        self.scratch.keys.truncate(start);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let element = seq.next_element_seed(Unique {
                scratch: &mut *self.scratch,
            });
            match element {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => return self.unwinding(Err(e), || index.to_string()),
            }
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A JSON scalar rendered as text: strings unquoted, numbers and booleans as
/// written. Objects, arrays and null give `None`.
pub fn scalar_text(value: &RawValue) -> Option<String> {
    let text = value.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'{' | b'[' | b'n' => None,
        _ => Some(text.to_owned()),
    }
}

/// The string a JSON value holds, or `None` when it is not a string.
pub fn string(value: &RawValue) -> Option<String> {
    if value.get().starts_with('"') {
        serde_json::from_str::<String>(value.get()).ok()
    } else {
        None
    }
}

fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

fn child<'a>(parent: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    child_of(parent.get().as_bytes(), token)
}

/// [`child`] of a value given as its text.
fn child_of<'a>(parent: &'a [u8], token: &str) -> Option<&'a RawValue> {
    let mut de = serde_json::Deserializer::from_slice(parent);
    de.deserialize_any(Child { token }).ok().flatten()
}

/// Collects the members of an object, borrowing keys where they have no escapes.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key_seed(Key)? {
            members.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(members)
    }
}

/// Finds one member of an object or element of an array.
struct Child<'t> {
    token: &'t str,
}

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key_seed(Key)? {
            if found.is_none() && key == self.token {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = array_index(self.token);
        let mut found = None;
        let mut index = 0usize;
        loop {
            if Some(index) == wanted {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the input unless it contains escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IAM: &str = r#"{"event_time":"2025-01-01T00:00:00Z","event_type":"USER_CREATED",
        "current_context":{"tenant":{"id":"t-1"},"roles":["a","b"]},"data":{"x\"y":1}}"#;

    #[test]
    fn follows_pointers_through_objects_and_arrays() {
        let doc = Document::parse(IAM.as_bytes()).unwrap();
        assert_eq!(string(doc.pointer("/event_type").unwrap()).unwrap(), "USER_CREATED");
        assert_eq!(
            string(doc.pointer("/current_context/tenant/id").unwrap()).unwrap(),
            "t-1"
        );
        assert_eq!(string(doc.pointer("/current_context/roles/1").unwrap()).unwrap(), "b");
        assert_eq!(doc.pointer("/data/x\"y").unwrap().get(), "1");
        assert!(doc.pointer("/current_context/roles/2").is_none());
        assert!(doc.pointer("/missing").is_none());
        assert!(doc.pointer("/event_type/deeper").is_none());
        assert!(doc.pointer("no-slash").is_none());
    }

    #[test]
    fn array_indices_are_read_as_rfc_6901_writes_them() {
        let doc = Document::parse(br#"{"a":["x","y"],"o":{"01":"key"}}"#).unwrap();
        assert_eq!(string(doc.pointer("/a/0").unwrap()).unwrap(), "x");
        assert_eq!(string(doc.pointer("/a/1").unwrap()).unwrap(), "y");
        for not_an_index in ["/a/01", "/a/+1", "/a/-", "/a/", "/a/1.0"] {
            assert!(doc.pointer(not_an_index).is_none(), "{not_an_index}");
        }
        assert_eq!(string(doc.pointer("/o/01").unwrap()).unwrap(), "key");
        assert_eq!(doc.follow(["a", "1"]).unwrap().get(), r#""y""#);
        assert_eq!(
            doc.follow(Vec::<String>::new()).unwrap().get(),
            r#"{"a":["x","y"],"o":{"01":"key"}}"#
        );
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let doc = Document::parse(br#"{"plain":"pro","escaped":"t\u0065am","n":1}"#).unwrap();
        assert!(matches!(
            str_value(doc.pointer("/plain").unwrap()),
            Some(Cow::Borrowed("pro"))
        ));
        assert_eq!(str_value(doc.pointer("/escaped").unwrap()).unwrap(), "team");
        assert!(str_value(doc.pointer("/n").unwrap()).is_none());
    }

    #[test]
    fn unescapes_tokens() {
        let doc = Document::parse(br#"{"a/b":{"m~n":"ok"}}"#).unwrap();
        assert_eq!(string(doc.pointer("/a~1b/m~0n").unwrap()).unwrap(), "ok");
    }

    #[test]
    fn escaped_keys_and_values_are_decoded() {
        let doc = Document::parse(br#"{"ev\u0065nt":"tour.\u0063ompleted"}"#).unwrap();
        assert_eq!(string(doc.pointer("/event").unwrap()).unwrap(), "tour.completed");
    }

    #[test]
    fn rejects_invalid_json_anywhere_in_the_document() {
        assert!(Document::parse(b"{\"event\":\"x\",").is_err());
        assert!(Document::parse(b"{\"event\":\"x\", \"deep\": {\"a\": [1,,2]}}").is_err());
        assert!(Document::parse(b"not json").is_err());
        assert!(Document::parse(b"{\"a\":1} trailing").is_err());
    }

    fn duplicate(text: &str) -> DuplicateKey {
        match Document::parse(text.as_bytes()) {
            Err(ParseError::DuplicateKey(d)) => d,
            Err(other) => panic!("{text}: {other}"),
            Ok(_) => panic!("{text} was accepted"),
        }
    }

    #[test]
    fn a_key_twice_in_any_object_is_refused_and_located() {
        let top = duplicate(r#"{"type":"a","type":"b"}"#);
        assert_eq!((top.at.as_str(), top.key.as_str()), ("", "type"));
        assert_eq!(
            top.to_string(),
            "the key `type` appears more than once in the top-level object"
        );
        // Equal once unescaped.
        assert_eq!(duplicate(r#"{"type":"a","t\u0079pe":"b"}"#).key, "type");
        let nested = duplicate(r#"{"a":1,"ctx":{"tenant":{"id":"x","id":"y"}}}"#);
        assert_eq!(nested.at, "/ctx/tenant");
        let in_array = duplicate(r#"{"data":[{"k":1},{"k":1,"k":2}]}"#);
        assert_eq!(in_array.at, "/data/1");
        // Not on any pointer Herald reads: refused all the same.
        assert_eq!(duplicate(r#"{"event":"a","data":{"x":1,"x":1}}"#).at, "/data");
        let odd = duplicate(r#"{"a/b~":{"k":1,"k":2}}"#);
        assert_eq!(odd.at, "/a~1b~0");
        let long = "k".repeat(1000);
        let shown = duplicate(&format!(r#"{{"{long}":1,"{long}":2}}"#)).key;
        assert_eq!(shown.chars().count(), MAX_KEY_SHOWN + 1, "cut, and marked as cut");
    }

    #[test]
    fn large_objects_are_checked_too() {
        let keys = |n: usize| (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect::<Vec<_>>().join(",");
        let distinct = format!("{{{}}}", keys(5000));
        assert!(Document::parse(distinct.as_bytes()).is_ok());
        for at in [LINEAR_KEYS - 1, LINEAR_KEYS, LINEAR_KEYS + 1, 4999] {
            let repeated = format!(r#"{{{},"k{at}":0}}"#, keys(5000));
            assert_eq!(duplicate(&repeated).key, format!("k{at}"));
        }
        // The same key in sibling and nested objects is not a repeat.
        let siblings = r#"{"a":{"id":1,"x":{"id":2}},"b":{"id":3},"id":4}"#;
        let doc = Document::parse(siblings.as_bytes()).unwrap();
        assert_eq!(scalar_text(doc.pointer("/b/id").unwrap()).as_deref(), Some("3"));
    }

    #[test]
    fn invalid_json_is_not_reported_as_a_duplicate() {
        assert!(matches!(
            Document::parse(br#"{"a":1,"a":"#),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn scalars_render_as_text() {
        let doc = Document::parse(br#"{"t":1740133769000,"s":"x","o":{},"n":null,"b":true}"#).unwrap();
        assert_eq!(scalar_text(doc.pointer("/t").unwrap()).unwrap(), "1740133769000");
        assert_eq!(scalar_text(doc.pointer("/s").unwrap()).unwrap(), "x");
        assert_eq!(scalar_text(doc.pointer("/b").unwrap()).unwrap(), "true");
        assert!(scalar_text(doc.pointer("/o").unwrap()).is_none());
        assert!(scalar_text(doc.pointer("/n").unwrap()).is_none());
        assert!(string(doc.pointer("/t").unwrap()).is_none());
    }

    #[test]
    fn non_object_roots_support_pointers() {
        let doc = Document::parse(br#"[{"type":"a"}]"#).unwrap();
        assert_eq!(string(doc.pointer("/0/type").unwrap()).unwrap(), "a");
    }
}
