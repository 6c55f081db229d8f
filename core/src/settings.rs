//! Settings shared by every role: backend locations, from flags or the environment.

use clap::Args;

/// Where the backends are. With none given, a role runs on the embedded backends in its data directory.
#[derive(Debug, Clone, Default, Args)]
pub struct BackendSettings {
    /// MongoDB connection string for configuration and state (e.g. mongodb://127.0.0.1:27017/traffoflex).
    #[arg(long, env = "TRAFFOFLEX_MONGO_URI")]
    pub mongo_uri: Option<String>,
    /// ClickHouse HTTP URL for analytics (e.g. http://127.0.0.1:8123).
    #[arg(long, env = "TRAFFOFLEX_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database name.
    #[arg(long, env = "TRAFFOFLEX_CLICKHOUSE_DATABASE", default_value = "traffoflex")]
    pub clickhouse_database: String,
    /// Kafka bootstrap servers, comma-separated (e.g. 127.0.0.1:9092).
    #[arg(long, env = "TRAFFOFLEX_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Prefix of every Kafka topic name.
    #[arg(long, env = "TRAFFOFLEX_KAFKA_TOPIC_PREFIX", default_value = "traffoflex.")]
    pub kafka_topic_prefix: String,
    /// Directory of the embedded backends (SQLite files, the local click log).
    #[arg(long, env = "TRAFFOFLEX_DATA_DIR", default_value = "./.traffoflex")]
    pub data_dir: std::path::PathBuf,
}
