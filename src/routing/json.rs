//! Reading a few fields out of an event's JSON without building a tree.
//!
//! An event body is forwarded byte for byte, so Herald only needs its type, id,
//! time and tenant. [`Document::parse`] validates the whole body once and
//! keeps the top-level members as borrowed slices; [`Document::pointer`] then
//! follows an RFC 6901 pointer, parsing only the members on its path. No
//! `serde_json::Value` tree is allocated per event.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A validated JSON document whose top-level members can be looked up.
pub struct Document<'a> {
    root: &'a RawValue,
    /// Top-level members, when the root is an object.
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Document<'a> {
    /// Validates `text` as JSON and indexes its top level.
    pub fn parse(text: &'a [u8]) -> Result<Document<'a>, serde_json::Error> {
        let root: &'a RawValue = serde_json::from_slice(text)?;
        let members = if root.get().starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(root.get());
            de.deserialize_map(Members)?
        } else {
            Vec::new()
        };
        Ok(Document { root, members })
    }

    /// The value at `pointer` (`""` is the whole document), or `None` when the
    /// path does not exist.
    pub fn pointer(&self, pointer: &str) -> Option<&'a RawValue> {
        if pointer.is_empty() {
            return Some(self.root);
        }
        let mut tokens = pointer.strip_prefix('/')?.split('/').map(unescape);
        let first = tokens.next()?;
        let mut current = if self.members.is_empty() {
            child(self.root, &first)?
        } else {
            self.members.iter().find(|(k, _)| *k == first).map(|(_, v)| *v)?
        };
        for token in tokens {
            current = child(current, &token)?;
        }
        Some(current)
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
    let mut de = serde_json::Deserializer::from_str(parent.get());
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
        let wanted: Option<usize> = self.token.parse().ok();
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
