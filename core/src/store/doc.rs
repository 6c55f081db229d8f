//! The store-owned fields of a document (`id`, `version`, `createdAt`, `updatedAt`) and the checks every
//! backend makes before a write, so both backends accept and refuse the same documents.

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::{Collection, Result, StoreError};

/// The `meta` document holding the configuration revision.
pub(crate) const REVISION_ID: &str = "configRevision";

/// Longest accepted caller-given ID.
const MAX_ID_LEN: usize = 256;

/// Now, as the store writes timestamps: RFC 3339, UTC, milliseconds (`2025-01-02T03:04:05.678Z`).
pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A new time-ordered ID.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The object inside `doc`, or `Invalid`.
fn object(coll: Collection, doc: Value) -> Result<Map<String, Value>> {
    match doc {
        Value::Object(map) => Ok(map),
        other => Err(StoreError::Invalid(format!("a {coll} document must be a JSON object, not {}", kind(&other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(StoreError::Invalid(format!("an id must be a string of 1 to {MAX_ID_LEN} bytes")));
    }
    Ok(())
}

/// The document to insert: an object with a valid (or new) `id`, `version` 1 and both timestamps.
pub(crate) fn for_insert(coll: Collection, doc: Value) -> Result<Map<String, Value>> {
    let mut map = object(coll, doc)?;
    let id = match map.remove("id") {
        None | Some(Value::Null) => new_id(),
        Some(Value::String(id)) => {
            check_id(&id)?;
            id
        }
        Some(other) => {
            return Err(StoreError::Invalid(format!("`id` must be a string, not {}", kind(&other))));
        }
    };
    let ts = now();
    map.insert("id".into(), Value::String(id));
    map.insert("version".into(), Value::from(1u64));
    map.insert("createdAt".into(), Value::String(ts.clone()));
    map.insert("updatedAt".into(), Value::String(ts));
    check_unique_fields(coll, &map)?;
    Ok(map)
}

/// The document replacing version `old_version` of `id` created at `created_at`.
pub(crate) fn for_replace(
    coll: Collection,
    id: &str,
    doc: Value,
    old_version: u64,
    created_at: Value,
) -> Result<Map<String, Value>> {
    let mut map = object(coll, doc)?;
    match map.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(given)) if given == id => {}
        Some(other) => {
            return Err(StoreError::Invalid(format!("`id` {other} in the document differs from {id:?}")));
        }
    }
    map.insert("id".into(), Value::String(id.to_owned()));
    map.insert("version".into(), Value::from(old_version + 1));
    map.insert("createdAt".into(), created_at);
    map.insert("updatedAt".into(), Value::String(now()));
    check_unique_fields(coll, &map)?;
    Ok(map)
}

/// Validates a replace's input before the backend is asked anything.
pub(crate) fn precheck_replace(coll: Collection, id: &str, doc: &Value) -> Result<()> {
    check_id(id)?;
    if !doc.is_object() {
        return Err(StoreError::Invalid(format!("a {coll} document must be a JSON object, not {}", kind(doc))));
    }
    Ok(())
}

/// Every field of every unique index must be present and not null (see [`super::indexes`]).
pub(crate) fn check_unique_fields(coll: Collection, doc: &Map<String, Value>) -> Result<()> {
    for index in coll.unique_indexes() {
        for field in index.fields {
            if matches!(lookup(doc, field), None | Some(Value::Null)) {
                return Err(StoreError::Invalid(format!("a {coll} document needs `{field}` (it is unique)")));
            }
        }
    }
    Ok(())
}

/// The value at a dotted path through objects.
pub(crate) fn lookup<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = doc.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The stored version of a document read back, or `Backend` if it has none.
pub(crate) fn version_of(coll: Collection, doc: &Map<String, Value>) -> Result<u64> {
    doc.get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| StoreError::Backend(format!("a stored {coll} document has no version")))
}

/// The revision document as both backends store it in `meta`.
pub(crate) fn revision_doc(value: &str, version: u64, created_at: &str) -> Map<String, Value> {
    let ts = now();
    let mut map = Map::new();
    map.insert("id".into(), REVISION_ID.into());
    map.insert("value".into(), value.into());
    map.insert("version".into(), version.into());
    map.insert("createdAt".into(), created_at.into());
    map.insert("updatedAt".into(), ts.into());
    map
}

/// The `value` of a revision document.
pub(crate) fn revision_value(doc: &Map<String, Value>) -> Result<String> {
    doc.get("value")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Backend("the configRevision document has no value".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn insert_sets_the_store_fields() {
        let map = for_insert(Collection::Streams, json!({"name": "s", "version": 9, "createdAt": "x"})).unwrap();
        assert_eq!(map["version"], json!(1));
        assert_eq!(map["createdAt"], map["updatedAt"]);
        assert_ne!(map["createdAt"], json!("x"));
        assert_eq!(map["id"].as_str().unwrap().len(), 36);
        let given = for_insert(Collection::Streams, json!({"id": "s-1"})).unwrap();
        assert_eq!(given["id"], json!("s-1"));
    }

    #[test]
    fn insert_refuses_bad_documents() {
        for bad in [json!([1]), json!("x"), json!({"id": 5}), json!({"id": ""})] {
            assert!(matches!(for_insert(Collection::Streams, bad), Err(StoreError::Invalid(_))));
        }
        // Unique fields are required.
        assert!(for_insert(Collection::Campaigns, json!({"name": "x"})).is_err());
        assert!(for_insert(Collection::Campaigns, json!({"key": null})).is_err());
        assert!(for_insert(Collection::Conversions, json!({"networkId": "n"})).is_err());
        assert!(for_insert(Collection::Conversions, json!({"networkId": "n", "transactionId": "t"})).is_ok());
    }

    #[test]
    fn replace_keeps_id_and_created_at() {
        let map =
            for_replace(Collection::Streams, "a", json!({"name": "n"}), 3, json!("2020-01-01T00:00:00.000Z")).unwrap();
        assert_eq!(map["id"], json!("a"));
        assert_eq!(map["version"], json!(4));
        assert_eq!(map["createdAt"], json!("2020-01-01T00:00:00.000Z"));
        let other = for_replace(Collection::Streams, "a", json!({"id": "b"}), 1, json!(""));
        assert!(matches!(other, Err(StoreError::Invalid(_))));
    }

    #[test]
    fn lookup_walks_objects() {
        let doc = json!({"a": {"b": {"c": 1}}, "x": [1]});
        let map = doc.as_object().unwrap();
        assert_eq!(lookup(map, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(map, "a.b.d"), None);
        assert_eq!(lookup(map, "x.0"), None);
    }
}
