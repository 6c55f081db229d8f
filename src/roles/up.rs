//! `traffoflex up`: every role that is built, in one process, on the embedded backends unless backend flags
//! point at MongoDB, ClickHouse and Kafka. The roles run the same code as their own processes do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::analytics::open_analytics;
use traffoflex_core::bus::kafka::{KafkaProducer, create_topics};
use traffoflex_core::settings::BackendSettings;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::analytics_sink::AnalyticsSink;
use traffoflex_dataplane::clicklog::{KafkaSink, Sink};
use traffoflex_dataplane::ingest::{BatchSettings, Ingester};

use super::api::{AdminBootstrap, ApiFlags};
use super::postback::{CurrencyArgs, OutboundArgs, Postback, PostbackSettings};
use super::traffic::{ClickSettings, Traffic, build};

/// Settings of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub backends: BackendSettings,
    /// Seed demo objects when the store is empty, and print example URLs.
    #[arg(long)]
    pub demo: bool,
    /// Where the click entry points answer.
    #[arg(long, env = "TRAFFOFLEX_TRAFFIC_LISTEN", default_value = "127.0.0.1:8081")]
    pub traffic_listen: SocketAddr,
    /// Where the postback entry points answer.
    #[arg(long, env = "TRAFFOFLEX_POSTBACK_LISTEN", default_value = "127.0.0.1:8082")]
    pub postback_listen: SocketAddr,
    #[command(flatten)]
    pub clicks: ClickSettings,
    #[command(flatten)]
    pub outbound: OutboundArgs,
    #[command(flatten)]
    pub currency: CurrencyArgs,
    /// Where the API (and the admin UI) answers.
    #[arg(long, env = "TRAFFOFLEX_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiFlags,
    #[command(flatten)]
    pub admin: AdminBootstrap,
}

/// GETs `path` on `addr` over plain HTTP/1.0; the status code, if anything answered.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

async fn wait_ready(addr: SocketAddr, deadline: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if http_status(addr, "/readyz").await == Some(200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{addr} did not become ready within {deadline:?}")
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let b = &args.backends;
    let store = traffoflex_core::store::open(b).await.context("opening the configuration store")?;
    store.ensure_indexes().await.context("preparing the configuration store")?;
    let analytics = open_analytics(b).await.context("opening analytics")?;
    analytics.migrate().await.context("preparing analytics")?;
    let store_backend = store.backend_name();
    traffoflex_api::auth::ensure_default_team(store.as_ref()).await.context("preparing the configuration store")?;
    args.admin.apply(store.as_ref()).await?;
    let seeded = if args.demo { super::demo::seed(store.as_ref()).await? } else { None };
    let demo_admin = if args.demo { super::demo::seed_admin(store.as_ref()).await? } else { None };

    let telemetry = Telemetry::new();
    // The postback service answers on its own listener with its own `/metrics` and `/readyz`.
    let postback_telemetry = Telemetry::new();
    let api_telemetry = Telemetry::new();
    let api_store = Arc::clone(&store);
    let shutdown = crate::shutdown::on_signal();
    let mut background = Vec::new();
    let (traffic, postback): (Traffic, Postback) = match (&b.kafka_brokers, &b.clickhouse_url) {
        (Some(brokers), Some(ch_url)) => {
            create_topics(brokers, &b.kafka_topic_prefix, 1).await.context("creating Kafka topics")?;
            let sink = KafkaSink::new(KafkaProducer::new(brokers, &b.kafka_topic_prefix)?);
            let ch = ClickHouse::new(ch_url, &b.clickhouse_database);
            let ingester = Ingester::new(
                brokers,
                &b.kafka_topic_prefix,
                "traffoflex-ingest",
                ch,
                BatchSettings::default(),
                &telemetry,
            )?;
            background.push(tokio::spawn(ingester.run(shutdown.clone())));
            start_roles(
                &args,
                store,
                Arc::clone(&analytics),
                Arc::new(sink),
                &telemetry,
                &postback_telemetry,
                &shutdown,
            )
            .await?
        }
        (Some(_), None) => anyhow::bail!("with --kafka-brokers, give --clickhouse-url too: the ingester writes there"),
        (None, _) => {
            let sink = Arc::new(AnalyticsSink::new(Arc::clone(&analytics)));
            start_roles(&args, store, Arc::clone(&analytics), sink, &telemetry, &postback_telemetry, &shutdown).await?
        }
    };
    let app = traffic.router.merge(telemetry.router());
    let listener = tokio::net::TcpListener::bind(args.traffic_listen)
        .await
        .with_context(|| format!("listening on {}", args.traffic_listen))?;
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await });
    let pb_app = postback.router.clone().merge(postback_telemetry.router());
    let pb_listener = tokio::net::TcpListener::bind(args.postback_listen)
        .await
        .with_context(|| format!("listening on {}", args.postback_listen))?;
    let pb_serve = axum::serve(pb_listener, pb_app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let pb_server = tokio::spawn(async move { pb_serve.await });
    let shared = super::api::DataPlaneFlags {
        reload_token: args.clicks.reload_token.clone(),
        health_allow_private: args.clicks.health_allow_private,
        trusted_proxies: args.clicks.trusted_proxies.clone(),
    };
    let api_app = super::api::build(&args.api, &shared, api_store, Arc::clone(&analytics), &api_telemetry)?;
    let api_listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("listening on {}", args.api_listen))?;
    let api_serve = axum::serve(api_listener, api_app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let api_server = tokio::spawn(async move { api_serve.await });
    wait_ready(args.api_listen, Duration::from_secs(30)).await?;
    wait_ready(args.traffic_listen, Duration::from_secs(30)).await?;
    wait_ready(args.postback_listen, Duration::from_secs(30)).await?;

    let api_url = format!("http://{}", args.api_listen);
    let traffic_url = format!("http://{}", args.traffic_listen);
    let postback_url = format!("http://{}", args.postback_listen);
    if let Some(s) = &seeded {
        println!("Demo data seeded. Try a click:");
        println!("  curl -i '{traffic_url}/c/{}?country=DE&sub1=hello'", s.campaign_key);
        println!(
            "  Affiliate network `{}` (token `{}`) is ready for postbacks.",
            s.network_key,
            super::demo::NETWORK_TOKEN
        );
        println!(
            "  curl -i '{postback_url}/postback/{}?clickid=<X-Click-Id>&txid=order-1&payout=12.50&currency=USD&status=approved&token={}'",
            s.network_key,
            super::demo::NETWORK_TOKEN
        );
    }
    if let Some((email, password)) = &demo_admin {
        println!("Demo admin (shown once): {email} / {password}");
        println!(
            "  curl -i -c cookies.txt {api_url}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}'"
        );
        println!("  then e.g.: curl -b cookies.txt '{api_url}/api/v1/reports/overview'");
    }
    // The last line, so scripts can wait for it.
    println!(
        "TraffoFlex is up in {} ms ({store_backend} store, {} analytics): api {api_url} traffic {traffic_url} postback {postback_url}",
        started.elapsed().as_millis(),
        analytics.backend_name(),
    );
    shutdown.cancelled().await;
    api_server.await.context("server task")?.context("serving the API")?;
    server.await.context("server task")?.context("serving traffic")?;
    pb_server.await.context("server task")?.context("serving postbacks")?;
    traffic.log.close().await;
    postback.close().await;
    for task in background {
        task.await.context("background task")??;
    }
    Ok(())
}

/// Builds the traffic and postback services, both shipping their event logs to `sink`.
async fn start_roles<S: Sink>(
    args: &UpArgs,
    store: Arc<dyn traffoflex_core::store::ConfigStore>,
    analytics: Arc<dyn traffoflex_core::analytics::Analytics>,
    sink: Arc<S>,
    telemetry: &Telemetry,
    postback_telemetry: &Telemetry,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(Traffic, Postback)> {
    let data_dir = &args.backends.data_dir;
    let traffic = build(
        &args.clicks,
        data_dir,
        Arc::clone(&store),
        Some(Arc::clone(&analytics)),
        Arc::clone(&sink),
        telemetry,
        shutdown.clone(),
    )
    .await?;
    let settings = PostbackSettings::for_up(&args.clicks, &args.outbound, &args.currency);
    let postback =
        super::postback::build(&settings, data_dir, store, Some(analytics), sink, postback_telemetry, shutdown.clone())
            .await?;
    Ok((traffic, postback))
}
