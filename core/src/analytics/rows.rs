//! The rows events become in ClickHouse, one struct per table, and the conversions from events.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::reports::{PostbackLogEntry, utc};
use super::to_micros;
use crate::events::{ClickEvent, ConversionEvent, HealthEvent, PostbackLogEvent, UnixMillis};

/// Seconds for a `DateTime` column; times before 1970 or past 2106 clamp to the range.
fn secs(ms: UnixMillis) -> u32 {
    u32::try_from(ms.div_euclid(1000)).unwrap_or(if ms < 0 { 0 } else { u32::MAX })
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ClickRow {
    pub click_id: String,
    pub ts: u32,
    pub campaign_id: String,
    pub campaign_key: String,
    pub stream_id: String,
    pub destination_id: String,
    pub traffic_source_id: String,
    pub team_id: String,
    pub trafficback: u8,
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
    pub subs: Vec<String>,
    pub cost_micros: i64,
    pub currency: String,
    pub is_bot: u8,
    pub is_unique: u8,
}

impl ClickRow {
    pub fn from_event(c: ClickEvent, trafficback: bool) -> Self {
        Self {
            ts: secs(c.ts),
            trafficback: u8::from(trafficback),
            cost_micros: to_micros(c.cost),
            is_bot: u8::from(c.is_bot),
            is_unique: u8::from(c.is_unique),
            click_id: c.click_id,
            campaign_id: c.campaign_id,
            campaign_key: c.campaign_key,
            stream_id: c.stream_id,
            destination_id: c.destination_id,
            traffic_source_id: c.traffic_source_id,
            team_id: c.team_id,
            trafficback_depth: c.trafficback_depth,
            source: c.source,
            source_click_id: c.source_click_id,
            ip: c.ip,
            country: c.country,
            region: c.region,
            city: c.city,
            isp: c.isp,
            asn: c.asn,
            device_type: c.device_type,
            os: c.os,
            browser: c.browser,
            language: c.language,
            user_agent: c.user_agent,
            referrer: c.referrer,
            utm_source: c.utm_source,
            utm_medium: c.utm_medium,
            utm_campaign: c.utm_campaign,
            utm_content: c.utm_content,
            utm_term: c.utm_term,
            subs: c.subs,
            currency: c.currency,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ConversionRow {
    pub conversion_id: String,
    pub ts: u32,
    pub revision: u64,
    pub network_id: String,
    pub transaction_id: String,
    pub click_id: String,
    pub click_ts: u32,
    pub status: String,
    pub payout_micros: i64,
    pub currency: String,
    pub revenue_micros: i64,
    pub campaign_id: String,
    pub stream_id: String,
    pub destination_id: String,
    pub traffic_source_id: String,
    pub team_id: String,
    pub attributed: u8,
}

impl From<ConversionEvent> for ConversionRow {
    fn from(c: ConversionEvent) -> Self {
        Self {
            ts: secs(c.ts),
            click_ts: secs(c.click_ts),
            status: c.status.as_str().to_owned(),
            payout_micros: to_micros(c.payout),
            revenue_micros: to_micros(c.revenue),
            attributed: u8::from(c.attributed),
            conversion_id: c.conversion_id,
            revision: c.revision,
            network_id: c.network_id,
            transaction_id: c.transaction_id,
            click_id: c.click_id,
            currency: c.currency,
            campaign_id: c.campaign_id,
            stream_id: c.stream_id,
            destination_id: c.destination_id,
            traffic_source_id: c.traffic_source_id,
            team_id: c.team_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct PostbackLogRow {
    pub id: String,
    pub ts: u32,
    pub network_id: String,
    pub network_key: String,
    pub team_id: String,
    pub outcome: String,
    pub http_status: u16,
    pub latency_micros: u32,
    pub click_id: String,
    pub transaction_id: String,
    pub conversion_id: String,
    pub remote_ip: String,
    pub error: String,
    pub request: String,
}

impl From<PostbackLogEvent> for PostbackLogRow {
    fn from(p: PostbackLogEvent) -> Self {
        Self {
            ts: secs(p.ts),
            id: p.id,
            network_id: p.network_id,
            network_key: p.network_key,
            team_id: p.team_id,
            outcome: p.outcome,
            http_status: p.http_status,
            latency_micros: p.latency_micros,
            click_id: p.click_id,
            transaction_id: p.transaction_id,
            conversion_id: p.conversion_id,
            remote_ip: p.remote_ip,
            error: p.error,
            request: p.request,
        }
    }
}

impl PostbackLogRow {
    /// The row as reports show it.
    pub fn into_entry(self) -> PostbackLogEntry {
        PostbackLogEntry {
            id: self.id,
            ts: utc(self.ts),
            network_id: self.network_id,
            network_key: self.network_key,
            team_id: self.team_id,
            outcome: self.outcome,
            http_status: self.http_status,
            latency_micros: self.latency_micros,
            click_id: self.click_id,
            transaction_id: self.transaction_id,
            conversion_id: self.conversion_id,
            remote_ip: self.remote_ip,
            error: self.error,
            request: self.request,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct HealthRow {
    pub id: String,
    pub ts: u32,
    pub destination_id: String,
    pub team_id: String,
    pub healthy: u8,
    pub changed: u8,
    pub http_status: u16,
    pub latency_millis: u32,
    pub url: String,
    pub error: String,
}

impl From<HealthEvent> for HealthRow {
    fn from(h: HealthEvent) -> Self {
        Self {
            ts: secs(h.ts),
            healthy: u8::from(h.healthy),
            changed: u8::from(h.changed),
            id: h.id,
            destination_id: h.destination_id,
            team_id: h.team_id,
            http_status: h.http_status,
            latency_millis: h.latency_millis,
            url: h.url,
            error: h.error,
        }
    }
}

/// A message that could not be decoded or stored, kept for a person to browse.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct IngestionErrorRow {
    pub ts: u32,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    /// The first bytes of the message, lossily as UTF-8.
    pub payload: String,
}

impl IngestionErrorRow {
    /// How much of a bad message is kept.
    pub const PAYLOAD_EXCERPT: usize = 2048;

    pub fn new(now: UnixMillis, topic: &str, partition: i32, offset: i64, error: String, payload: &[u8]) -> Self {
        let cut = &payload[..payload.len().min(Self::PAYLOAD_EXCERPT)];
        Self {
            ts: secs(now),
            topic: topic.to_owned(),
            partition,
            offset,
            error,
            payload: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_whole_seconds_within_datetime_range() {
        assert_eq!(secs(1_764_000_000_999), 1_764_000_000);
        assert_eq!(secs(-5), 0);
        assert_eq!(secs(i64::MAX), u32::MAX);
    }

    #[test]
    fn a_bad_payload_is_cut_to_an_excerpt() {
        let row = IngestionErrorRow::new(0, "t", 1, 2, "bad".into(), &[b'x'; 10_000]);
        assert_eq!(row.payload.len(), IngestionErrorRow::PAYLOAD_EXCERPT);
    }
}
