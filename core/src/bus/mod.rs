//! The event bus: topic names and settings, and the Kafka producer and consumer wrappers.

pub mod kafka;

use std::time::Duration;

/// The topic families. Every name gets the deployment's prefix (default `traffoflex.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Clicks and trafficback clicks.
    Clicks,
    /// Conversions and their status changes.
    Conversions,
    /// One message per postback request.
    PostbackLogs,
    /// Destination health checks.
    Health,
}

impl Topic {
    pub const ALL: [Topic; 4] = [Topic::Clicks, Topic::Conversions, Topic::PostbackLogs, Topic::Health];

    /// The name without the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Clicks => "clicks",
            Topic::Conversions => "conversions",
            Topic::PostbackLogs => "postback-logs",
            Topic::Health => "destination-health",
        }
    }

    /// The full topic name under `prefix`.
    pub fn name(self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix())
    }

    /// How the topic is created by `traffoflex migrate`.
    pub fn spec(self) -> TopicSpec {
        let day = Duration::from_secs(24 * 3600);
        match self {
            Topic::Clicks => TopicSpec { partitions: 12, retention: 7 * day },
            Topic::Conversions => TopicSpec { partitions: 6, retention: 30 * day },
            Topic::PostbackLogs => TopicSpec { partitions: 6, retention: 7 * day },
            Topic::Health => TopicSpec { partitions: 3, retention: 7 * day },
        }
    }
}

/// Partitions and retention of a topic. Retention outlasts any ingester outage we plan for: the ingester
/// re-reads from its committed offsets, so what Kafka still holds is never lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: i32,
    pub retention: Duration,
}

/// Why the bus refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Kafka client configuration: {0}")]
    Config(String),
    #[error("Kafka did not acknowledge {failed} of {total} messages: {first_error}")]
    Delivery { failed: usize, total: usize, first_error: String },
    #[error("Kafka: {0}")]
    Kafka(String),
}
