//! The embedded configuration store: one SQLite file (WAL), one table per collection
//! (`id TEXT PRIMARY KEY, version INTEGER, doc TEXT`), the declared indexes as expression indexes on
//! `json_extract(doc, '$.field')`, and filters through the same expressions so those indexes apply.
//!
//! One connection behind a mutex, used from `spawn_blocking`: configuration traffic is light, and a single
//! writer is what SQLite wants anyway. Compare-and-swap runs in a `BEGIN IMMEDIATE` transaction, so it is
//! atomic even between processes sharing the file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::doc::{self, REVISION_ID};
use super::query::{Condition, Direction};
use super::{Collection, ConfigStore, Filter, INDEXES, IndexSpec, Query, Result, StoreError};

/// How long a write waits for another process's lock before giving up with `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`ConfigStore`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, its tables and indexes.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
            }
            let conn = Connection::open(&path)
                .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).map_err(map_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
        Self::init(conn).await
    }

    /// A private in-memory database (tests, throwaway demos).
    pub async fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(map_err)?;
        Self::init(conn).await
    }

    async fn init(conn: Connection) -> Result<Self> {
        let store = Self { conn: Arc::new(Mutex::new(conn)) };
        store
            .call(|conn| {
                for coll in Collection::ALL {
                    conn.execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS \"{coll}\" \
                         (id TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL)"
                    ))?;
                }
                Ok(())
            })
            .await?;
        store.ensure_indexes().await?;
        Ok(store)
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, SqlError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves a usable connection (open transactions roll back on drop).
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
        .map_err(|e| e.into_store_error())
    }
}

/// An error inside a blocking call: SQLite's own, or one the store decided.
#[derive(Debug)]
enum SqlError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        SqlError::Sqlite(e)
    }
}

impl From<StoreError> for SqlError {
    fn from(e: StoreError) -> Self {
        SqlError::Store(e)
    }
}

impl SqlError {
    fn into_store_error(self) -> StoreError {
        match self {
            SqlError::Sqlite(e) => map_err(e),
            SqlError::Store(e) => e,
        }
    }

    /// Duplicate keys need the collection, which only the caller knows.
    fn in_collection(self, coll: Collection) -> SqlError {
        match self {
            SqlError::Sqlite(rusqlite::Error::SqliteFailure(f, msg))
                if f.code == ErrorCode::ConstraintViolation
                    && matches!(
                        f.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    ) =>
            {
                SqlError::Store(StoreError::Duplicate {
                    collection: coll.to_string(),
                    index: duplicate_index(msg.as_deref().unwrap_or("")),
                })
            }
            other => other,
        }
    }
}

/// The index named in SQLite's "UNIQUE constraint failed: index 'campaigns_key'" or "…: campaigns.id".
fn duplicate_index(message: &str) -> String {
    if let Some(name) = message.split("index '").nth(1).and_then(|rest| rest.split('\'').next()) {
        return IndexSpec::by_name(name).map_or_else(|| "unknown".into(), IndexSpec::describe);
    }
    if message.ends_with(".id") {
        return "id".into();
    }
    "unknown".into()
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("the SQLite store is locked: {e}"))
        }
        Some(ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(format!("the SQLite store cannot be used: {e}"))
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// The SQL expression for a (validated) field path.
fn field_expr(path: &str) -> String {
    if path == "id" { "id".into() } else { format!("json_extract(doc,'$.{path}')") }
}

/// One equality as SQL, exact about JSON types (SQLite would otherwise equate `true` with `1`).
fn eq_sql(path: &str, value: &Value, params: &mut Vec<SqlValue>) -> String {
    let expr = field_expr(path);
    if path == "id" {
        return match value {
            Value::String(s) => {
                params.push(SqlValue::Text(s.clone()));
                "id = ?".into()
            }
            _ => "0".into(),
        };
    }
    let ty = format!("json_type(doc,'$.{path}')");
    match value {
        Value::Null => format!("{expr} IS NULL"),
        Value::Bool(b) => format!("{ty} = '{b}'"),
        Value::Number(n) => {
            params.push(match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            });
            format!("({expr} = ? AND {ty} IN ('integer','real'))")
        }
        Value::String(s) => {
            params.push(SqlValue::Text(s.clone()));
            format!("({expr} = ? AND {ty} = 'text')")
        }
        // Refused by validation.
        Value::Array(_) | Value::Object(_) => "0".into(),
    }
}

/// The WHERE clause (without the keyword) and its parameters.
fn where_sql(filter: &Filter, params: &mut Vec<SqlValue>) -> String {
    let mut terms = Vec::new();
    for cond in &filter.conditions {
        terms.push(match cond {
            Condition::Eq(path, value) => eq_sql(path, value, params),
            Condition::In(_, values) if values.is_empty() => "0".into(),
            Condition::In(path, values) => {
                let alts: Vec<_> = values.iter().map(|v| eq_sql(path, v, params)).collect();
                format!("({})", alts.join(" OR "))
            }
        });
    }
    if terms.is_empty() { "1".into() } else { terms.join(" AND ") }
}

fn index_sql(index: &IndexSpec) -> String {
    let exprs: Vec<_> = index.fields.iter().map(|f| field_expr(f)).collect();
    format!(
        "CREATE {}INDEX IF NOT EXISTS \"{}\" ON \"{}\" ({})",
        if index.unique { "UNIQUE " } else { "" },
        index.name,
        index.collection,
        exprs.join(", ")
    )
}

fn parse_doc(text: &str) -> Result<Map<String, Value>, SqlError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(StoreError::Backend("a stored document is not an object".into()).into()),
        Err(e) => Err(StoreError::Backend(format!("a stored document is not JSON: {e}")).into()),
    }
}

fn to_text(map: &Map<String, Value>) -> Result<String, SqlError> {
    serde_json::to_string(map).map_err(|e| StoreError::Invalid(format!("cannot serialise: {e}")).into())
}

fn read_one(conn: &Connection, coll: Collection, id: &str) -> Result<Option<Map<String, Value>>, SqlError> {
    let text: Option<String> =
        conn.query_row(&format!("SELECT doc FROM \"{coll}\" WHERE id = ?"), [id], |row| row.get(0)).optional()?;
    text.as_deref().map(parse_doc).transpose()
}

fn write(conn: &Connection, coll: Collection, map: &Map<String, Value>, insert: bool) -> Result<(), SqlError> {
    let id = map.get("id").and_then(Value::as_str).unwrap_or_default();
    let version = doc::version_of(coll, map)?;
    let version = i64::try_from(version).map_err(|_| StoreError::Backend("version overflow".into()))?;
    let sql = if insert {
        format!("INSERT INTO \"{coll}\" (id, version, doc) VALUES (?1, ?2, ?3)")
    } else {
        format!("UPDATE \"{coll}\" SET version = ?2, doc = ?3 WHERE id = ?1")
    };
    conn.execute(&sql, params![id, version, to_text(map)?]).map_err(|e| SqlError::from(e).in_collection(coll))?;
    Ok(())
}

fn conflict_or_missing(coll: Collection, id: &str, expected: Option<u64>, exists: bool) -> StoreError {
    match expected {
        Some(expected) if exists => {
            StoreError::VersionConflict { collection: coll.to_string(), id: id.to_owned(), expected }
        }
        _ => StoreError::NotFound { collection: coll.to_string(), id: id.to_owned() },
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        self.call(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn ensure_indexes(&self) -> Result<()> {
        self.call(|conn| {
            for index in INDEXES {
                conn.execute_batch(&index_sql(index))?;
            }
            Ok(())
        })
        .await
    }

    async fn insert(&self, coll: Collection, doc: Value) -> Result<Value> {
        let map = doc::for_insert(coll, doc)?;
        self.call(move |conn| {
            write(conn, coll, &map, true)?;
            Ok(Value::Object(map))
        })
        .await
    }

    async fn get(&self, coll: Collection, id: &str) -> Result<Option<Value>> {
        let id = id.to_owned();
        self.call(move |conn| Ok(read_one(conn, coll, &id)?.map(Value::Object))).await
    }

    async fn find(&self, coll: Collection, query: &Query) -> Result<Vec<Value>> {
        query.validate()?;
        let mut params = Vec::new();
        let mut clause = where_sql(&query.filter, &mut params);
        let (field, direction) = query.order();
        let dir = match direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        if let Some(after) = &query.after_id {
            clause.push_str(if direction == Direction::Asc { " AND id > ?" } else { " AND id < ?" });
            params.push(SqlValue::Text(after.clone()));
        }
        let order = if field == "id" { format!("id {dir}") } else { format!("{} {dir}, id {dir}", field_expr(field)) };
        let limit = query.limit.map_or(-1, |n| n as i64);
        let sql =
            format!("SELECT doc FROM \"{coll}\" WHERE {clause} ORDER BY {order} LIMIT {limit} OFFSET {}", query.skip);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(params), |row| row.get::<_, String>(0))?;
            let mut out = Vec::new();
            for text in rows {
                out.push(Value::Object(parse_doc(&text?)?));
            }
            Ok(out)
        })
        .await
    }

    async fn count(&self, coll: Collection, filter: &Filter) -> Result<u64> {
        filter.validate()?;
        let mut params = Vec::new();
        let clause = where_sql(filter, &mut params);
        let sql = format!("SELECT count(*) FROM \"{coll}\" WHERE {clause}");
        self.call(move |conn| {
            let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(params), |row| row.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn replace(&self, coll: Collection, id: &str, expected_version: Option<u64>, doc: Value) -> Result<Value> {
        doc::precheck_replace(coll, id, &doc)?;
        let id = id.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(current) = read_one(&tx, coll, &id)? else {
                return Err(conflict_or_missing(coll, &id, expected_version, false).into());
            };
            let version = doc::version_of(coll, &current)?;
            if expected_version.is_some_and(|v| v != version) {
                return Err(conflict_or_missing(coll, &id, expected_version, true).into());
            }
            let created_at = current.get("createdAt").cloned().unwrap_or(Value::Null);
            let map = doc::for_replace(coll, &id, doc, version, created_at)?;
            write(&tx, coll, &map, false)?;
            tx.commit()?;
            Ok(Value::Object(map))
        })
        .await
    }

    async fn delete(&self, coll: Collection, id: &str, expected_version: Option<u64>) -> Result<()> {
        let id = id.to_owned();
        let expected = match expected_version.map(i64::try_from) {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err(conflict_or_missing(coll, &id, expected_version, true)),
            None => None,
        };
        self.call(move |conn| {
            let deleted = conn.execute(
                &format!("DELETE FROM \"{coll}\" WHERE id = ?1 AND (?2 IS NULL OR version = ?2)"),
                params![id, expected],
            )?;
            if deleted == 0 {
                let exists = read_one(conn, coll, &id)?.is_some();
                return Err(conflict_or_missing(coll, &id, expected_version, exists).into());
            }
            Ok(())
        })
        .await
    }

    async fn config_revision(&self) -> Result<String> {
        self.call(|conn| {
            if let Some(map) = read_one(conn, Collection::Meta, REVISION_ID)? {
                return Ok(doc::revision_value(&map)?);
            }
            // A fresh store: make one, unless another process just did.
            let ts = doc::now();
            let map = doc::revision_doc(&doc::new_id(), 1, &ts);
            conn.execute(
                "INSERT OR IGNORE INTO \"meta\" (id, version, doc) VALUES (?1, 1, ?2)",
                params![REVISION_ID, to_text(&map)?],
            )?;
            match read_one(conn, Collection::Meta, REVISION_ID)? {
                Some(map) => Ok(doc::revision_value(&map)?),
                None => Err(StoreError::Backend("the configRevision document vanished".into()).into()),
            }
        })
        .await
    }

    async fn bump_config_revision(&self) -> Result<String> {
        self.call(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = doc::new_id();
            let current = read_one(&tx, Collection::Meta, REVISION_ID)?;
            let map = match &current {
                Some(cur) => {
                    let created = cur.get("createdAt").and_then(Value::as_str).unwrap_or_default();
                    doc::revision_doc(&value, doc::version_of(Collection::Meta, cur)? + 1, created)
                }
                None => doc::revision_doc(&value, 1, &doc::now()),
            };
            write(&tx, Collection::Meta, &map, current.is_none())?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_messages_name_the_index() {
        assert_eq!(duplicate_index("UNIQUE constraint failed: index 'campaigns_key'"), "key");
        assert_eq!(
            duplicate_index("UNIQUE constraint failed: index 'conversions_networkId_transactionId'"),
            "networkId, transactionId"
        );
        assert_eq!(duplicate_index("UNIQUE constraint failed: campaigns.id"), "id");
        assert_eq!(duplicate_index("something else"), "unknown");
    }

    #[test]
    fn filters_are_typed() {
        let mut params = Vec::new();
        let filter = Filter::all().eq("a.b", true).eq("n", 1).is_in("s", ["x", "y"]).eq("z", Value::Null);
        let sql = where_sql(&filter, &mut params);
        assert_eq!(
            sql,
            "json_type(doc,'$.a.b') = 'true' AND (json_extract(doc,'$.n') = ? AND json_type(doc,'$.n') IN \
             ('integer','real')) AND ((json_extract(doc,'$.s') = ? AND json_type(doc,'$.s') = 'text') OR \
             (json_extract(doc,'$.s') = ? AND json_type(doc,'$.s') = 'text')) AND json_extract(doc,'$.z') IS NULL"
        );
        assert_eq!(params.len(), 3);
        assert_eq!(where_sql(&Filter::all(), &mut params), "1");
        assert_eq!(where_sql(&Filter::all().is_in("a", Vec::<Value>::new()), &mut params), "0");
        assert_eq!(where_sql(&Filter::all().eq("id", json!(1)), &mut params), "0");
    }
}
