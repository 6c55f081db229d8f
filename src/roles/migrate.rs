//! `traffoflex migrate`: ClickHouse tables and Kafka topics where configured, and the store's indexes.

use anyhow::Context;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::bus::kafka::create_topics;
use traffoflex_core::settings::BackendSettings;

pub async fn run(backends: &BackendSettings, kafka_replication: i32) -> anyhow::Result<()> {
    if let Some(url) = &backends.clickhouse_url {
        let ch = ClickHouse::new(url, &backends.clickhouse_database);
        let applied = ch.migrate().await.with_context(|| format!("migrating ClickHouse at {url}"))?;
        println!("ClickHouse {url} database {}: applied migrations {applied:?}", backends.clickhouse_database);
    }
    let store = traffoflex_core::store::open(backends).await.context("opening the configuration store")?;
    store.ensure_indexes().await.with_context(|| format!("creating {} indexes", store.backend_name()))?;
    println!("{} configuration store: indexes in place", store.backend_name());
    if let Some(brokers) = &backends.kafka_brokers {
        let created = create_topics(brokers, &backends.kafka_topic_prefix, kafka_replication)
            .await
            .with_context(|| format!("creating Kafka topics on {brokers}"))?;
        println!("Kafka {brokers}: created topics {created:?}");
    }
    Ok(())
}
