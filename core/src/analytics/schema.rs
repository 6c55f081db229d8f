//! The ClickHouse schema as numbered migrations.
//!
//! Every statement runs on ClickHouse 18.16 and on current releases: plain `String`/integer types, `DateTime`,
//! money as `Int64` millionths, no LowCardinality, Map, JSON, TTL, CODEC or DateTime64.
//!
//! Tables are `ReplacingMergeTree` keyed on the event's own ID, so a replay of an event (an ingester that
//! crashed after inserting but before committing its offsets) collapses into one row. Queries must not rely on
//! merges having happened: they read with `FINAL` or count distinct IDs. Conversions are versioned by
//! `revision`, so a status change replaces the earlier row.

/// One schema step. Statements are idempotent (`IF NOT EXISTS`), so re-running a half-applied migration is safe.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

/// The bookkeeping table: which migrations were applied.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree ORDER BY version";

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "event tables",
    statements: &[
        "CREATE TABLE IF NOT EXISTS clicks (
            click_id String,
            ts DateTime,
            campaign_id String,
            campaign_key String,
            stream_id String,
            destination_id String,
            traffic_source_id String,
            team_id String,
            trafficback UInt8,
            trafficback_depth UInt8,
            source String,
            source_click_id String,
            ip String,
            country String,
            region String,
            city String,
            isp String,
            asn UInt32,
            device_type String,
            os String,
            browser String,
            language String,
            user_agent String,
            referrer String,
            utm_source String,
            utm_medium String,
            utm_campaign String,
            utm_content String,
            utm_term String,
            subs Array(String),
            cost_micros Int64,
            currency String,
            is_bot UInt8,
            is_unique UInt8
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(ts)
        ORDER BY (campaign_id, toDate(ts), click_id)",
        "CREATE TABLE IF NOT EXISTS conversions (
            conversion_id String,
            ts DateTime,
            revision UInt64,
            network_id String,
            transaction_id String,
            click_id String,
            click_ts DateTime,
            status String,
            payout_micros Int64,
            currency String,
            revenue_micros Int64,
            campaign_id String,
            stream_id String,
            destination_id String,
            traffic_source_id String,
            team_id String,
            attributed UInt8
        ) ENGINE = ReplacingMergeTree(revision)
        ORDER BY (network_id, transaction_id)",
        "CREATE TABLE IF NOT EXISTS postback_logs (
            id String,
            ts DateTime,
            network_id String,
            network_key String,
            team_id String,
            outcome String,
            http_status UInt16,
            latency_micros UInt32,
            click_id String,
            transaction_id String,
            conversion_id String,
            remote_ip String,
            error String,
            request String
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(ts)
        ORDER BY (network_id, ts, id)",
        "CREATE TABLE IF NOT EXISTS destination_health (
            id String,
            ts DateTime,
            destination_id String,
            team_id String,
            healthy UInt8,
            changed UInt8,
            http_status UInt16,
            latency_millis UInt32,
            url String,
            error String
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(ts)
        ORDER BY (destination_id, ts, id)",
        "CREATE TABLE IF NOT EXISTS ingestion_errors (
            ts DateTime,
            topic String,
            partition Int32,
            offset Int64,
            error String,
            payload String
        ) ENGINE = ReplacingMergeTree
        ORDER BY (topic, partition, offset)",
    ],
}];
