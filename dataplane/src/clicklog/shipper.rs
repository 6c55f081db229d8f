//! The shipper: reads the log in order from the cursor, sends batches to a [`Sink`], and only once the sink
//! acknowledged a batch moves the cursor past it, persists the cursor and deletes the segments wholly shipped.
//!
//! It reads only what the writer has synced (the writer publishes that position after every group commit), so
//! it never sees a half-written record. A batch closes at [`ShipSettings::max_records`] records,
//! [`ShipSettings::max_bytes`] bytes, or [`ShipSettings::linger`] after its first record. A failing sink is
//! retried with the same batch, the delay doubling from `backoff_min` to `backoff_max`; the log grows
//! meanwhile. On shutdown the shipper keeps going until the log is empty or `drain_timeout` has passed; what is
//! left is shipped on the next start. Delivery is at least once: a crash after the sink acknowledged and before
//! the cursor was persisted sends that batch again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use traffoflex_core::bus::{BusError, Topic};

use super::cursor::{self, Position};
use super::metrics::ClickLogMetrics;
use super::segment::{self, Found, HEADER_LEN, Next, SegmentReader};
use super::writer::Progress;

/// Where batches of the log go. `send` returns `Ok` only when every record of the batch is acknowledged
/// (stored by the receiving side); an error means the whole batch is sent again later.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError>;
}

#[async_trait::async_trait]
impl<S: Sink + ?Sized> Sink for Arc<S> {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        (**self).send(batch).await
    }
}

#[async_trait::async_trait]
impl<S: Sink + ?Sized> Sink for Box<S> {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        (**self).send(batch).await
    }
}

/// Why a sink did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0}")]
    Other(String),
}

/// Records read from the log, in log order: one buffer and the places of each record's key and payload in it.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    found: Vec<Found>,
    end: Position,
}

/// One record of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord<'a> {
    pub topic: Topic,
    pub key: &'a [u8],
    pub payload: &'a [u8],
}

impl Batch {
    /// An empty batch, e.g. to test a [`Sink`] with records of one's own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record at the end.
    pub fn push(&mut self, topic: Topic, key: &[u8], payload: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(payload);
        let key_range = start..start + key.len();
        self.found.push(Found { topic, payload: key_range.end..self.buf.len(), key: key_range });
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The records in log order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = BatchRecord<'_>> + '_ {
        self.found.iter().map(|f| BatchRecord {
            topic: f.topic,
            key: &self.buf[f.key.clone()],
            payload: &self.buf[f.payload.clone()],
        })
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.found.clear();
    }
}

/// Batching, retry and shutdown of the shipper.
#[derive(Debug, Clone, Copy)]
pub struct ShipSettings {
    /// Records per batch at most. Default 10,000.
    pub max_records: usize,
    /// Bytes (keys and payloads) per batch, roughly at most. Default 16 MiB.
    pub max_bytes: usize,
    /// How long a batch waits for more records after its first. Default 50 ms.
    pub linger: Duration,
    /// The first retry delay after a failed delivery. Default 100 ms.
    pub backoff_min: Duration,
    /// The longest retry delay. Default 5 s.
    pub backoff_max: Duration,
    /// How long the shipper may go on after shutdown to empty the log. Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for ShipSettings {
    fn default() -> Self {
        Self {
            max_records: 10_000,
            max_bytes: 16 << 20,
            linger: Duration::from_millis(50),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ShipSettings {
    pub(super) fn sanitized(mut self) -> Self {
        self.max_records = self.max_records.max(1);
        self.max_bytes = self.max_bytes.max(1);
        self.backoff_min = self.backoff_min.max(Duration::from_millis(1));
        self.backoff_max = self.backoff_max.max(self.backoff_min);
        self
    }
}

/// The shipper task's state.
pub(super) struct Shipper<S> {
    pub sink: S,
    pub settings: ShipSettings,
    pub dir: PathBuf,
    pub committed: watch::Receiver<Position>,
    /// After the last acknowledged record.
    pub cursor: Position,
    /// Every segment below this one is deleted.
    pub deleted_below: u64,
    pub metrics: ClickLogMetrics,
    pub progress: Arc<Progress>,
    pub stop: CancellationToken,
    /// Holds the directory's lock until the shipper is done.
    pub lock: Arc<std::fs::File>,
}

impl<S: Sink> Shipper<S> {
    pub async fn run(mut self) {
        let mut reader = Reader::at(&self.dir, self.cursor);
        let mut batch = Batch::default();
        let mut drain: Option<Instant> = None;
        loop {
            if drain.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            self.gather(&mut reader, &mut batch, &mut drain).await;
            if batch.is_empty() {
                if drain.is_some() {
                    break;
                }
                continue;
            }
            if !self.deliver(&batch, &mut drain).await {
                break;
            }
            self.acknowledged(batch.len(), batch.end).await;
            batch.clear();
        }
        let left = self.committed.borrow().seq.saturating_sub(self.cursor.seq);
        if left > 0 {
            tracing::warn!(dir = %self.dir.display(), records = left, "click log shipper stopped with records unshipped; they are shipped on the next start");
        } else {
            tracing::info!(dir = %self.dir.display(), "click log shipper stopped; everything was shipped");
        }
        drop(self.lock);
    }

    fn start_drain(&self, drain: &mut Option<Instant>) {
        if drain.is_none() {
            *drain = Some(Instant::now() + self.settings.drain_timeout);
        }
    }

    /// Fills `batch` until it is full, has lingered long enough, or the shipper is draining.
    async fn gather(&mut self, reader: &mut Reader, batch: &mut Batch, drain: &mut Option<Instant>) {
        let mut first_seen: Option<Instant> = None;
        loop {
            let committed = *self.committed.borrow_and_update();
            if let Err(e) = self.fill(reader, batch, committed).await {
                tracing::warn!(dir = %self.dir.display(), error = %e, "reading the click log failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(self.settings.backoff_min) => {}
                    () = self.stop.cancelled(), if drain.is_none() => self.start_drain(drain),
                }
                return;
            }
            if batch.len() >= self.settings.max_records || batch.buf.len() >= self.settings.max_bytes || drain.is_some()
            {
                return;
            }
            let now = Instant::now();
            if !batch.is_empty() && first_seen.is_none() {
                first_seen = Some(now);
            }
            let deadline = first_seen.map(|t| t + self.settings.linger);
            if deadline.is_some_and(|d| d <= now) {
                return;
            }
            tokio::select! {
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        // The writer is gone: what is on disk now is all there will be.
                        self.start_drain(drain);
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => return,
                () = self.stop.cancelled(), if drain.is_none() => self.start_drain(drain),
            }
        }
    }

    /// Reads what is synced into `batch` on a blocking thread.
    async fn fill(&self, reader: &mut Reader, batch: &mut Batch, committed: Position) -> io::Result<()> {
        let mut r = std::mem::take(reader);
        let mut b = std::mem::take(batch);
        let (max_records, max_bytes) = (self.settings.max_records, self.settings.max_bytes);
        let joined = tokio::task::spawn_blocking(move || {
            let out = r.fill(&mut b, committed, max_records, max_bytes);
            (r, b, out)
        })
        .await;
        match joined {
            Ok((r, b, out)) => {
                *reader = r;
                *batch = b;
                out
            }
            Err(e) => {
                // The read panicked: start the batch over from the last acknowledged record.
                *reader = Reader::at(&self.dir, self.cursor);
                *batch = Batch::default();
                Err(io::Error::other(e.to_string()))
            }
        }
    }

    /// Sends `batch` until the sink takes it. False when shutdown's deadline passed first.
    async fn deliver(&mut self, batch: &Batch, drain: &mut Option<Instant>) -> bool {
        let mut backoff = self.settings.backoff_min;
        loop {
            let error = match self.attempt(batch, drain).await {
                Ok(()) => return true,
                Err(e) => e,
            };
            self.metrics.ship_errors.inc();
            if drain.is_some_and(|deadline| Instant::now() + backoff >= deadline) {
                tracing::warn!(records = batch.len(), %error, "click log sink failed at shutdown; the records stay in the log");
                return false;
            }
            tracing::warn!(records = batch.len(), %error, retry_in_ms = backoff.as_millis() as u64, "click log sink failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled(), if drain.is_none() => self.start_drain(drain),
            }
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    /// One delivery; once draining, bounded by the drain deadline.
    async fn attempt(&self, batch: &Batch, drain: &mut Option<Instant>) -> Result<(), SinkError> {
        let send = self.sink.send(batch);
        tokio::pin!(send);
        if drain.is_none() {
            tokio::select! {
                result = &mut send => return result,
                () = self.stop.cancelled() => self.start_drain(drain),
            }
        }
        let deadline = drain.unwrap_or_else(Instant::now);
        match tokio::time::timeout_at(deadline, send).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Other("no acknowledgement before the shutdown deadline".to_owned())),
        }
    }

    /// The sink took the batch ending at `end`: count it, persist the cursor, delete what is wholly shipped.
    async fn acknowledged(&mut self, records: usize, end: Position) {
        self.cursor = end;
        self.metrics.shipped.inc_by(records as u64);
        self.progress.shipped_seq.store(end.seq, Ordering::Release);
        let written = self.committed.borrow().seq;
        self.metrics.pending.set(written.saturating_sub(end.seq) as i64);

        let dir = self.dir.clone();
        let delete_below = (end.segment > self.deleted_below).then_some(end.segment);
        let done = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            cursor::store(&dir, end)?;
            delete_below.map_or(Ok(0), |below| delete_segments_below(&dir, below))
        })
        .await;
        match done {
            Ok(Ok(freed)) => {
                self.metrics.disk_bytes.dec_by(freed as i64);
                if let Some(below) = delete_below {
                    self.deleted_below = below;
                }
            }
            // The cursor stays behind: those records are shipped again after a crash, and deletion is retried.
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "persisting the click log cursor failed")
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "persisting the click log cursor panicked"),
        }
    }
}

/// Deletes every segment before `below`; returns the bytes freed.
fn delete_segments_below(dir: &Path, below: u64) -> io::Result<u64> {
    let mut freed = 0;
    for base in segment::list_segments(dir)?.into_iter().take_while(|&b| b < below) {
        freed += segment::remove_gently(&segment::segment_path(dir, base))?;
    }
    if freed > 0 {
        segment::sync_dir(dir)?;
    }
    Ok(freed)
}

/// The shipper's read position, and the segment open there.
#[derive(Default)]
struct Reader {
    dir: PathBuf,
    pos: Position,
    seg: Option<SegmentReader>,
}

impl Reader {
    fn at(dir: &Path, pos: Position) -> Self {
        Self { dir: dir.to_owned(), pos, seg: None }
    }

    /// Reads synced records into `batch` until it is full or there are no more; sets `batch.end`.
    fn fill(&mut self, batch: &mut Batch, committed: Position, max_records: usize, max_bytes: usize) -> io::Result<()> {
        while batch.found.len() < max_records && batch.buf.len() < max_bytes {
            let active = self.pos.segment >= committed.segment;
            if active && self.pos.offset >= committed.offset {
                break;
            }
            let seg = match self.seg.take() {
                Some(seg) => seg,
                None => match SegmentReader::open(&self.dir, self.pos.segment, self.pos.offset) {
                    Ok(seg) => seg,
                    Err(e) if !active => {
                        tracing::error!(dir = %self.dir.display(), segment = self.pos.segment, error = %e, "unreadable closed click log segment; skipping it");
                        self.next_segment(committed)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let seg = self.seg.insert(seg);
            match seg.next(active.then_some(committed.offset), &mut batch.buf)? {
                Next::Record(found) => {
                    batch.found.push(found);
                    self.pos.offset = seg.offset();
                    self.pos.seq += 1;
                }
                Next::End if active => break,
                Next::End => self.next_segment(committed)?,
                Next::Corrupt(why) if active => {
                    tracing::error!(dir = %self.dir.display(), segment = self.pos.segment, offset = self.pos.offset, why, "corrupt record in the synced part of the active click log segment; skipping to its end");
                    self.pos = committed;
                    self.seg = None;
                }
                Next::Corrupt(why) => {
                    tracing::error!(dir = %self.dir.display(), segment = self.pos.segment, offset = self.pos.offset, why, "corrupt record in a closed click log segment; skipping the rest of it");
                    self.next_segment(committed)?;
                }
            }
        }
        batch.end = self.pos;
        Ok(())
    }

    /// Moves to the start of the segment after the current one.
    fn next_segment(&mut self, committed: Position) -> io::Result<()> {
        let next = segment::list_segments(&self.dir)?
            .into_iter()
            .find(|&b| b > self.pos.segment && b <= committed.segment)
            .unwrap_or(committed.segment);
        self.pos = Position { segment: next, offset: HEADER_LEN, seq: next };
        self.seg = None;
        Ok(())
    }
}
