//! `traffoflex ingest`: the Kafka-to-ClickHouse ingester as its own process.

use std::time::Duration;

use anyhow::Context;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::ingest::{BatchSettings, Ingester};

use crate::IngestArgs;

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let b = &args.backends;
    let brokers =
        b.kafka_brokers.as_deref().context("the ingester needs --kafka-brokers (or TRAFFOFLEX_KAFKA_BROKERS)")?;
    let url =
        b.clickhouse_url.as_deref().context("the ingester needs --clickhouse-url (or TRAFFOFLEX_CLICKHOUSE_URL)")?;
    let sink = ClickHouse::new(url, &b.clickhouse_database);
    sink.migrate().await.with_context(|| format!("preparing ClickHouse at {url}"))?;

    let telemetry = Telemetry::new();
    let probe = sink.clone();
    telemetry.readiness_check("clickhouse", move || {
        let probe = probe.clone();
        async move { probe.ping().await.map_err(|e| e.to_string()) }
    });
    let batch = BatchSettings { max_rows: args.batch_rows, linger: Duration::from_millis(args.linger_ms) };
    let ingester = Ingester::new(brokers, &b.kafka_topic_prefix, &args.group, sink, batch, &telemetry)?;

    let shutdown = crate::shutdown::on_signal();
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "ingest health and metrics");
    let ops = axum::serve(listener, telemetry.router()).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let ops = tokio::spawn(async move { ops.await });
    ingester.run(shutdown.clone()).await?;
    shutdown.cancel();
    ops.await.context("ops server task")?.context("ops server")?;
    Ok(())
}
