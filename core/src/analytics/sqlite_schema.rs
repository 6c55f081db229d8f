//! The embedded analytics schema: ClickHouse's tables in SQLite, as numbered migrations.
//!
//! The same columns as `schema.rs` (times as Unix seconds, money as millionths, `subs` as a JSON array), with
//! primary keys where ClickHouse has `ReplacingMergeTree` keys, so a replayed event replaces its row instead of
//! adding one: clicks by `click_id`, conversions by `(network_id, transaction_id)` (an upsert keeps the highest
//! `revision`), postback logs and health checks by `id`, ingestion errors by `(topic, partition, offset)`.

use rusqlite::{Connection, OptionalExtension};

/// One schema step, applied in one transaction.
pub struct SqliteMigration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[SqliteMigration] = &[SqliteMigration {
    version: 1,
    name: "event tables",
    sql: "
        CREATE TABLE IF NOT EXISTS clicks (
            click_id TEXT PRIMARY KEY NOT NULL,
            ts INTEGER NOT NULL,
            campaign_id TEXT NOT NULL,
            campaign_key TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            destination_id TEXT NOT NULL,
            traffic_source_id TEXT NOT NULL,
            team_id TEXT NOT NULL,
            trafficback INTEGER NOT NULL,
            trafficback_depth INTEGER NOT NULL,
            source TEXT NOT NULL,
            source_click_id TEXT NOT NULL,
            ip TEXT NOT NULL,
            country TEXT NOT NULL,
            region TEXT NOT NULL,
            city TEXT NOT NULL,
            isp TEXT NOT NULL,
            asn INTEGER NOT NULL,
            device_type TEXT NOT NULL,
            os TEXT NOT NULL,
            browser TEXT NOT NULL,
            language TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            referrer TEXT NOT NULL,
            utm_source TEXT NOT NULL,
            utm_medium TEXT NOT NULL,
            utm_campaign TEXT NOT NULL,
            utm_content TEXT NOT NULL,
            utm_term TEXT NOT NULL,
            subs TEXT NOT NULL,
            cost_micros INTEGER NOT NULL,
            currency TEXT NOT NULL,
            is_bot INTEGER NOT NULL,
            is_unique INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS clicks_ts ON clicks (ts);
        CREATE INDEX IF NOT EXISTS clicks_campaign_ts ON clicks (campaign_id, ts);
        CREATE TABLE IF NOT EXISTS conversions (
            conversion_id TEXT NOT NULL,
            ts INTEGER NOT NULL,
            revision INTEGER NOT NULL,
            network_id TEXT NOT NULL,
            transaction_id TEXT NOT NULL,
            click_id TEXT NOT NULL,
            click_ts INTEGER NOT NULL,
            status TEXT NOT NULL,
            payout_micros INTEGER NOT NULL,
            currency TEXT NOT NULL,
            revenue_micros INTEGER NOT NULL,
            campaign_id TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            destination_id TEXT NOT NULL,
            traffic_source_id TEXT NOT NULL,
            team_id TEXT NOT NULL,
            attributed INTEGER NOT NULL,
            PRIMARY KEY (network_id, transaction_id)
        );
        CREATE INDEX IF NOT EXISTS conversions_ts ON conversions (ts);
        CREATE TABLE IF NOT EXISTS postback_logs (
            id TEXT PRIMARY KEY NOT NULL,
            ts INTEGER NOT NULL,
            network_id TEXT NOT NULL,
            network_key TEXT NOT NULL,
            team_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            http_status INTEGER NOT NULL,
            latency_micros INTEGER NOT NULL,
            click_id TEXT NOT NULL,
            transaction_id TEXT NOT NULL,
            conversion_id TEXT NOT NULL,
            remote_ip TEXT NOT NULL,
            error TEXT NOT NULL,
            request TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS postback_logs_ts ON postback_logs (ts);
        CREATE TABLE IF NOT EXISTS destination_health (
            id TEXT PRIMARY KEY NOT NULL,
            ts INTEGER NOT NULL,
            destination_id TEXT NOT NULL,
            team_id TEXT NOT NULL,
            healthy INTEGER NOT NULL,
            changed INTEGER NOT NULL,
            http_status INTEGER NOT NULL,
            latency_millis INTEGER NOT NULL,
            url TEXT NOT NULL,
            error TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS destination_health_ts ON destination_health (ts);
        CREATE TABLE IF NOT EXISTS ingestion_errors (
            ts INTEGER NOT NULL,
            topic TEXT NOT NULL,
            \"partition\" INTEGER NOT NULL,
            \"offset\" INTEGER NOT NULL,
            error TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (topic, \"partition\", \"offset\")
        );
        CREATE INDEX IF NOT EXISTS ingestion_errors_ts ON ingestion_errors (ts);
    ",
}];

/// Applies every migration not yet applied; returns the versions applied now.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<Vec<u32>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: Option<u32> = tx
            .query_row("SELECT version FROM schema_migrations WHERE version = ?1", [m.version], |r| r.get(0))
            .optional()?;
        if done.is_none() {
            tx.execute_batch(m.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch())",
                rusqlite::params![m.version, m.name],
            )?;
            applied.push(m.version);
        }
        tx.commit()?;
    }
    Ok(applied)
}
