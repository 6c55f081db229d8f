//! The `traffoflex` binary: one subcommand per role, plus `up` that runs them all in one process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use traffoflex_core::settings::BackendSettings;

#[derive(Debug, Parser)]
#[command(
    name = "traffoflex",
    version,
    about = "Paid-traffic routing, click and conversion tracking, campaign analytics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every role in one process (embedded backends unless backend flags are given).
    Up {
        #[command(flatten)]
        backends: BackendSettings,
        /// Seed demo objects and an approved admin when the store is empty.
        #[arg(long)]
        demo: bool,
    },
    /// The admin and automation API (and the admin UI).
    Api,
    /// The public click entry points.
    Traffic,
    /// The public postback entry points.
    Postback,
    /// The event ingester: Kafka to ClickHouse.
    Ingest,
    /// The Kubernetes operator.
    Operator,
    /// Print every CustomResourceDefinition as YAML.
    Crds,
    /// Create the ClickHouse tables, the Kafka topics and the MongoDB indexes.
    Migrate {
        #[command(flatten)]
        backends: BackendSettings,
    },
}

fn not_yet(role: &str) -> ExitCode {
    eprintln!("traffoflex: the `{role}` role is not part of this build yet");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", traffoflex_crds::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Up { .. } => not_yet("up"),
        Command::Api => not_yet("api"),
        Command::Traffic => not_yet("traffic"),
        Command::Postback => not_yet("postback"),
        Command::Ingest => not_yet("ingest"),
        Command::Operator => not_yet("operator"),
        Command::Migrate { .. } => not_yet("migrate"),
    }
}
