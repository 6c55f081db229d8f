//! Kafka on `rdkafka`: an idempotent producer that acknowledges a batch only when every message is written,
//! a consumer-group reader that hands out batches and commits offsets only when told, and topic creation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use tokio::sync::Notify;

use super::{BusError, Topic};
use crate::events::{self, Event};

fn kafka_err(e: rdkafka::error::KafkaError) -> BusError {
    BusError::Kafka(e.to_string())
}

/// Publishes events; a batch counts as delivered only when Kafka acknowledged every message (acks=all,
/// idempotent, so retries inside the client never duplicate).
///
/// A batch's messages share one [`BatchAcks`]: each delivery report counts down on it and the last one wakes
/// the publisher, so a batch of thousands costs one wake-up rather than a future and a channel per message.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: Arc<ThreadedProducer<BatchContext>>,
    prefix: String,
}

/// What the delivery reports of one batch count down.
struct BatchAcks {
    left: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    done: Notify,
}

impl BatchAcks {
    fn new(messages: usize) -> Self {
        Self {
            left: AtomicUsize::new(messages),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            done: Notify::new(),
        }
    }

    /// One message's outcome.
    fn report(&self, error: Option<String>) {
        if let Some(e) = error {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        while self.left.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }
}

/// Routes each delivery report to its batch.
struct BatchContext;

impl ClientContext for BatchContext {}

impl ProducerContext for BatchContext {
    type DeliveryOpaque = Arc<BatchAcks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<BatchAcks>) {
        acks.report(result.as_ref().err().map(|(e, _)| e.to_string()));
    }
}

impl KafkaProducer {
    pub fn new(brokers: &str, prefix: &str) -> Result<Self, BusError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000")
            .create_with_context(BatchContext)
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(Self { producer: Arc::new(producer), prefix: prefix.to_owned() })
    }

    /// Sends every event and waits for all acknowledgements.
    pub async fn publish(&self, batch: &[Event]) -> Result<(), BusError> {
        let encoded: Vec<(Topic, String, Vec<u8>)> =
            batch.iter().map(|e| (e.topic(), e.key(), events::encode(e))).collect();
        let raw: Vec<(Topic, &[u8], &[u8])> =
            encoded.iter().map(|(t, k, p)| (*t, k.as_bytes(), p.as_slice())).collect();
        self.publish_raw(&raw).await
    }

    /// Sends messages already encoded — `(topic family, key, payload)` — to `topic.name(prefix)`, and waits for
    /// every acknowledgement, like [`KafkaProducer::publish`]. While the client's queue is full it waits for
    /// room; a message the client refuses outright counts as failed.
    pub async fn publish_raw(&self, batch: &[(Topic, &[u8], &[u8])]) -> Result<(), BusError> {
        let names: Vec<(Topic, String)> = Topic::ALL.iter().map(|t| (*t, t.name(&self.prefix))).collect();
        let mut targets = Vec::with_capacity(batch.len());
        for (topic, _, _) in batch {
            match names.iter().find(|(t, _)| t == topic) {
                Some((_, name)) => targets.push(name.as_str()),
                None => return Err(BusError::Config(format!("topic {topic:?} is not in Topic::ALL"))),
            }
        }
        let acks = Arc::new(BatchAcks::new(batch.len()));
        for ((_, key, payload), name) in batch.iter().zip(targets) {
            let mut record = BaseRecord::with_opaque_to(name, Arc::clone(&acks)).key(*key).payload(*payload);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        acks.report(Some(e.to_string()));
                        break;
                    }
                }
            }
        }
        acks.wait().await;
        let failed = acks.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first_error = acks.first_error.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
            return Err(BusError::Delivery { failed, total: batch.len(), first_error });
        }
        Ok(())
    }

    /// Waits until everything queued in the client is delivered, or the timeout passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer.flush(timeout).map_err(kafka_err)
    }
}

/// One message taken from Kafka, owned, with where it came from.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

/// How far a consumer is behind on one partition it is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The offset the next message written to the partition gets.
    pub high_watermark: i64,
    /// The next offset this consumer will store: what it committed, or before its first commit on the partition,
    /// its read position.
    pub position: i64,
}

impl PartitionLag {
    /// Messages in the partition not yet stored by this consumer.
    pub fn messages(&self) -> u64 {
        u64::try_from(self.high_watermark.saturating_sub(self.position)).unwrap_or(0)
    }
}

/// A consumer-group member that reads batches and commits only what the caller says is stored.
pub struct KafkaConsumer {
    consumer: StreamConsumer,
    /// The offsets this member committed, per (topic, partition).
    committed: Mutex<HashMap<(String, i32), i64>>,
}

impl KafkaConsumer {
    /// Joins `group` on `topics`. With no committed offset the group starts from the earliest message.
    pub fn new(brokers: &str, group: &str, topics: &[String]) -> Result<Self, BusError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(kafka_err)?;
        Ok(Self { consumer, committed: Mutex::new(HashMap::new()) })
    }

    /// Waits for the first message up to `max_wait`, then takes what else arrives until the batch has `max`
    /// messages or `linger` has passed since the first one. An error after the first message ends the batch
    /// (what was read is returned, never dropped); an error before it is returned, and is usually passing
    /// (a topic not yet known to the broker, a rebalance): callers log it and call again.
    pub async fn next_batch(
        &self,
        max: usize,
        max_wait: Duration,
        linger: Duration,
    ) -> Result<Vec<Received>, BusError> {
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(max_wait, self.consumer.recv()).await {
            Err(_) => return Ok(batch),
            Ok(m) => m.map_err(kafka_err)?,
        };
        batch.push(owned(&first));
        // One deadline for the whole batch: messages already fetched are taken without a timer each.
        let deadline = tokio::time::Instant::now() + linger;
        let _ = tokio::time::timeout_at(deadline, async {
            while batch.len() < max {
                match self.consumer.recv().await {
                    Ok(m) => batch.push(owned(&m)),
                    // Hand out what was read: dropping it would let a later commit skip it.
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error; ending the batch early");
                        break;
                    }
                }
            }
        })
        .await;
        Ok(batch)
    }

    /// Commits, for each partition in `batch`, the offset after its last message: call only once the batch is
    /// stored, so a crash before this re-delivers it.
    pub fn commit(&self, batch: &[Received]) -> Result<(), BusError> {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
            let e = next.entry((&m.topic, m.partition)).or_insert(m.offset + 1);
            *e = (*e).max(m.offset + 1);
        }
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(kafka_err)?;
        }
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(kafka_err)?;
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        for ((topic, partition), offset) in next {
            committed.insert((topic.to_owned(), partition), offset);
        }
        Ok(())
    }

    /// The lag of every partition assigned to this member whose position is known (it has read or committed
    /// there). Asks the partition leaders for their high watermarks, waiting up to `timeout` for each: call it
    /// from a blocking context (`spawn_blocking`), never on the async runtime.
    pub fn lag(&self, timeout: Duration) -> Result<Vec<PartitionLag>, BusError> {
        let assigned = self.consumer.assignment().map_err(kafka_err)?;
        let positions = self.consumer.position().map_err(kafka_err)?;
        let committed = {
            let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            // A partition that moved to another member comes back with that member's commits: forget ours.
            committed.retain(|(topic, partition), _| assigned.find_partition(topic, *partition).is_some());
            committed.clone()
        };
        let mut lags = Vec::new();
        for tp in assigned.elements() {
            let (topic, partition) = (tp.topic(), tp.partition());
            let read = positions.find_partition(topic, partition).and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            let Some(position) = committed.get(&(topic.to_owned(), partition)).copied().or(read) else {
                continue;
            };
            let (_, high_watermark) = self.consumer.fetch_watermarks(topic, partition, timeout).map_err(kafka_err)?;
            lags.push(PartitionLag { topic: topic.to_owned(), partition, high_watermark, position });
        }
        Ok(lags)
    }
}

fn owned(m: &BorrowedMessage<'_>) -> Received {
    Received {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Creates every topic of [`Topic::ALL`] under `prefix` with its partitions and retention; topics that exist
/// are left as they are. Returns the names created.
pub async fn create_topics(brokers: &str, prefix: &str, replication: i32) -> Result<Vec<String>, BusError> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().map_err(|e| BusError::Config(e.to_string()))?;
    let names: Vec<String> = Topic::ALL.iter().map(|t| t.name(prefix)).collect();
    let retention: Vec<String> = Topic::ALL.iter().map(|t| t.spec().retention.as_millis().to_string()).collect();
    let new: Vec<NewTopic<'_>> = Topic::ALL
        .iter()
        .zip(&names)
        .zip(&retention)
        .map(|((t, name), ms)| {
            NewTopic::new(name, t.spec().partitions, TopicReplication::Fixed(replication)).set("retention.ms", ms)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new, &opts).await.map_err(kafka_err)?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BusError::Kafka(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
mod batch_acks_tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_done_when_every_message_reported_and_keeps_the_first_error() {
        let acks = Arc::new(BatchAcks::new(3));
        let waiter = tokio::spawn({
            let acks = Arc::clone(&acks);
            async move { acks.wait().await }
        });
        acks.report(None);
        acks.report(Some("first".to_owned()));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one message is still out");
        acks.report(Some("second".to_owned()));
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("done").expect("the waiter");
        assert_eq!(acks.failed.load(Ordering::Relaxed), 2);
        assert_eq!(acks.first_error.lock().unwrap().as_deref(), Some("first"));
        // An empty batch is done at once.
        tokio::time::timeout(Duration::from_secs(5), BatchAcks::new(0).wait()).await.expect("done at once");
    }
}
