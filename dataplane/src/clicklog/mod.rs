//! The click log: the traffic service's local write-ahead log of events, which is its queue to Kafka, its spool
//! while Kafka is away and its replay after a crash, in one mechanism.
//!
//! ```text
//! append ──► queue ──► writer thread ──► segments on disk ──► shipper ──► Sink (Kafka)
//!  (a push)   (Vec)    one write + one     <dir>/<base>.seg     batches,    acknowledged ──► cursor
//!                      fdatasync a batch                        retries                     advances,
//!                                                                                           segments go
//! ```
//!
//! * **Group commit** ([`writer`]): appends only push onto a queue; one writer thread takes everything that
//!   arrived while its previous fsync ran, writes it, fdatasyncs once and wakes those appenders together. In
//!   [`Durability::Durable`] (the default) [`ClickLog::append`] resolves once the record is on disk; in
//!   [`Durability::Fast`] at once.
//! * **Storage** ([`segment`]): segment files of length-prefixed, CRC-checked records, rolled at
//!   [`ClickLogSettings::segment_bytes`] and, by default, preallocated (zero-filled ahead of use) so a commit
//!   writes no file metadata. On open, [`recovery`] cuts a torn tail after the last whole record.
//! * **Bounded**: past [`ClickLogSettings::max_bytes`] appends are dropped and counted — never an error the
//!   caller must handle, never a wait: the redirect goes on.
//! * **Shipping** ([`shipper`]): a thread of its own reads what is on disk in order, sends it in batches to a [`Sink`]
//!   (e.g. [`KafkaSink`]), and only after the sink acknowledged the batch persists the cursor and deletes the
//!   segments wholly shipped. A failing sink is retried with backoff; meanwhile the log grows.
//! * **Crash safety**: a restart re-ships everything after the persisted cursor (at least once; the ingester
//!   dedupes on event IDs). What a durable append reported [`Appended::Durable`] is never lost.
//! * **Shutdown**: [`ClickLog::close`] writes and syncs what is queued, then the shipper makes a last attempt
//!   (bounded by [`ShipSettings::drain_timeout`]); what it could not ship stays on disk for the next start.
//!   Dropping the log does the same, without waiting for the shipper.

mod cursor;
mod kafka_sink;
mod metrics;
mod recovery;
mod segment;
mod shipper;
mod spare;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use traffoflex_core::bus::Topic;
use traffoflex_core::events::{self, Event};
use traffoflex_core::telemetry::Telemetry;

pub use kafka_sink::KafkaSink;
pub use segment::MAX_BODY_BYTES;
pub use shipper::{Batch, BatchRecord, ShipSettings, Sink, SinkError};

use cursor::Position;
use metrics::ClickLogMetrics;
use writer::{Limits, Progress, Queue, Writer};

/// When [`ClickLog::append`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once the record is on disk (fdatasync returned): a crash after that loses nothing.
    #[default]
    Durable,
    /// At once, when the record is queued: a crash may lose the last few milliseconds. Group commits are at
    /// least [`FAST_COMMIT_GAP`] apart, so each fsync covers more records and the writer takes less CPU.
    Fast,
}

/// The least time between two group commits in [`Durability::Fast`]: the most a crash can lose, beyond the
/// batch being written.
pub const FAST_COMMIT_GAP: Duration = Duration::from_millis(2);

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "durable" => Ok(Durability::Durable),
            "fast" => Ok(Durability::Fast),
            other => Err(format!("unknown durability `{other}` (durable or fast)")),
        }
    }
}

/// Where and how big the log is. [`ClickLogSettings::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ClickLogSettings {
    /// The log's own directory (created if missing; one process at a time).
    pub dir: PathBuf,
    /// Default [`Durability::Durable`].
    pub durability: Durability,
    /// A segment is closed and a new one started past this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// The most the segments and the queue together may hold; appends beyond are dropped. Default 2 GiB;
    /// at least twice `segment_bytes`.
    pub max_bytes: u64,
    /// The most bytes waiting in memory for the writer (only reached when the disk stalls). Default 64 MiB.
    pub max_queued_bytes: u64,
    /// The largest key plus payload accepted. Default 512 KiB (below Kafka's default 1 MB message limit: a
    /// record Kafka refuses would stop the shipper); at most [`MAX_BODY_BYTES`] less 5.
    pub max_record_bytes: u32,
    /// Prepare each segment full of zeros before it is used, on a thread of its own, so that group commits
    /// overwrite existing blocks: their fdatasync writes no metadata (see [`segment`]). Costs up to two
    /// segments of disk beyond what the records take (the spare and the active segment's unused rest) and
    /// writes each segment twice. Default on; turn it off on copy-on-write filesystems, where it gains nothing.
    pub preallocate: bool,
}

impl ClickLogSettings {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durability: Durability::Durable,
            segment_bytes: 64 << 20,
            max_bytes: 2 << 30,
            max_queued_bytes: 64 << 20,
            max_record_bytes: 512 << 10,
            preallocate: true,
        }
    }

    fn validate(&self) -> Result<(), ClickLogError> {
        let bad = |why: String| Err(ClickLogError::Settings(why));
        if self.segment_bytes < 1024 {
            return bad(format!("segment_bytes is {}; it must be at least 1024", self.segment_bytes));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return bad(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({}), or a full log could never free a segment",
                self.max_bytes, self.segment_bytes
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_BODY_BYTES - 5 {
            return bad(format!(
                "max_record_bytes is {}; it must be 1..={}",
                self.max_record_bytes,
                MAX_BODY_BYTES - 5
            ));
        }
        if self.max_queued_bytes < u64::from(self.max_record_bytes) + 13 {
            return bad(format!(
                "max_queued_bytes ({}) must hold one record of max_record_bytes",
                self.max_queued_bytes
            ));
        }
        Ok(())
    }
}

/// One entry of the log: an event already encoded for the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: Topic,
    /// The partitioning key.
    pub key: Vec<u8>,
    /// The message body, e.g. `traffoflex_core::events::encode(&event)`.
    pub payload: Vec<u8>,
}

impl Record {
    pub fn new(topic: Topic, key: impl Into<Vec<u8>>, payload: impl Into<Vec<u8>>) -> Self {
        Self { topic, key: key.into(), payload: payload.into() }
    }

    /// The event on its topic, under its key, in the wire format.
    pub fn from_event(event: &Event) -> Self {
        Self { topic: event.topic(), key: event.key().into_bytes(), payload: events::encode(event) }
    }
}

/// What became of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// On disk: it survives a crash and will be shipped.
    Durable,
    /// Queued for the next group commit ([`Durability::Fast`]).
    Queued,
    /// Not stored (and counted in `dropped`).
    Dropped(DropReason),
}

impl Appended {
    pub fn is_dropped(self) -> bool {
        matches!(self, Appended::Dropped(_))
    }
}

/// Why a record was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The log holds `max_bytes` (the sink is behind), or the writer is `max_queued_bytes` behind.
    Full,
    /// Key and payload are larger than `max_record_bytes`.
    TooLarge,
    /// The log is closing.
    Closed,
    /// Writing or syncing the batch failed (the error is logged).
    WriteFailed,
}

/// The log's numbers, as the metrics show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClickLogStats {
    /// `max_bytes`.
    pub capacity_bytes: u64,
    /// Bytes of the segments on disk.
    pub bytes: u64,
    /// Records on disk not yet acknowledged by the sink ("queued").
    pub pending: u64,
    /// Records written and synced since this process opened the log.
    pub appended: u64,
    /// fdatasync calls since then; `appended / fsyncs` is the average group commit.
    pub fsyncs: u64,
    pub dropped: u64,
    /// Records the sink acknowledged ("published").
    pub shipped: u64,
    /// Failed deliveries, each retried ("publish errors").
    pub ship_errors: u64,
}

/// Why the log could not be opened or the shipper started.
#[derive(Debug, thiserror::Error)]
pub enum ClickLogError {
    #[error("click log settings: {0}")]
    Settings(String),
    #[error("click log directory {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    #[error("click log {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a click log segment (bad header); move it out of the log directory", path.display())]
    NotASegment { path: PathBuf },
    #[error("the click log shipper was already started")]
    ShipperStarted,
}

/// The click log. Share it (`Arc<ClickLog>`) between the request handlers; every method takes `&self`.
pub struct ClickLog {
    settings: ClickLogSettings,
    queue: Arc<Queue>,
    metrics: ClickLogMetrics,
    progress: Arc<Progress>,
    full: AtomicBool,
    committed: watch::Receiver<Position>,
    lock: Arc<File>,
    writer: Mutex<Option<JoinHandle<()>>>,
    shipper: Mutex<ShipperState>,
    stop: CancellationToken,
}

struct ShipperState {
    start: Option<Position>,
    /// Resolves when the shipper's thread is done; an error when it panicked.
    task: Option<tokio::sync::oneshot::Receiver<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClickLog {
    /// Opens (creating, or recovering after a crash) the log in `settings.dir`, registers its metrics and
    /// starts its writer thread. Nothing is shipped until [`ClickLog::start_shipper`].
    pub fn open(settings: ClickLogSettings, telemetry: &Telemetry) -> Result<Self, ClickLogError> {
        settings.validate()?;
        let dir = settings.dir.clone();
        let io_err = |source| ClickLogError::Io { path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let lock_file =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK")).map_err(io_err)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(ClickLogError::Locked { dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let lock_file = Arc::new(lock_file);
        let recovered = recovery::recover(&dir)?;

        let metrics = ClickLogMetrics::default();
        metrics.register(telemetry);
        metrics.capacity_bytes.set(settings.max_bytes as i64);
        metrics.disk_bytes.set(recovered.disk_bytes as i64);
        metrics.pending.set(recovered.end.seq.saturating_sub(recovered.start.seq) as i64);

        let limits = Limits { max_bytes: settings.max_bytes, max_queued_bytes: settings.max_queued_bytes };
        let queue = Arc::new(Queue::new(limits));
        let progress = Arc::new(Progress { shipped_seq: AtomicU64::new(recovered.start.seq) });
        let (committed_tx, committed) = watch::channel(recovered.end);
        let spares = settings
            .preallocate
            .then(|| spare::Spares::start(dir.clone(), settings.segment_bytes))
            .transpose()
            .map_err(io_err)?;
        let writer = Writer {
            dir: dir.clone(),
            segment_bytes: settings.segment_bytes,
            file: recovered.file,
            room: recovered.room,
            spares,
            synced: recovered.end,
            len: recovered.end.offset,
            needs_roll: false,
            buf: Vec::with_capacity(256 << 10),
            min_commit_gap: match settings.durability {
                Durability::Durable => Duration::ZERO,
                Durability::Fast => FAST_COMMIT_GAP,
            },
            queue: Arc::clone(&queue),
            committed: committed_tx,
            metrics: metrics.clone(),
            progress: Arc::clone(&progress),
        };
        let writer_lock = Arc::clone(&lock_file);
        let handle = std::thread::Builder::new()
            .name("clicklog-writer".to_owned())
            .spawn(move || {
                let _lock = writer_lock;
                writer.run();
            })
            .map_err(io_err)?;
        Ok(Self {
            settings,
            queue,
            metrics,
            progress,
            full: AtomicBool::new(false),
            committed,
            lock: lock_file,
            writer: Mutex::new(Some(handle)),
            shipper: Mutex::new(ShipperState { start: Some(recovered.start), task: None }),
            stop: CancellationToken::new(),
        })
    }

    /// Appends with the configured [`Durability`]. Never fails and never waits for space: a record that
    /// cannot be stored comes back [`Appended::Dropped`]. Dropping the future after the first poll does not
    /// take the record back.
    pub async fn append(&self, record: Record) -> Appended {
        self.append_with(record, self.settings.durability).await
    }

    /// Appends with the given durability.
    pub async fn append_with(&self, record: Record, durability: Durability) -> Appended {
        match self.enqueue(record, durability == Durability::Durable) {
            Ok(Some(slot)) => slot.wait().await,
            Ok(None) => Appended::Queued,
            Err(reason) => Appended::Dropped(reason),
        }
    }

    fn enqueue(&self, record: Record, durable: bool) -> Result<Option<Arc<writer::Slot>>, DropReason> {
        let result = if record.key.len() + record.payload.len() > self.settings.max_record_bytes as usize {
            Err(DropReason::TooLarge)
        } else {
            let size = segment::encoded_len(&record.key, &record.payload);
            let on_disk = self.metrics.disk_bytes.get().max(0) as u64;
            self.queue.push(record, size, on_disk, durable)
        };
        if let Err(reason) = result {
            self.metrics.dropped.inc();
            if reason == DropReason::Full && !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(dir = %self.settings.dir.display(), max_bytes = self.settings.max_bytes, "click log full; dropping appends until the sink catches up");
            } else if reason != DropReason::Full {
                tracing::debug!(?reason, "click log append dropped");
            }
        } else if self.full.load(Ordering::Relaxed) {
            self.full.store(false, Ordering::Relaxed);
            tracing::info!(dir = %self.settings.dir.display(), "click log accepts appends again");
        }
        result
    }

    /// Starts shipping to `sink` from the persisted cursor, on a thread of its own with its own single-threaded
    /// runtime: handing thousands of records to the sink is a few milliseconds of CPU that must not hold up the
    /// clicks a runtime worker has queued. Once per log.
    pub fn start_shipper<S: Sink>(&self, sink: S, settings: ShipSettings) -> Result<(), ClickLogError> {
        let mut state = lock(&self.shipper);
        let start = state.start.take().ok_or(ClickLogError::ShipperStarted)?;
        let shipper = shipper::Shipper {
            sink,
            settings: settings.sanitized(),
            dir: self.settings.dir.clone(),
            committed: self.committed.clone(),
            cursor: start,
            deleted_below: start.segment,
            metrics: self.metrics.clone(),
            progress: Arc::clone(&self.progress),
            stop: self.stop.clone(),
            lock: Arc::clone(&self.lock),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClickLogError::Io { path: self.settings.dir.clone(), source })?;
        let (done, task) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("clicklog-shipper".to_owned())
            .spawn(move || {
                runtime.block_on(shipper.run());
                let _ = done.send(());
            })
            .map_err(|source| ClickLogError::Io { path: self.settings.dir.clone(), source })?;
        state.task = Some(task);
        Ok(())
    }

    /// The log's numbers now.
    pub fn stats(&self) -> ClickLogStats {
        let written = self.committed.borrow().seq;
        let shipped = self.progress.shipped_seq.load(Ordering::Acquire);
        ClickLogStats {
            capacity_bytes: self.settings.max_bytes,
            bytes: self.metrics.disk_bytes.get().max(0) as u64,
            pending: written.saturating_sub(shipped),
            appended: self.metrics.appended.get(),
            fsyncs: self.metrics.fsyncs.get(),
            dropped: self.metrics.dropped.get(),
            shipped: self.metrics.shipped.get(),
            ship_errors: self.metrics.ship_errors.get(),
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    /// Stops taking appends, writes and syncs what is queued, then lets the shipper ship what it can (within
    /// [`ShipSettings::drain_timeout`]) and waits for it. Later appends are dropped as [`DropReason::Closed`].
    pub async fn close(&self) {
        self.queue.close();
        let writer = lock(&self.writer).take();
        if let Some(handle) = writer {
            // The join waits for the last fsync: off the async worker threads.
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!(dir = %self.settings.dir.display(), "click log writer thread panicked"),
            }
        }
        self.stop.cancel();
        let task = lock(&self.shipper).task.take();
        if let Some(task) = task
            && task.await.is_err()
        {
            tracing::error!(dir = %self.settings.dir.display(), "click log shipper panicked");
        }
    }
}

impl Drop for ClickLog {
    /// Writes and syncs what is queued (blocking for that last group commit) and tells the shipper to make its
    /// last attempt in the background.
    fn drop(&mut self) {
        self.queue.close();
        if let Some(handle) = self.writer.get_mut().unwrap_or_else(|p| p.into_inner()).take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.settings.dir.display(), "click log writer thread panicked");
        }
        self.stop.cancel();
    }
}
