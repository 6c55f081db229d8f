//! The Kafka sink: a shipped batch goes to Kafka through the idempotent, acks=all producer of
//! `traffoflex_core::bus::kafka`, each record to its topic family's topic under the deployment's prefix. The
//! batch counts as shipped only when Kafka acknowledged every message; a partial failure sends the whole batch
//! again (the ingester's tables dedupe on the event ID).

use traffoflex_core::bus::Topic;
use traffoflex_core::bus::kafka::KafkaProducer;

use super::shipper::{Batch, Sink, SinkError};

/// Ships the click log to Kafka.
#[derive(Clone)]
pub struct KafkaSink {
    producer: KafkaProducer,
}

impl KafkaSink {
    pub fn new(producer: KafkaProducer) -> Self {
        Self { producer }
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let messages: Vec<(Topic, &[u8], &[u8])> = batch.iter().map(|r| (r.topic, r.key, r.payload)).collect();
        self.producer.publish_raw(&messages).await?;
        Ok(())
    }
}
