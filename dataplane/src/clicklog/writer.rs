//! Group commit: the append queue and the one writer thread.
//!
//! An append takes the queue's mutex for the time of a `Vec::push` (and, in durable mode, an `Arc` clone of the
//! current commit slot), then leaves; nothing on the append path touches the disk. The writer thread swaps the
//! whole queue out for an empty vector (the two vectors trade places, so their capacity is reused), writes
//! every record of it into the active segment with one `write`, calls `fdatasync` once, and then completes the
//! batch's [`Slot`]: one store and one `Notify::notify_waiters` wake every durable appender of that batch.
//! While it syncs, the next batch gathers in the queue, so the size of a group commit follows the load by
//! itself: one record when the service is idle, hundreds when it is busy. No lock is held across a write or
//! an fsync. In fast mode, where no appender waits for the disk, commits are also at least
//! [`super::FAST_COMMIT_GAP`] apart: the writer sleeps out the rest of the gap before it takes the next batch,
//! so each fsync covers more records (80 to 90 instead of about 15 at full speed) and the writer takes less CPU.
//!
//! A segment that would grow past its size is fsynced and closed first, and a new one started (named after
//! the sequence number of its first record). With preallocation on, a thread of its own ([`Spares`]) keeps one
//! preallocated segment ready: starting a segment is then a rename, and every commit overwrites zeros instead of
//! growing the file. When a segment was started without one (the first of a new log, or the spare was late),
//! the writer moves on to the spare as soon as it is ready. A failed write or fsync fails the whole batch: its appenders
//! learn that their records were dropped, the segment is cut back to the last synced record, and if even
//! that fails the writer starts a new segment before the next batch.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::cursor::Position;
use super::metrics::ClickLogMetrics;
use super::segment::{self, HEADER_LEN};
use super::spare::Spares;
use super::{Appended, DropReason, Record};

const PENDING: u8 = 0;
const DURABLE: u8 = 1;
const FAILED: u8 = 2;
const CLOSED: u8 = 3;

/// What the durable appenders of one batch wait on.
pub(super) struct Slot {
    state: AtomicU8,
    done: Notify,
}

impl Slot {
    fn new() -> Self {
        Self { state: AtomicU8::new(PENDING), done: Notify::new() }
    }

    fn finish(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.done.notify_waiters();
    }

    /// Waits until the writer finished this slot's batch.
    pub async fn wait(&self) -> Appended {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so a finish between the two still wakes us.
            notified.as_mut().enable();
            match self.state.load(Ordering::Acquire) {
                PENDING => notified.await,
                DURABLE => return Appended::Durable,
                FAILED => return Appended::Dropped(DropReason::WriteFailed),
                _ => return Appended::Dropped(DropReason::Closed),
            }
        }
    }
}

struct QueueState {
    records: Vec<Record>,
    bytes: u64,
    slot: Arc<Slot>,
    writer_idle: bool,
    closing: bool,
}

/// Limits an append is checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_bytes: u64,
    pub max_queued_bytes: u64,
}

/// The records waiting for the writer.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
    limits: Limits,
}

impl Queue {
    pub fn new(limits: Limits) -> Self {
        let state = QueueState {
            records: Vec::with_capacity(1024),
            bytes: 0,
            slot: Arc::new(Slot::new()),
            writer_idle: false,
            closing: false,
        };
        Self { state: Mutex::new(state), wake: Condvar::new(), limits }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock; if something did, the queue itself is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `record` of `size` encoded bytes; `on_disk` is the log's current size. In durable mode returns the
    /// slot to wait on.
    pub fn push(
        &self,
        record: Record,
        size: u64,
        on_disk: u64,
        durable: bool,
    ) -> Result<Option<Arc<Slot>>, DropReason> {
        let mut st = self.lock();
        if st.closing {
            return Err(DropReason::Closed);
        }
        if st.bytes + size > self.limits.max_queued_bytes || on_disk + st.bytes + size > self.limits.max_bytes {
            return Err(DropReason::Full);
        }
        st.records.push(record);
        st.bytes += size;
        let slot = durable.then(|| Arc::clone(&st.slot));
        let wake = std::mem::replace(&mut st.writer_idle, false);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(slot)
    }

    /// Stops taking records; the writer writes what is queued and exits.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closing = true;
        st.writer_idle = false;
        drop(st);
        self.wake.notify_one();
    }

    /// Waits for records, and then until `not_before` (unless the queue is closing), and takes all of them,
    /// leaving `spare` (empty) in their place. `None` once closing and empty. The batch's bytes move from the
    /// queue into `disk_bytes` here.
    fn take_after(
        &self,
        not_before: Instant,
        spare: &mut Vec<Record>,
        disk_bytes: &prometheus_client::metrics::gauge::Gauge,
    ) -> Option<(Arc<Slot>, u64)> {
        let fresh = Arc::new(Slot::new());
        let mut st = self.lock();
        while st.records.is_empty() {
            if st.closing {
                return None;
            }
            st.writer_idle = true;
            st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let now = Instant::now();
        if now < not_before && !st.closing {
            // More records gather meanwhile; appenders don't wake the writer while it is not idle.
            drop(st);
            std::thread::sleep(not_before - now);
            st = self.lock();
        }
        st.writer_idle = false;
        std::mem::swap(&mut st.records, spare);
        let bytes = std::mem::take(&mut st.bytes);
        disk_bytes.inc_by(bytes as i64);
        Some((std::mem::replace(&mut st.slot, fresh), bytes))
    }

    /// After the writer is gone: refuse appends and release anyone still waiting.
    fn abandon(&self) {
        let mut st = self.lock();
        st.closing = true;
        st.records.clear();
        st.bytes = 0;
        st.slot.finish(CLOSED);
    }
}

/// Counters the writer and the shipper share for the `pending` gauge.
pub(super) struct Progress {
    /// The sequence number after the last record the sink acknowledged.
    pub shipped_seq: AtomicU64,
}

/// The writer thread's state: the active segment and what is synced in it.
pub(super) struct Writer {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub file: File,
    /// The active segment's length on disk: beyond `len` while a preallocated segment has room left.
    pub room: u64,
    /// Where preallocated segments come from; `None` when preallocation is off.
    pub spares: Option<Spares>,
    /// The end of what is on disk and synced.
    pub synced: Position,
    /// The end of what was written to the active segment (synced or not).
    pub len: u64,
    pub needs_roll: bool,
    pub buf: Vec<u8>,
    /// The least time from the start of one group commit to the start of the next (zero: at once).
    pub min_commit_gap: Duration,
    pub queue: Arc<Queue>,
    pub committed: watch::Sender<Position>,
    pub metrics: ClickLogMetrics,
    pub progress: Arc<Progress>,
}

impl Writer {
    /// The thread's body: group commits until the queue is closed and drained.
    pub fn run(mut self) {
        let queue = Arc::clone(&self.queue);
        // Whatever ends this thread, appenders must not wait for it forever.
        struct Abandon(Arc<Queue>);
        impl Drop for Abandon {
            fn drop(&mut self) {
                self.0.abandon();
            }
        }
        let _abandon = Abandon(Arc::clone(&queue));
        // The batch being written; if the thread dies with it, its appenders learn it failed.
        struct InFlight(Arc<Slot>);
        impl Drop for InFlight {
            fn drop(&mut self) {
                if self.0.state.load(Ordering::Acquire) == PENDING {
                    self.0.finish(FAILED);
                }
            }
        }
        let mut batch: Vec<Record> = Vec::with_capacity(1024);
        let mut last_commit = Instant::now();
        while let Some((slot, bytes)) =
            queue.take_after(last_commit + self.min_commit_gap, &mut batch, &self.metrics.disk_bytes)
        {
            last_commit = Instant::now();
            let slot = InFlight(slot);
            let before = self.synced;
            match self.write_batch(&batch) {
                Ok(()) => {
                    self.metrics.commit_seconds.observe(last_commit.elapsed().as_secs_f64());
                    self.metrics.appended.inc_by(batch.len() as u64);
                    slot.0.finish(DURABLE);
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), records = batch.len(), error = %e, "click log write failed; these records are dropped");
                    self.metrics.dropped.inc_by(batch.len() as u64);
                    self.metrics.disk_bytes.dec_by(bytes as i64);
                    slot.0.finish(FAILED);
                    self.repair();
                }
            }
            batch.clear();
            if self.synced != before {
                self.committed.send_replace(self.synced);
                let shipped = self.progress.shipped_seq.load(Ordering::Acquire);
                self.metrics.pending.set(self.synced.seq.saturating_sub(shipped) as i64);
            }
        }
        tracing::debug!(dir = %self.dir.display(), "click log writer stopped");
    }

    fn write_batch(&mut self, batch: &[Record]) -> io::Result<()> {
        // A segment that grows as it is written moves on to a preallocated one once there is one.
        let growing = self.len >= self.room && self.len > HEADER_LEN;
        if self.needs_roll || (growing && self.spares.as_mut().is_some_and(Spares::ready)) {
            self.roll()?;
        }
        self.buf.clear();
        let mut seq = self.synced.seq;
        for r in batch {
            let size = segment::encoded_len(&r.key, &r.payload);
            let holds_records = self.len + self.buf.len() as u64 > HEADER_LEN;
            if holds_records && self.len + self.buf.len() as u64 + size > self.segment_bytes {
                self.sync_buf(seq)?;
                self.roll()?;
            }
            segment::encode_into(&mut self.buf, r.topic, &r.key, &r.payload);
            seq += 1;
        }
        self.sync_buf(seq)
    }

    /// Writes the buffer and fdatasyncs; `seq` is the sequence number after the buffer's last record.
    fn sync_buf(&mut self, seq: u64) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        self.room = self.room.max(self.len);
        self.file.sync_data()?;
        self.metrics.fsyncs.inc();
        self.buf.clear();
        self.synced = Position { segment: self.synced.segment, offset: self.len, seq };
        Ok(())
    }

    /// Closes the active segment (already synced) and starts the next at the next sequence number: the spare
    /// if one is ready, else a new file.
    fn roll(&mut self) -> io::Result<()> {
        if self.room > self.len && !self.needs_roll {
            // The zero tail goes; a crash before this is synced leaves it, which readers take as the end.
            match self.file.set_len(self.len) {
                Ok(()) => self.room = self.len,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot cut the zero tail of a closed click log segment")
                }
            }
        }
        let base = self.synced.seq;
        let installed = self.spares.as_mut().and_then(|s| s.install(base));
        (self.file, self.room) = match installed {
            Some(Ok(file)) => (file, self.segment_bytes),
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot use the preallocated click log segment");
                }
                (segment::create_segment(&self.dir, base)?, HEADER_LEN)
            }
        };
        self.metrics.fsyncs.inc();
        self.metrics.disk_bytes.inc_by(HEADER_LEN as i64);
        self.len = HEADER_LEN;
        self.needs_roll = false;
        self.synced = Position { segment: base, offset: HEADER_LEN, seq: base };
        tracing::debug!(dir = %self.dir.display(), base, "click log segment started");
        Ok(())
    }

    /// After a failed batch: cut the active segment back to what is synced, or start a new one next time.
    fn repair(&mut self) {
        let offset = self.synced.offset;
        let cut = self.file.set_len(offset).and_then(|()| self.file.seek(SeekFrom::Start(offset)).map(drop));
        match cut {
            Ok(()) => (self.len, self.room) = (offset, offset),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot cut the click log segment back; starting a new one");
                self.needs_roll = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffoflex_core::bus::Topic;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_drops_only_its_batch_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        segment::create_segment(dir.path(), 0).unwrap();
        // A read-only handle: every write fails, and so does cutting the file back.
        let read_only = File::open(segment::segment_path(dir.path(), 0)).unwrap();
        let queue = Arc::new(Queue::new(Limits { max_bytes: 1 << 20, max_queued_bytes: 1 << 20 }));
        let start = Position { segment: 0, offset: HEADER_LEN, seq: 0 };
        let (committed, watch) = watch::channel(start);
        let metrics = ClickLogMetrics::default();
        let writer = Writer {
            dir: dir.path().to_owned(),
            segment_bytes: 1 << 20,
            file: read_only,
            room: HEADER_LEN,
            spares: None,
            synced: start,
            len: HEADER_LEN,
            needs_roll: false,
            buf: Vec::new(),
            min_commit_gap: Duration::ZERO,
            queue: Arc::clone(&queue),
            committed,
            metrics: metrics.clone(),
            progress: Arc::new(Progress { shipped_seq: AtomicU64::new(0) }),
        };
        let thread = std::thread::spawn(move || writer.run());

        let record = |p: &str| Record::new(Topic::Clicks, "key", p);
        let slot = queue.push(record("lost"), 30, 0, true).unwrap().unwrap();
        assert_eq!(slot.wait().await, Appended::Dropped(DropReason::WriteFailed));
        let slot = queue.push(record("kept"), 30, 0, true).unwrap().unwrap();
        assert_eq!(slot.wait().await, Appended::Durable, "the writer moved on to a new segment");
        queue.close();
        thread.join().unwrap();

        assert_eq!((metrics.dropped.get(), metrics.appended.get()), (1, 1));
        assert_eq!(watch.borrow().seq, 1);
        let mut reader = segment::SegmentReader::open(dir.path(), watch.borrow().segment, 0).unwrap();
        let mut buf = Vec::new();
        let segment::Next::Record(found) = reader.next(None, &mut buf).unwrap() else { panic!("a record") };
        assert_eq!(&buf[found.payload], b"kept");
        assert!(matches!(reader.next(None, &mut buf).unwrap(), segment::Next::End));
        assert_eq!(queue.push(record("late"), 30, 0, true).err(), Some(DropReason::Closed));
    }
}
