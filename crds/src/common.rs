//! Small shared pieces of every kind: references by name, secret references, money and amounts, statuses.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// A reference by name to another custom resource in the same namespace (Kubernetes only).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `metadata.name` of the referenced object.
    pub name: String,
}

impl ObjectRef {
    /// A reference to the object called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// One key of a Kubernetes `Secret` in the same namespace (Kubernetes only).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// `metadata.name` of the Secret.
    pub name: String,
    /// The key inside the Secret's `data`.
    pub key: String,
}

/// The money pattern: a non-negative decimal written as a string, e.g. `"0.05"`, `"12"`.
pub const MONEY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?$";

/// An amount of money as a decimal string (`"0.05"`): never a float, so no rounding on the way.
///
/// Parsing accepts any string so that validation can report a bad amount with its path;
/// [`Money::to_decimal`] gives the exact value of a valid one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(transparent)]
pub struct Money(pub String);

impl Money {
    /// Money from its decimal text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The exact value, or `None` when the text is not a non-negative decimal (see [`MONEY_PATTERN`]).
    pub fn to_decimal(&self) -> Option<Decimal> {
        parse_decimal(&self.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Decimal> for Money {
    fn from(value: Decimal) -> Self {
        Self(value.normalize().to_string())
    }
}

impl JsonSchema for Money {
    fn schema_name() -> Cow<'static, str> {
        "Money".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": MONEY_PATTERN,
            "description": "A non-negative decimal amount written as a string, e.g. \"0.05\".",
        })
    }
}

/// A non-negative limit written as a number (`1000`) or a decimal string (`"12.50"`); kept as text.
///
/// Cap limits use it: counts are whole numbers, money caps may have decimals.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(transparent)]
pub struct Amount(pub String);

impl Amount {
    /// An amount from its decimal text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The decimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The exact value, or `None` when the text is not a non-negative decimal.
    pub fn to_decimal(&self) -> Option<Decimal> {
        parse_decimal(&self.0)
    }
}

impl From<u64> for Amount {
    fn from(value: u64) -> Self {
        Self(value.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a decimal string")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                Ok(Amount(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Amount {
    fn schema_name() -> Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "A non-negative whole number, or a decimal string such as \"12.50\".",
        })
    }
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    let (whole, frac) = match text.split_once('.') {
        Some((whole, frac)) => (whole, Some(frac)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    Decimal::from_str(text).ok()
}

/// The status of a conversion after the network's status was mapped.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum ConversionStatus {
    /// Paid: counts as revenue.
    Approved,
    /// Waiting for the network's decision.
    Pending,
    /// Not paid.
    Rejected,
}

impl ConversionStatus {
    /// The JSON name (`approved`, `pending`, `rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ConversionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn default_true() -> bool {
    true
}
