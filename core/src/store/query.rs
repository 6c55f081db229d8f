//! What a caller may ask of a collection: equality and `in` filters on field paths, one sort key, limit, skip
//! and an after-id cursor. Both backends translate these; nothing here does I/O.
//!
//! Semantics every backend honours (MongoDB's, restricted to what SQLite can match exactly):
//! - a path is dotted camelCase segments (`costModel.type`); `id` is the document's ID. A path walks objects
//!   only: what a path that meets an array matches is unspecified (MongoDB would match any element).
//! - values are scalars: string, number, bool or null. Numbers compare by value (`1` equals `1.0`), never equal
//!   a bool or a string; `null` matches a missing field too.
//! - results are ordered by the sort field, then by `id` (so paging is stable). With no sort, by `id`, which for
//!   store-assigned UUID v7 IDs is creation order. Sort on fields that hold one type; missing sorts first.

use serde_json::Value;

use super::StoreError;

/// One condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The field equals the value.
    Eq(String, Value),
    /// The field equals one of the values (none: matches nothing).
    In(String, Vec<Value>),
}

/// A conjunction of conditions; the empty filter matches every document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub conditions: Vec<Condition>,
}

impl Filter {
    /// The filter that matches every document.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds `path == value`.
    pub fn eq(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.conditions.push(Condition::Eq(path.into(), value.into()));
        self
    }

    /// Adds `path in values`.
    pub fn is_in<V: Into<Value>>(mut self, path: impl Into<String>, values: impl IntoIterator<Item = V>) -> Self {
        let values = values.into_iter().map(Into::into).collect();
        self.conditions.push(Condition::In(path.into(), values));
        self
    }

    /// Checks every path and value.
    pub fn validate(&self) -> Result<(), StoreError> {
        for c in &self.conditions {
            match c {
                Condition::Eq(path, value) => {
                    validate_path(path)?;
                    validate_scalar(path, value)?;
                }
                Condition::In(path, values) => {
                    validate_path(path)?;
                    for v in values {
                        validate_scalar(path, v)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// One sort key (ties are broken by `id` in the same direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub field: String,
    pub direction: Direction,
}

/// A filter plus order and paging.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub filter: Filter,
    pub sort: Option<Sort>,
    pub limit: Option<u64>,
    pub skip: u64,
    /// Keyset cursor: only documents whose `id` sorts after this one (before it, when descending). Needs the
    /// default order (no sort, or a sort on `id`).
    pub after_id: Option<String>,
}

impl Query {
    /// Every document, by `id`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents matching `filter`.
    pub fn filtered(filter: Filter) -> Self {
        Self { filter, ..Self::default() }
    }

    /// Adds `path == value` to the filter.
    pub fn eq(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.filter = self.filter.eq(path, value);
        self
    }

    /// Adds `path in values` to the filter.
    pub fn is_in<V: Into<Value>>(mut self, path: impl Into<String>, values: impl IntoIterator<Item = V>) -> Self {
        self.filter = self.filter.is_in(path, values);
        self
    }

    pub fn sort_asc(mut self, field: impl Into<String>) -> Self {
        self.sort = Some(Sort { field: field.into(), direction: Direction::Asc });
        self
    }

    pub fn sort_desc(mut self, field: impl Into<String>) -> Self {
        self.sort = Some(Sort { field: field.into(), direction: Direction::Desc });
        self
    }

    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    pub fn after(mut self, id: impl Into<String>) -> Self {
        self.after_id = Some(id.into());
        self
    }

    /// The effective order: the sort field (`id` when none) and its direction.
    pub fn order(&self) -> (&str, Direction) {
        match &self.sort {
            Some(s) => (s.field.as_str(), s.direction),
            None => ("id", Direction::Asc),
        }
    }

    /// Checks the filter, the sort field and that a cursor comes with the `id` order.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.filter.validate()?;
        let (field, _) = self.order();
        validate_path(field)?;
        if self.after_id.is_some() && field != "id" {
            return Err(StoreError::Invalid(format!("an after-id cursor needs the id order, not a sort on `{field}`")));
        }
        if self.limit.is_some_and(|n| n > i64::MAX as u64) || self.skip > i64::MAX as u64 {
            return Err(StoreError::Invalid("limit or skip is too large".into()));
        }
        Ok(())
    }
}

/// A path is dotted segments of ASCII letters, digits and `_`, each starting with a letter or `_`.
///
/// Backends put paths into SQL text (so that expression indexes apply) and into MongoDB field names, so
/// nothing else may pass.
pub fn validate_path(path: &str) -> Result<(), StoreError> {
    let ok = !path.is_empty()
        && path.split('.').all(|seg| {
            let mut chars = seg.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("`{path}` is not a field path (dotted letters, digits and `_`)")))
    }
}

fn validate_scalar(path: &str, value: &Value) -> Result<(), StoreError> {
    match value {
        Value::Array(_) | Value::Object(_) => {
            Err(StoreError::Invalid(format!("`{path}` can only be compared with a string, number, bool or null")))
        }
        Value::Number(n) if n.as_u64().is_some_and(|u| u > i64::MAX as u64) => {
            Err(StoreError::Invalid(format!("`{path}`: number {n} is out of range")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        for ok in ["id", "key", "costModel.type", "_x.a1", "sub10"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "1a", "a-b", "a'b", "$gt", "a b", "ä"] {
            assert!(matches!(validate_path(bad), Err(StoreError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn values_must_be_scalars() {
        assert!(Filter::all().eq("a", json!([1])).validate().is_err());
        assert!(Filter::all().eq("a", json!({"b": 1})).validate().is_err());
        assert!(Filter::all().is_in("a", [json!({})]).validate().is_err());
        assert!(Filter::all().eq("a", u64::MAX).validate().is_err());
        let ok = Filter::all()
            .eq("a", "x")
            .eq("b", 1)
            .eq("c", 1.5)
            .eq("d", true)
            .eq("e", Value::Null)
            .is_in("f", ["x", "y"]);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn cursor_needs_id_order() {
        assert!(Query::new().after("x").validate().is_ok());
        assert!(Query::new().sort_desc("id").after("x").validate().is_ok());
        assert!(Query::new().sort_asc("name").after("x").validate().is_err());
        assert!(Query::new().sort_asc("bad path").validate().is_err());
    }
}
