//! Routing conditions of a stream: a tree of `{"all":[…]}`, `{"any":[…]}`, `{"not":{…}}` and rules
//! `{field, op, value|values}`.
//!
//! A JSON list of conditions (the original MVP's shape) is read as `{"all":[…]}`. In Kubernetes the
//! tree is stored as free-form JSON (a structural schema can't recurse), so validation here is what
//! rejects a bad tree.

mod field;
mod validate;

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) use field::is_query_name;
pub use field::{ConditionField, FieldType};
pub(crate) use validate::validate_condition;

/// How deep a condition tree may nest.
pub const MAX_CONDITION_DEPTH: usize = 16;

/// A condition tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `{"all":[…]}`: every child matches (an empty list always matches).
    All(Vec<Condition>),
    /// `{"any":[…]}`: at least one child matches.
    Any(Vec<Condition>),
    /// `{"not":{…}}`: the child does not match.
    Not(Box<Condition>),
    /// `{field, op, value|values}`.
    Rule(ConditionRule),
}

/// A leaf of the tree: compare one request field.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRule {
    /// The request field, e.g. `country`, `sub1`, `param:kw` (see [`ConditionField`]).
    pub field: String,
    /// The comparison.
    pub op: ConditionOp,
    /// The operand of single-value operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<ConditionValue>,
    /// The operands of `in`, `notIn` (and `cidr`, which takes either).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<ConditionValue>>,
}

impl ConditionRule {
    /// The parsed field, or the message saying why it is not one.
    pub fn parsed_field(&self) -> Result<ConditionField, String> {
        self.field.parse()
    }
}

/// A comparison operator. Aliases accepted on input: `prefix` and `starts_with` for `startsWith`, `neq`
/// for `ne`, and the MVP's snake_case names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum ConditionOp {
    /// Equal.
    Eq,
    /// Not equal.
    #[serde(alias = "neq")]
    Ne,
    /// Equal to one of `values`.
    In,
    /// Equal to none of `values`.
    #[serde(alias = "not_in")]
    NotIn,
    /// Contains `value` as a substring.
    Contains,
    /// Does not contain `value`.
    #[serde(alias = "not_contains")]
    NotContains,
    /// Starts with `value`.
    #[serde(alias = "prefix", alias = "starts_with")]
    StartsWith,
    /// Ends with `value`.
    #[serde(alias = "ends_with")]
    EndsWith,
    /// Matches the regular expression `value` (Rust `regex` syntax, unanchored).
    Regex,
    /// The IP address is inside the CIDR `value` or any of `values`.
    Cidr,
    /// Greater than (numbers).
    Gt,
    /// Greater than or equal (numbers).
    Gte,
    /// Less than (numbers).
    Lt,
    /// Less than or equal (numbers).
    Lte,
    /// The field is present and not empty.
    Exists,
    /// The field is absent or empty.
    #[serde(alias = "not_exists")]
    NotExists,
}

impl ConditionOp {
    /// Every spelling accepted on input, canonical names first.
    pub const ACCEPTED: &'static [&'static str] = &[
        "eq",
        "ne",
        "in",
        "notIn",
        "contains",
        "notContains",
        "startsWith",
        "endsWith",
        "regex",
        "cidr",
        "gt",
        "gte",
        "lt",
        "lte",
        "exists",
        "notExists",
        "neq",
        "not_in",
        "not_contains",
        "prefix",
        "starts_with",
        "ends_with",
        "not_exists",
    ];

    /// Whether the operator compares numbers.
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Gt | Self::Gte | Self::Lt | Self::Lte)
    }

    /// Whether the operator takes a list (`values`).
    pub fn takes_list(self) -> bool {
        matches!(self, Self::In | Self::NotIn)
    }

    /// Whether the operator takes no operand.
    pub fn takes_nothing(self) -> bool {
        matches!(self, Self::Exists | Self::NotExists)
    }
}

impl fmt::Display for ConditionOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ACCEPTED.get(*self as usize).copied().unwrap_or_default();
        f.write_str(name)
    }
}

/// An operand: a string, a number or a boolean.
#[derive(Clone, Debug, PartialEq)]
pub enum ConditionValue {
    /// `true` / `false`.
    Bool(bool),
    /// A JSON number.
    Number(serde_json::Number),
    /// A string.
    Text(String),
}

impl ConditionValue {
    /// The value as text (`true`, `12.5`, `DE`).
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            Self::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Self::Number(n) => Cow::Owned(n.to_string()),
            Self::Text(s) => Cow::Borrowed(s),
        }
    }

    /// The value as a number: a JSON number, or a string that parses as one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => n.as_f64(),
            Self::Text(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            Self::Bool(_) => None,
        }
    }

    /// The value as a boolean: `true`/`false`, or those words as strings.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::Text(s) if s == "true" => Some(true),
            Self::Text(s) if s == "false" => Some(false),
            _ => None,
        }
    }
}

impl From<&str> for ConditionValue {
    fn from(value: &str) -> Self {
        Self::Text(value.to_string())
    }
}

impl Serialize for ConditionValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Number(n) => n.serialize(serializer),
            Self::Text(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for ConditionValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = ConditionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConditionValue, E> {
                Ok(ConditionValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConditionValue, E> {
                Ok(ConditionValue::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConditionValue, E> {
                Ok(ConditionValue::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConditionValue, E> {
                serde_json::Number::from_f64(v)
                    .map(ConditionValue::Number)
                    .ok_or_else(|| E::custom("a number must be finite"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConditionValue, E> {
                Ok(ConditionValue::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Rule(rule) => rule.serialize(serializer),
            Self::All(children) => single_entry(serializer, "all", children),
            Self::Any(children) => single_entry(serializer, "any", children),
            Self::Not(child) => single_entry(serializer, "not", child),
        }
    }
}

fn single_entry<S: Serializer, T: Serialize + ?Sized>(s: S, key: &str, value: &T) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(key, value)?;
    map.end()
}

/// Every key a condition object may have; which combination is allowed is checked after reading.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCondition {
    all: Option<Vec<Condition>>,
    any: Option<Vec<Condition>>,
    not: Option<Box<Condition>>,
    field: Option<String>,
    #[serde(alias = "operator")]
    op: Option<ConditionOp>,
    value: Option<ConditionValue>,
    values: Option<Vec<ConditionValue>>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        let rule_keys = raw.field.is_some() || raw.op.is_some() || raw.value.is_some() || raw.values.is_some();
        let groups = [raw.all.is_some(), raw.any.is_some(), raw.not.is_some()].iter().filter(|b| **b).count();
        if groups > 1 || (groups == 1 && rule_keys) {
            return Err("a condition is one of {\"all\":[…]}, {\"any\":[…]}, {\"not\":{…}} or a rule \
                        {field, op, value|values}; split combined keys into an `all` list"
                .to_string());
        }
        if let Some(all) = raw.all {
            return Ok(Self::All(all));
        }
        if let Some(any) = raw.any {
            return Ok(Self::Any(any));
        }
        if let Some(not) = raw.not {
            return Ok(Self::Not(not));
        }
        match (raw.field, raw.op) {
            (Some(field), Some(op)) => {
                Ok(Self::Rule(ConditionRule { field, op, value: raw.value, values: raw.values }))
            }
            (Some(_), None) => Err("missing `op`: say how to compare, e.g. \"op\": \"eq\"".to_string()),
            (None, _) => Err("missing `field`: a rule is {field, op, value|values}, e.g. \
                              {\"field\":\"country\",\"op\":\"in\",\"values\":[\"DE\"]}"
                .to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TreeVisitor;
        impl<'de> Visitor<'de> for TreeVisitor {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a condition object ({\"all\":[…]}, {\"any\":[…]}, {\"not\":{…}} or {field, op, value}) or a list of them")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Condition, A::Error> {
                let all = Vec::<Condition>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Condition::All(all))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Condition, A::Error> {
                let raw = RawCondition::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Condition::try_from(raw).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(TreeVisitor)
    }
}

impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        "Condition".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let free = json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        json_schema!({
            "type": "object",
            "description": "A routing condition: {\"all\":[…]}, {\"any\":[…]}, {\"not\":{…}} or a rule {field, op, value|values}. Nested conditions are free-form here and checked by the operator.",
            "properties": {
                "all": {"type": "array", "items": free.clone(), "description": "Every condition matches."},
                "any": {"type": "array", "items": free.clone(), "description": "At least one condition matches."},
                "not": free,
                "field": {"type": "string", "description": "The request field, e.g. country, deviceType, sub1, param:NAME."},
                "op": {"type": "string", "enum": ConditionOp::ACCEPTED, "description": "The comparison."},
                "value": {"x-kubernetes-preserve-unknown-fields": true, "description": "The operand: a string, a number or a boolean."},
                "values": {"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": true}, "description": "The operands of in, notIn and cidr."},
            },
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_display_is_the_json_name() {
        for name in &ConditionOp::ACCEPTED[..16] {
            let op: ConditionOp = serde_json::from_value(serde_json::json!(name)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(op.to_string(), *name);
            assert_eq!(serde_json::to_value(op).ok(), Some(serde_json::json!(name)));
        }
        for alias in &ConditionOp::ACCEPTED[16..] {
            assert!(serde_json::from_value::<ConditionOp>(serde_json::json!(alias)).is_ok(), "{alias}");
        }
    }

    #[test]
    fn tree_round_trips() {
        let json = serde_json::json!({"any": [
            {"not": {"field": "isBot", "op": "eq", "value": true}},
            {"all": [{"field": "cost", "op": "gte", "value": 0.5}, {"field": "sub1", "op": "exists"}]},
        ]});
        let tree: Condition = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::to_value(&tree).ok(), Some(json));
    }
}
