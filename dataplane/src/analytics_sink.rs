//! Shipping the click log straight into analytics, for single-process installs without Kafka
//! (`traffoflex up` on the embedded backends): the same log, the same at-least-once delivery, and the
//! analytics store's idempotent tables make redelivery harmless.

use std::sync::Arc;

use async_trait::async_trait;
use traffoflex_core::analytics::Analytics;
use traffoflex_core::analytics::rows::IngestionErrorRow;
use traffoflex_core::events::{self, now_millis};

use crate::clicklog::{Batch, Sink, SinkError};

/// A [`Sink`] that stores each batch in an [`Analytics`] backend; undecodable records become ingestion errors.
pub struct AnalyticsSink {
    analytics: Arc<dyn Analytics>,
}

impl AnalyticsSink {
    pub fn new(analytics: Arc<dyn Analytics>) -> Self {
        Self { analytics }
    }
}

#[async_trait]
impl Sink for AnalyticsSink {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let mut good = Vec::with_capacity(batch.len());
        let mut bad = Vec::new();
        // The local log has no broker offsets: an error's "offset" is its time in microseconds plus its place in
        // the batch, unique enough to keep distinct errors apart.
        let base = now_millis().saturating_mul(1000);
        for (i, r) in batch.iter().enumerate() {
            match events::decode(r.payload) {
                Ok(e) => good.push(e),
                Err(e) => {
                    let topic = format!("local.{}", r.topic.suffix());
                    let offset = base.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
                    bad.push(IngestionErrorRow::new(now_millis(), &topic, 0, offset, e.to_string(), r.payload));
                }
            }
        }
        self.analytics.insert_events(good).await.map_err(|e| SinkError::Other(e.to_string()))?;
        self.analytics.insert_ingestion_errors(&bad).await.map_err(|e| SinkError::Other(e.to_string()))
    }
}
