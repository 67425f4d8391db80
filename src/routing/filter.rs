//! Payload filters: which of the events a webhook subscribes to it receives,
//! by values in their body.
//!
//! A webhook's `filter` maps RFC 6901 JSON pointers into the event body to
//! conditions on the value there:
//!
//! ```json
//! {"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}
//! ```
//!
//! Every condition must hold (every operator of every pointer). A filter is
//! checked as it is read, from the API or from Redis: a [`Filter`] exists
//! only valid, so reading one is compiling it. The routing index keeps the
//! compiled filter of each webhook that has one, and [`Filter::matches`]
//! follows its pointers, split once, through the event's
//! [`Document`], which reads only the members on their paths: no JSON tree
//! is built per event, and a webhook without a filter costs nothing.
//!
//! Semantics (docs/subscriptions.md#payload-filters says the same for
//! writers):
//! - `=` and `!=` compare with a string, number, boolean or `null`; `in`
//!   and `not_in` with a list of them. Numbers compare by value (`100` equals
//!   `100.0` and `1e2`), strings exactly (after JSON unescaping), and values
//!   of different types are never equal. An object or an array in the event
//!   equals no operand.
//! - `>`, `>=`, `<` and `<=` compare numbers by value, or strings by their
//!   Unicode code points (RFC 3339 times written alike, e.g. all in UTC with
//!   `Z`, compare in time order). A value of another type than the operand
//!   does not match.
//! - A pointer with nothing at it (a missing member, an index past the end
//!   of an array, a path through a string) fails every operator except
//!   `exists: false`, `!=` and `not_in`, as MongoDB's `$ne` and `$nin`, and
//!   filters in its style (Hookdeck's), treat a missing field. `null` is a
//!   value: `{"=": null}` needs the member present and `null`.
//! - A body that is not a JSON document matches no filter.
//!
//! A mismatch is never an error: the event is simply not a delivery of
//! that webhook.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Number;

use crate::routing::json::{self, Document};

/// Most pointers in one filter.
pub const MAX_POINTERS: usize = 20;
/// Most values in one `in` or `not_in` list.
pub const MAX_VALUES: usize = 64;
/// Longest pointer, in bytes.
pub const MAX_POINTER_LEN: usize = 256;
/// Longest string operand, in bytes.
pub const MAX_STRING_LEN: usize = 1024;

/// Every operator, as written.
pub const OPERATORS: [&str; 9] = ["=", "!=", "in", "not_in", ">", ">=", "<", "<=", "exists"];

/// A webhook's payload filter, valid by construction (see the module's
/// docs for what each operator means).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// In the order written.
    conditions: Vec<Condition>,
}

/// The conditions on the value at one pointer.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    /// As written (escaped), for writing the filter back.
    pointer: String,
    /// Its reference tokens, unescaped.
    tokens: Box<[String]>,
    /// In the order written.
    tests: Vec<Test>,
}

/// One operator and its operand.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(Scalar),
    Ne(Scalar),
    In(Vec<Scalar>),
    NotIn(Vec<Scalar>),
    Compare(Operator, Scalar),
    Exists(bool),
}

/// An operand: a JSON value that is not an object or an array.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
}

/// An operator of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
}

impl Operator {
    fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "=" => Operator::Eq,
            "!=" => Operator::Ne,
            "in" => Operator::In,
            "not_in" => Operator::NotIn,
            ">" => Operator::Gt,
            ">=" => Operator::Ge,
            "<" => Operator::Lt,
            "<=" => Operator::Le,
            "exists" => Operator::Exists,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Exists => "exists",
        }
    }
}

impl Test {
    fn operator(&self) -> Operator {
        match self {
            Test::Eq(_) => Operator::Eq,
            Test::Ne(_) => Operator::Ne,
            Test::In(_) => Operator::In,
            Test::NotIn(_) => Operator::NotIn,
            Test::Compare(op, _) => *op,
            Test::Exists(_) => Operator::Exists,
        }
    }

    /// Whether the value found (`None`: nothing at the pointer) passes.
    fn holds(&self, value: Option<&RawValue>) -> bool {
        match (self, value) {
            (Test::Exists(wanted), found) => *wanted == found.is_some(),
            (Test::Ne(_) | Test::NotIn(_), None) => true,
            (_, None) => false,
            (Test::Eq(s), Some(v)) => s.equals(v),
            (Test::Ne(s), Some(v)) => !s.equals(v),
            (Test::In(list), Some(v)) => list.iter().any(|s| s.equals(v)),
            (Test::NotIn(list), Some(v)) => !list.iter().any(|s| s.equals(v)),
            (Test::Compare(op, s), Some(v)) => match s.order_of(v) {
                None => false,
                Some(ord) => match op {
                    Operator::Gt => ord == Ordering::Greater,
                    Operator::Ge => ord != Ordering::Less,
                    Operator::Lt => ord == Ordering::Less,
                    Operator::Le => ord != Ordering::Greater,
                    _ => false,
                },
            },
        }
    }
}

/// The number a JSON value holds, when it is one.
fn number(value: &RawValue) -> Option<Number> {
    match value.get().as_bytes().first()? {
        b'-' | b'0'..=b'9' => serde_json::from_str(value.get()).ok(),
        _ => None,
    }
}

/// Numbers by value: exactly when both are integers, else as 64-bit floats.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    let integer = |n: &Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

impl Scalar {
    /// Whether the event's `value` is this operand.
    fn equals(&self, value: &RawValue) -> bool {
        let text = value.get();
        match self {
            Scalar::Null => text == "null",
            Scalar::Bool(b) => text == if *b { "true" } else { "false" },
            Scalar::Number(n) => number(value).and_then(|v| compare_numbers(&v, n)) == Some(Ordering::Equal),
            Scalar::String(s) => json::str_value(value).is_some_and(|v| v == s.as_str()),
        }
    }

    /// How the event's `value` orders against this operand, when both are
    /// numbers or both strings.
    fn order_of(&self, value: &RawValue) -> Option<Ordering> {
        match self {
            Scalar::Number(n) => compare_numbers(&number(value)?, n),
            Scalar::String(s) => Some((*json::str_value(value)?).cmp(s.as_str())),
            Scalar::Null | Scalar::Bool(_) => None,
        }
    }
}

impl Filter {
    /// Whether the event whose body is `payload` passes every condition.
    pub fn matches(&self, payload: &Payload<'_>) -> bool {
        let Some(doc) = payload.document() else {
            return false;
        };
        self.conditions.iter().all(|c| {
            let value = doc.follow(c.tokens.iter());
            c.tests.iter().all(|t| t.holds(value))
        })
    }

    /// Reads a filter written as JSON text (the portal's field), naming
    /// where it is invalid as the API does: `filter./amount.>`.
    pub fn parse_named(text: &str) -> Result<Filter, FilterError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let filter = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let unreadable = e.inner().is_syntax() || e.inner().is_eof();
            let field = if path == "." || unreadable {
                "filter".to_owned()
            } else {
                format!("filter.{path}")
            };
            let message = e.inner().to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            let message = if unreadable {
                format!("is not valid JSON: {message}")
            } else {
                message
            };
            FilterError { field, message }
        })?;
        de.end().map_err(|e| FilterError {
            field: "filter".into(),
            message: format!("is not valid JSON: {e}"),
        })?;
        Ok(filter)
    }

    /// How many pointers it tests.
    pub fn len(&self) -> usize {
        self.conditions.len()
    }

    /// Whether it tests none (never: a filter names at least one pointer).
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// Where a filter is invalid (`filter./amount.>`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

/// An event body, parsed into a [`Document`] once at most: the envelope
/// rules' parse when they read the body, else on the first filter that
/// asks for it. A webhook without a filter never does.
pub struct Payload<'a> {
    text: &'a [u8],
    document: OnceCell<Option<Document<'a>>>,
}

impl<'a> Payload<'a> {
    /// The body `text`, with the document already parsed from it, if any.
    pub fn new(text: &'a [u8], parsed: Option<Document<'a>>) -> Payload<'a> {
        let document = OnceCell::new();
        if let Some(parsed) = parsed {
            let _ = document.set(Some(parsed));
        }
        Payload { text, document }
    }

    /// The body as a document; `None` when it is not JSON Herald reads.
    pub fn document(&self) -> Option<&Document<'a>> {
        self.document.get_or_init(|| Document::parse(self.text).ok()).as_ref()
    }
}

// ---- writing -----------------------------------------------------------

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Null => s.serialize_unit(),
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Number(n) => n.serialize(s),
            Scalar::String(t) => s.serialize_str(t),
        }
    }
}

/// The operators of one condition, as an object.
struct Tests<'t>(&'t [Test]);

impl Serialize for Tests<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for test in self.0 {
            let op = test.operator().as_str();
            match test {
                Test::Eq(v) | Test::Ne(v) | Test::Compare(_, v) => map.serialize_entry(op, v)?,
                Test::In(list) | Test::NotIn(list) => map.serialize_entry(op, list)?,
                Test::Exists(b) => map.serialize_entry(op, b)?,
            }
        }
        map.end()
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.conditions.len()))?;
        for c in &self.conditions {
            map.serialize_entry(&c.pointer, &Tests(&c.tests))?;
        }
        map.end()
    }
}

// ---- reading (and checking) ---------------------------------------------

/// What an operand of each kind must be.
const SCALAR: &str = "expects a string, number, boolean or null";
const ORDERED: &str = "expects a number or a string";

/// The unescaped reference tokens of `pointer`, or why it is not one.
pub fn pointer_tokens(pointer: &str) -> Result<Box<[String]>, String> {
    if pointer.len() > MAX_POINTER_LEN {
        return Err(format!("is longer than {MAX_POINTER_LEN} bytes"));
    }
    if pointer.is_empty() {
        return Ok(Box::new([]));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("is not a JSON pointer (RFC 6901): it must begin with `/`, as in `/data/plan`".into());
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => out.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(
                            "is not a JSON pointer (RFC 6901): `~` must be followed by `0` (for `~`) or `1` (for `/`)"
                                .to_owned(),
                        ),
                    },
                }
            }
            Ok(out)
        })
        .collect()
}

/// A pointer of the filter being read: valid, new, and within the bound.
struct PointerKey<'c> {
    read: &'c [Condition],
}

impl<'de> DeserializeSeed<'de> for PointerKey<'_> {
    type Value = (String, Box<[String]>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let pointer = String::deserialize(d)?;
        if self.read.iter().any(|c| c.pointer == pointer) {
            return Err(de::Error::custom("is given twice"));
        }
        if self.read.len() == MAX_POINTERS {
            return Err(de::Error::custom(format!(
                "is one pointer too many: a filter tests at most {MAX_POINTERS}"
            )));
        }
        let tokens = pointer_tokens(&pointer).map_err(de::Error::custom)?;
        Ok((pointer, tokens))
    }
}

/// An operator of the condition being read: known, and new.
struct OperatorKey<'t> {
    read: &'t [Test],
}

impl<'de> DeserializeSeed<'de> for OperatorKey<'_> {
    type Value = Operator;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Operator, D::Error> {
        let name = String::deserialize(d)?;
        let op = Operator::parse(&name)
            .ok_or_else(|| de::Error::custom(format!("is not an operator: use one of {}", OPERATORS.join(" "))))?;
        if self.read.iter().any(|t| t.operator() == op) {
            return Err(de::Error::custom("is given twice"));
        }
        Ok(op)
    }
}

/// A scalar operand; `what` says what the operator expects when it is not.
struct ScalarSeed {
    what: &'static str,
    ordered: bool,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl ScalarSeed {
    fn unordered<E: de::Error>(&self, scalar: Scalar) -> Result<Scalar, E> {
        if self.ordered {
            Err(E::custom(self.what))
        } else {
            Ok(scalar)
        }
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what.trim_start_matches("expects "))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        self.unordered(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        self.unordered(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        self.unordered(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Number::from_f64(v)
            .map(Scalar::Number)
            .ok_or_else(|| E::custom("expects a finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        if v.len() > MAX_STRING_LEN {
            return Err(E::custom(format!("is longer than {MAX_STRING_LEN} bytes")));
        }
        Ok(Scalar::String(v.to_owned()))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
        Err(de::Error::custom(self.what))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
        Err(de::Error::custom(self.what))
    }
}

/// The list of `in` or `not_in`.
struct ListSeed;

const LIST: &str = "expects a list of 1 to 64 strings, numbers, booleans or nulls";

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<Scalar>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Scalar>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<Scalar>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(LIST.trim_start_matches("expects "))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Scalar>, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element_seed(ScalarSeed {
            what: SCALAR,
            ordered: false,
        })? {
            if list.len() == MAX_VALUES {
                return Err(de::Error::custom(format!("lists more than {MAX_VALUES} values")));
            }
            list.push(v);
        }
        if list.is_empty() {
            return Err(de::Error::custom("is empty: list at least one value"));
        }
        Ok(list)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Vec<Scalar>, A::Error> {
        Err(de::Error::custom(LIST))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<Scalar>, E> {
        Err(E::custom(LIST))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<Scalar>, E> {
        Err(E::custom(LIST))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<Scalar>, E> {
        Err(E::custom(LIST))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<Scalar>, E> {
        Err(E::custom(LIST))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<Scalar>, E> {
        Err(E::custom(LIST))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<Scalar>, E> {
        Err(E::custom(LIST))
    }
}

/// `exists`' operand.
struct BoolSeed;

impl<'de> DeserializeSeed<'de> for BoolSeed {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(b),
            _ => Err(de::Error::custom("expects true or false")),
        }
    }
}

/// The operators of one pointer.
struct TestsSeed;

const CONDITIONS: &str = "an object of operators (=, !=, in, not_in, >, >=, <, <=, exists) to their operands";

impl<'de> DeserializeSeed<'de> for TestsSeed {
    type Value = Vec<Test>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Test>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TestsSeed {
    type Value = Vec<Test>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(CONDITIONS)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Test>, A::Error> {
        let mut tests: Vec<Test> = Vec::new();
        while let Some(op) = map.next_key_seed(OperatorKey { read: &tests })? {
            let scalar = |ordered| ScalarSeed {
                what: if ordered { ORDERED } else { SCALAR },
                ordered,
            };
            let test = match op {
                Operator::Eq => Test::Eq(map.next_value_seed(scalar(false))?),
                Operator::Ne => Test::Ne(map.next_value_seed(scalar(false))?),
                Operator::In => Test::In(map.next_value_seed(ListSeed)?),
                Operator::NotIn => Test::NotIn(map.next_value_seed(ListSeed)?),
                Operator::Gt | Operator::Ge | Operator::Lt | Operator::Le => {
                    Test::Compare(op, map.next_value_seed(scalar(true))?)
                }
                Operator::Exists => Test::Exists(map.next_value_seed(BoolSeed)?),
            };
            tests.push(test);
        }
        if tests.is_empty() {
            return Err(de::Error::custom(format!(
                "has no operator: give at least one of {}",
                OPERATORS.join(" ")
            )));
        }
        Ok(tests)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
        d.deserialize_map(FilterVisitor)
    }
}

struct FilterVisitor;

impl<'de> Visitor<'de> for FilterVisitor {
    type Value = Filter;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of JSON pointers to their conditions")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Filter, A::Error> {
        let mut conditions: Vec<Condition> = Vec::new();
        while let Some((pointer, tokens)) = map.next_key_seed(PointerKey { read: &conditions })? {
            let tests = map.next_value_seed(TestsSeed)?;
            conditions.push(Condition { pointer, tokens, tests });
        }
        if conditions.is_empty() {
            return Err(de::Error::custom(
                "has no condition: name at least one JSON pointer (or give null for no filter)",
            ));
        }
        Ok(Filter { conditions })
    }
}

impl utoipa::PartialSchema for Filter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let scalar = || {
            OneOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(MAX_STRING_LEN)),
                )
                .item(ObjectBuilder::new().schema_type(Type::Number))
                .item(ObjectBuilder::new().schema_type(Type::Boolean))
                .item(ObjectBuilder::new().schema_type(Type::Null))
        };
        let ordered = || {
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::Number))
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(MAX_STRING_LEN)),
                )
        };
        let list = || {
            ArrayBuilder::new()
                .items(scalar())
                .min_items(Some(1))
                .max_items(Some(MAX_VALUES))
        };
        let conditions = ObjectBuilder::new()
            .property("=", scalar().description(Some("Equals (numbers by value).")))
            .property("!=", scalar().description(Some("Differs from, or is absent.")))
            .property("in", list().description(Some("Equals one of these.")))
            .property(
                "not_in",
                list().description(Some("Equals none of these, or is absent.")),
            )
            .property(">", ordered())
            .property(">=", ordered())
            .property("<", ordered())
            .property("<=", ordered())
            .property(
                "exists",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("Whether anything is at the pointer.")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .min_properties(Some(1));
        ObjectBuilder::new()
            .description(Some(
                "Payload filter: RFC 6901 JSON pointers into the event body (up to 20, each up to 256 bytes), \
                 each to its conditions; an event is delivered only when all hold. `>`, `>=`, `<`, `<=` compare \
                 numbers, or strings by code point; a value of another type, or nothing at the pointer, does \
                 not match (except `!=`, `not_in` and `exists: false`, which a missing value passes). \
                 `null` (or absent) for none. See docs/subscriptions.md#payload-filters.",
            ))
            .additional_properties(Some(conditions))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^(/([^~]|~[01])*)?$"))
                    .max_length(Some(MAX_POINTER_LEN)),
            ))
            .min_properties(Some(1))
            .max_properties(Some(MAX_POINTERS))
            .into()
    }
}

impl utoipa::ToSchema for Filter {}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Filter {
        Filter::parse_named(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn matches(f: &str, body: &str) -> bool {
        filter(f).matches(&Payload::new(body.as_bytes(), None))
    }

    fn refused(json: &str) -> (String, String) {
        match Filter::parse_named(json) {
            Ok(f) => panic!("{json} was accepted: {f:?}"),
            Err(e) => (e.field, e.message),
        }
    }

    #[test]
    fn equality_compares_json_values() {
        let body = r#"{"amount":100,"price":9.5,"plan":"pro","on":true,"none":null,"big":18446744073709551615}"#;
        for (f, expected) in [
            (r#"{"/amount": {"=": 100}}"#, true),
            (r#"{"/amount": {"=": 100.0}}"#, true),
            (r#"{"/amount": {"=": 1e2}}"#, true),
            (r#"{"/amount": {"=": 101}}"#, false),
            (r#"{"/amount": {"=": "100"}}"#, false),
            (r#"{"/price": {"=": 9.5}}"#, true),
            (r#"{"/plan": {"=": "pro"}}"#, true),
            (r#"{"/plan": {"=": "Pro"}}"#, false),
            (r#"{"/on": {"=": true}}"#, true),
            (r#"{"/on": {"=": "true"}}"#, false),
            (r#"{"/none": {"=": null}}"#, true),
            (r#"{"/plan": {"=": null}}"#, false),
            (r#"{"/big": {"=": 18446744073709551615}}"#, true),
            (r#"{"/big": {"=": 18446744073709551614}}"#, false),
            (r#"{"/plan": {"!=": "team"}}"#, true),
            (r#"{"/plan": {"!=": "pro"}}"#, false),
            (r#"{"/amount": {"!=": 100.0}}"#, false),
            (r#"{"/plan": {"in": ["pro", "team"]}}"#, true),
            (r#"{"/plan": {"in": ["free", 1, null]}}"#, false),
            (r#"{"/amount": {"in": ["100", 100.0]}}"#, true),
            (r#"{"/plan": {"not_in": ["free", "trial"]}}"#, true),
            (r#"{"/plan": {"not_in": ["pro"]}}"#, false),
        ] {
            assert_eq!(matches(f, body), expected, "{f}");
        }
    }

    #[test]
    fn escaped_strings_in_the_event_compare_unescaped() {
        assert!(matches(r#"{"/plan": {"=": "pro"}}"#, r#"{"plan":"\u0070ro"}"#));
        assert!(matches(r#"{"/q": {"=": "a\"b"}}"#, r#"{"q":"a\"b"}"#));
    }

    #[test]
    fn ordering_applies_to_numbers_and_strings_of_the_same_type() {
        let body = r#"{"amount":100,"at":"2025-03-01T10:00:00Z","plan":"pro","on":true,"n":-2.5}"#;
        for (f, expected) in [
            (r#"{"/amount": {">": 99}}"#, true),
            (r#"{"/amount": {">": 100}}"#, false),
            (r#"{"/amount": {">=": 100.0}}"#, true),
            (r#"{"/amount": {"<": 100.5}}"#, true),
            (r#"{"/amount": {"<=": 99.99}}"#, false),
            (r#"{"/amount": {">": 50, "<": 150}}"#, true),
            (r#"{"/amount": {">": 50, "<": 60}}"#, false),
            (r#"{"/n": {"<": -2}}"#, true),
            (r#"{"/at": {">=": "2025-01-01T00:00:00Z"}}"#, true),
            (r#"{"/at": {"<": "2025-01-01T00:00:00Z"}}"#, false),
            (r#"{"/plan": {">": "free"}}"#, true),
            // A type mismatch does not match, whichever way round.
            (r#"{"/amount": {">": "1"}}"#, false),
            (r#"{"/plan": {"<": 5}}"#, false),
            (r#"{"/on": {">": 0}}"#, false),
        ] {
            assert_eq!(matches(f, body), expected, "{f}");
        }
    }

    #[test]
    fn a_missing_value_fails_all_but_not_equal_not_in_and_exists_false() {
        let body = r#"{"data":{"plan":"pro"},"none":null}"#;
        for (f, expected) in [
            (r#"{"/amount": {"=": 1}}"#, false),
            (r#"{"/amount": {"=": null}}"#, false),
            (r#"{"/amount": {"in": [1, null]}}"#, false),
            (r#"{"/amount": {">": 0}}"#, false),
            (r#"{"/amount": {"<=": 0}}"#, false),
            (r#"{"/amount": {"exists": true}}"#, false),
            (r#"{"/amount": {"!=": 1}}"#, true),
            (r#"{"/amount": {"not_in": [1]}}"#, true),
            (r#"{"/amount": {"exists": false}}"#, true),
            (r#"{"/none": {"exists": true}}"#, true),
            (r#"{"/none": {"exists": false}}"#, false),
            (r#"{"/data/plan": {"exists": true}}"#, true),
            // Through a string, past the end of an array: nothing there.
            (r#"{"/data/plan/x": {"exists": false}}"#, true),
            (r#"{"/data/plan/0": {"exists": false}}"#, true),
        ] {
            assert_eq!(matches(f, body), expected, "{f}");
        }
    }

    #[test]
    fn nested_pointers_with_escapes_and_array_indices() {
        let body = r#"{"data":{"a/b":{"m~n":7},"items":[{"sku":"x"},{"sku":"y"}],"tags":["vip"]}}"#;
        for (f, expected) in [
            (r#"{"/data/a~1b/m~0n": {"=": 7}}"#, true),
            (r#"{"/data/a~1b/m~0n": {"=": 8}}"#, false),
            (r#"{"/data/items/1/sku": {"=": "y"}}"#, true),
            (r#"{"/data/items/0/sku": {"=": "y"}}"#, false),
            (r#"{"/data/items/2/sku": {"exists": false}}"#, true),
            (r#"{"/data/items/01/sku": {"exists": false}}"#, true),
            (r#"{"/data/tags/0": {"in": ["vip", "gold"]}}"#, true),
            // An object or an array equals no operand, and differs from each.
            (r#"{"/data/items": {"=": "x"}}"#, false),
            (r#"{"/data/items": {"!=": "x"}}"#, true),
            (r#"{"/data/items": {">": 1}}"#, false),
        ] {
            assert_eq!(matches(f, body), expected, "{f}");
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let f = r#"{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}"#;
        assert!(matches(f, r#"{"data":{"plan":"team"},"amount":150}"#));
        assert!(!matches(f, r#"{"data":{"plan":"team"},"amount":100}"#));
        assert!(!matches(f, r#"{"data":{"plan":"free"},"amount":150}"#));
        assert!(!matches(f, r#"{"amount":150}"#));
    }

    #[test]
    fn a_body_that_is_not_a_json_document_matches_no_filter() {
        assert!(!matches(r#"{"/a": {"exists": false}}"#, "not json"));
        assert!(!matches(r#"{"/a": {"!=": 1}}"#, r#"{"a":1,"a":2}"#));
        assert!(matches(r#"{"/0": {"=": 1}}"#, "[1]"));
    }

    #[test]
    fn the_parsed_document_is_reused() {
        let body = br#"{"a":1}"#;
        let payload = Payload::new(body, Some(Document::parse(body).unwrap()));
        assert!(filter(r#"{"/a": {"=": 1}}"#).matches(&payload));
        let unparsed = Payload::new(body, None);
        assert!(unparsed.document.get().is_none(), "parsed only when asked");
        assert!(filter(r#"{"/a": {"=": 1}}"#).matches(&unparsed));
        assert!(unparsed.document.get().is_some());
    }

    #[test]
    fn a_filter_writes_back_as_it_was_written() {
        let text = r#"{"/data/plan":{"in":["pro","team"]},"/amount":{">":100,"<=":1000.5},"/a~1b":{"=":null,"exists":true,"!=":false,"not_in":[1,"x"]},"/t":{">=":"2025"}}"#;
        let f = filter(text);
        assert_eq!(serde_json::to_string(&f).unwrap(), text);
        assert_eq!(filter(&serde_json::to_string(&f).unwrap()), f);
        assert_eq!(f.len(), 4);
        // 100.0 stays a float as written.
        assert_eq!(
            serde_json::to_string(&filter(r#"{"/a":{"=":100.0}}"#)).unwrap(),
            r#"{"/a":{"=":100.0}}"#
        );
    }

    #[test]
    fn invalid_filters_are_refused_naming_the_field() {
        let field = |json: &str| refused(json).0;
        assert_eq!(
            refused(r#"{"/amount": {">": true}}"#),
            ("filter./amount.>".into(), "expects a number or a string".into())
        );
        assert_eq!(field(r#"{"/amount": {">": null}}"#), "filter./amount.>");
        assert_eq!(field(r#"{"/amount": {"<=": [1]}}"#), "filter./amount.<=");
        assert_eq!(field(r#"{"/amount": {"=": {"a": 1}}}"#), "filter./amount.=");
        assert_eq!(field(r#"{"/amount": {"!=": [1]}}"#), "filter./amount.!=");
        assert_eq!(field(r#"{"/plan": {"in": "pro"}}"#), "filter./plan.in");
        assert_eq!(field(r#"{"/plan": {"in": []}}"#), "filter./plan.in");
        assert_eq!(field(r#"{"/plan": {"not_in": [1, [2]]}}"#), "filter./plan.not_in[1]");
        assert_eq!(
            refused(r#"{"/plan": {"exists": "yes"}}"#),
            ("filter./plan.exists".into(), "expects true or false".into())
        );
        let (f, m) = refused(r#"{"/plan": {"~": 1}}"#);
        assert_eq!(f, "filter./plan.~");
        assert!(m.starts_with("is not an operator"), "{m}");
        assert_eq!(field(r#"{"/plan": {"=": 1, "=": 2}}"#), "filter./plan.=");
        assert_eq!(refused(r#"{"/plan": {}}"#).0, "filter./plan");
        assert_eq!(field(r#"{"plan": {"=": 1}}"#), "filter.plan");
        assert_eq!(field(r#"{"/a~2": {"=": 1}}"#), "filter./a~2");
        assert_eq!(field(r#"{"/a~": {"=": 1}}"#), "filter./a~");
        assert_eq!(field(r#"{"/a": {"=": 1}, "/a": {"=": 2}}"#), "filter./a");
        assert_eq!(field(r#"{}"#), "filter");
        assert_eq!(field(r#"[]"#), "filter");
        assert_eq!(field(r#""/a""#), "filter");
        assert_eq!(field(r#"{"/a": 1}"#), "filter./a");
        assert_eq!(field(r#"{"/a": {"=": 1}"#), "filter");
        let long = format!("/{}", "a".repeat(MAX_POINTER_LEN));
        assert_eq!(field(&format!(r#"{{"{long}": {{"=": 1}}}}"#)), format!("filter.{long}"));
        let string = "s".repeat(MAX_STRING_LEN + 1);
        assert_eq!(field(&format!(r#"{{"/a": {{"=": "{string}"}}}}"#)), "filter./a.=");
        let values = (0..=MAX_VALUES).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(field(&format!(r#"{{"/a": {{"in": [{values}]}}}}"#)), "filter./a.in");
        let pointers = |n: usize| {
            let all: Vec<String> = (0..n).map(|i| format!(r#""/p{i}": {{"exists": true}}"#)).collect();
            format!("{{{}}}", all.join(","))
        };
        assert_eq!(filter(&pointers(MAX_POINTERS)).len(), MAX_POINTERS);
        assert_eq!(field(&pointers(MAX_POINTERS + 1)), format!("filter./p{MAX_POINTERS}"));
    }
}
