//! The `traffoflex` binary: one subcommand per role, plus `up` that runs them all in one process.

mod alloc;
mod roles;
mod serve;
mod shutdown;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use traffoflex_core::settings::BackendSettings;
use traffoflex_core::telemetry::{LogFormat, init_logging};

#[derive(Debug, Parser)]
#[command(
    name = "traffoflex",
    version,
    about = "Paid-traffic routing, click and conversion tracking, campaign analytics"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, env = "TRAFFOFLEX_LOG_FORMAT", value_enum, default_value_t, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every role in one process (embedded backends unless backend flags are given).
    Up(Box<roles::up::UpArgs>),
    /// The admin and automation API (and the admin UI).
    Api(roles::api::ApiArgs),
    /// The public click entry points.
    Traffic(roles::traffic::TrafficArgs),
    /// The public postback entry points.
    Postback(roles::postback::PostbackArgs),
    /// The event ingester: Kafka to ClickHouse.
    Ingest(IngestArgs),
    /// The Kubernetes operator.
    Operator(roles::operator::OperatorArgs),
    /// Print every CustomResourceDefinition as YAML.
    Crds,
    /// Create the ClickHouse tables, the Kafka topics and the MongoDB indexes.
    Migrate {
        #[command(flatten)]
        backends: BackendSettings,
        /// Replication factor of topics it creates.
        #[arg(long, env = "TRAFFOFLEX_KAFKA_REPLICATION", default_value_t = 1)]
        kafka_replication: i32,
    },
}

/// Settings of the `ingest` role.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    backends: BackendSettings,
    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    #[arg(long, env = "TRAFFOFLEX_INGEST_LISTEN", default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// Kafka consumer group of the ingesters.
    #[arg(long, env = "TRAFFOFLEX_INGEST_GROUP", default_value = "traffoflex-ingest")]
    group: String,
    /// Most messages per ClickHouse insert.
    #[arg(long, env = "TRAFFOFLEX_INGEST_BATCH_ROWS", default_value_t = 50_000)]
    batch_rows: usize,
    /// Longest wait, in milliseconds, between a batch's first message and its insert.
    #[arg(long, env = "TRAFFOFLEX_INGEST_LINGER_MS", default_value_t = 500)]
    linger_ms: u64,
}

fn run(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traffoflex: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    alloc::configure();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("traffoflex: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Crds => {
            print!("{}", traffoflex_crds::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Migrate { backends, kafka_replication } => {
            run(runtime.block_on(roles::migrate::run(&backends, kafka_replication)))
        }
        Command::Ingest(args) => run(runtime.block_on(roles::ingest::run(args))),
        Command::Up(args) => run(runtime.block_on(roles::up::run(*args))),
        Command::Api(args) => run(runtime.block_on(roles::api::run(args))),
        Command::Traffic(args) => run(runtime.block_on(roles::traffic::run(args))),
        Command::Postback(args) => run(runtime.block_on(roles::postback::run(args))),
        Command::Operator(args) => run(runtime.block_on(roles::operator::run(args))),
    }
}
