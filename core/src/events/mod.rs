//! The events every role emits — clicks, trafficback, conversions, postback logs, destination health — and
//! their versioned wire format (see `docs/events.md`).

mod binary;
mod wire;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use binary::{BINARY_FORMAT, BinaryError, ClickRef};
pub use wire::{DecodeError, WIRE_VERSION, decode, encode};

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

/// The current time as [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    chrono::Utc::now().timestamp_millis()
}

/// One event as it travels on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A click that was sent to a destination.
    Click(ClickEvent),
    /// A click that went to the campaign's trafficback URL (no stream or no destination).
    Trafficback(ClickEvent),
    /// A conversion, or a status change of one (same network and transaction ID, higher `revision`).
    Conversion(ConversionEvent),
    /// One postback request as the postback service answered it.
    PostbackLog(PostbackLogEvent),
    /// One destination health check.
    DestinationHealth(HealthEvent),
}

impl Event {
    /// The unique ID of this event: replays of the same event carry the same ID.
    pub fn id(&self) -> &str {
        match self {
            Event::Click(c) | Event::Trafficback(c) => &c.click_id,
            Event::Conversion(c) => &c.conversion_id,
            Event::PostbackLog(p) => &p.id,
            Event::DestinationHealth(h) => &h.id,
        }
    }

    /// The topic family the event belongs on.
    pub fn topic(&self) -> crate::bus::Topic {
        use crate::bus::Topic;
        match self {
            Event::Click(_) | Event::Trafficback(_) => Topic::Clicks,
            Event::Conversion(_) => Topic::Conversions,
            Event::PostbackLog(_) => Topic::PostbackLogs,
            Event::DestinationHealth(_) => Topic::Health,
        }
    }

    /// The partitioning key: events with the same key keep their order.
    pub fn key(&self) -> String {
        match self {
            Event::Click(c) | Event::Trafficback(c) => c.click_id.clone(),
            Event::Conversion(c) => format!("{}/{}", c.network_id, c.transaction_id),
            Event::PostbackLog(p) => p.network_id.clone(),
            Event::DestinationHealth(h) => h.destination_id.clone(),
        }
    }
}

/// A click: what was asked, what we learnt about the visitor, and where they were sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClickEvent {
    pub click_id: String,
    pub ts: UnixMillis,
    pub campaign_id: String,
    pub campaign_key: String,
    pub stream_id: String,
    pub destination_id: String,
    pub traffic_source_id: String,
    pub team_id: String,
    /// How many times this visitor had already been through trafficback before this click.
    pub trafficback_depth: u8,
    pub source: String,
    pub source_click_id: String,
    pub ip: String,
    pub country: String,
    pub region: String,
    pub city: String,
    pub isp: String,
    pub asn: u32,
    pub device_type: String,
    pub os: String,
    pub browser: String,
    pub language: String,
    pub user_agent: String,
    pub referrer: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_content: String,
    pub utm_term: String,
    /// `sub1` … `sub10`, in order; missing ones are empty.
    pub subs: Vec<String>,
    pub cost: Decimal,
    pub currency: String,
    pub is_bot: bool,
    pub is_unique: bool,
}

/// Conversion statuses after normalisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConversionStatus {
    #[default]
    Approved,
    Pending,
    Rejected,
}

impl ConversionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversionStatus::Approved => "approved",
            ConversionStatus::Pending => "pending",
            ConversionStatus::Rejected => "rejected",
        }
    }
}

/// A conversion reported by an affiliate network. A status change is the same conversion with a higher
/// `revision`; reports count the highest revision only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConversionEvent {
    pub conversion_id: String,
    /// When the conversion was first accepted; unchanged by status updates.
    pub ts: UnixMillis,
    /// Increases with every status change of the same conversion.
    pub revision: u64,
    pub network_id: String,
    pub transaction_id: String,
    pub click_id: String,
    /// When the click happened, when the click ID told us.
    pub click_ts: UnixMillis,
    pub status: ConversionStatus,
    /// The payout as the network reported it, in `currency`.
    pub payout: Decimal,
    pub currency: String,
    /// The payout in the report currency.
    pub revenue: Decimal,
    pub campaign_id: String,
    pub stream_id: String,
    pub destination_id: String,
    pub traffic_source_id: String,
    pub team_id: String,
    /// False when the click could not be identified; the conversion still counts.
    pub attributed: bool,
}

/// One postback request and how it was answered. Secrets are redacted before the event is made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PostbackLogEvent {
    pub id: String,
    pub ts: UnixMillis,
    pub network_id: String,
    pub network_key: String,
    pub team_id: String,
    /// `accepted`, `duplicate`, `updated`, `rejected` or `error`.
    pub outcome: String,
    pub http_status: u16,
    pub latency_micros: u32,
    pub click_id: String,
    pub transaction_id: String,
    pub conversion_id: String,
    pub remote_ip: String,
    pub error: String,
    /// The request (method, query or body excerpt) with secrets redacted.
    pub request: String,
}

/// The result of one destination health check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthEvent {
    pub id: String,
    pub ts: UnixMillis,
    pub destination_id: String,
    pub team_id: String,
    pub healthy: bool,
    /// Whether this check changed the destination's health state.
    pub changed: bool,
    pub http_status: u16,
    pub latency_millis: u32,
    pub url: String,
    pub error: String,
}
