//! The click log as the traffic service sees it: appended clicks reach the sink in order and all of them,
//! durable appends share fsyncs, a failing sink loses nothing, a restart re-ships, a torn tail is cut, a full
//! log drops (counted) without blocking, shipped segments are deleted, and preallocated segments keep their
//! zero tail across a restart but never a leftover of a torn write.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use traffoflex_core::bus::Topic;
use traffoflex_core::events::{self, ClickEvent, Event};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{
    Appended, Batch, ClickLog, ClickLogError, ClickLogSettings, DropReason, Durability, FAST_COMMIT_GAP, Record,
    ShipSettings, Sink, SinkError,
};

fn click(i: usize) -> Record {
    Record::from_event(&Event::Click(ClickEvent {
        click_id: format!("click-{i:06}"),
        campaign_id: "campaign-1".into(),
        country: "DE".into(),
        ..Default::default()
    }))
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("click-{i:06}")).collect()
}

/// A sink that keeps what it is sent, failing the first `fail_first` deliveries.
#[derive(Default)]
struct MemorySink {
    delivered: Mutex<Vec<String>>,
    fail_first: AtomicUsize,
    attempts: AtomicUsize,
}

impl MemorySink {
    fn failing(n: usize) -> Arc<Self> {
        Arc::new(Self { fail_first: AtomicUsize::new(n), ..Default::default() })
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Sink for MemorySink {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let left = self.fail_first.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_first.store(left - 1, Ordering::SeqCst);
            return Err(SinkError::Other("broker unavailable".into()));
        }
        let mut delivered = self.delivered.lock().unwrap();
        for r in batch.iter() {
            assert_eq!(r.topic, Topic::Clicks);
            let event = events::decode(r.payload).expect("payload is an event");
            assert_eq!(r.key, event.key().as_bytes());
            delivered.push(event.id().to_owned());
        }
        Ok(())
    }
}

fn fast_shipping() -> ShipSettings {
    ShipSettings { linger: Duration::from_millis(5), backoff_min: Duration::from_millis(10), ..Default::default() }
}

fn open(dir: &Path, f: impl FnOnce(&mut ClickLogSettings)) -> ClickLog {
    let mut settings = ClickLogSettings::new(dir);
    f(&mut settings);
    ClickLog::open(settings, &Telemetry::new()).expect("the log opens")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_records_reach_the_sink_in_order_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::new();
    let mut settings = ClickLogSettings::new(dir.path());
    settings.segment_bytes = 64 << 10;
    let log = ClickLog::open(settings, &telemetry).unwrap();
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();

    for i in 0..3_000 {
        let durability = if i % 3 == 0 { Durability::Durable } else { Durability::Fast };
        let expected = if durability == Durability::Durable { Appended::Durable } else { Appended::Queued };
        assert_eq!(log.append_with(click(i), durability).await, expected);
    }
    // The shipper counts a batch as shipped just after the sink took it: wait for both.
    wait_until("3,000 records are shipped", || {
        sink.delivered().len() >= 3_000
            && log.stats().pending == 0
            && telemetry.encode_metrics().contains("traffoflex_clicklog_pending 0")
    })
    .await;
    assert_eq!(sink.delivered(), ids(0..3_000));
    assert!(segment_count(dir.path()) >= 1);

    let stats = log.stats();
    assert_eq!((stats.appended, stats.shipped, stats.pending, stats.dropped), (3_000, 3_000, 0, 0));
    assert_eq!(stats.capacity_bytes, 2 << 30);
    let metrics = telemetry.encode_metrics();
    for line in [
        "traffoflex_clicklog_appended_total 3000",
        "traffoflex_clicklog_shipped_total 3000",
        "traffoflex_clicklog_pending 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), |_| {}));
    const TASKS: usize = 1_000;
    const EACH: usize = 5;
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let log = Arc::clone(&log);
            let start = Arc::clone(&start);
            let records: Vec<Record> = (0..EACH).map(|i| click(t * EACH + i)).collect();
            tokio::spawn(async move {
                start.wait().await;
                for r in records {
                    assert_eq!(log.append(r).await, Appended::Durable);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = log.stats();
    let records = (TASKS * EACH) as u64;
    assert_eq!(stats.appended, records);
    println!(
        "{records} durable appends from {TASKS} tasks took {} fsyncs: {:.1} records per fsync",
        stats.fsyncs,
        records as f64 / stats.fsyncs as f64
    );
    assert!(stats.fsyncs * 10 < records, "{} fsyncs for {records} records: group commit is not grouping", stats.fsyncs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_retried_until_every_record_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |_| {});
    for i in 0..1_000 {
        log.append(click(i)).await;
    }
    let sink = MemorySink::failing(4);
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    wait_until("1,000 records are shipped", || sink.delivered().len() >= 1_000 && log.stats().pending == 0).await;
    assert_eq!(sink.delivered(), ids(0..1_000));
    let stats = log.stats();
    assert_eq!(stats.ship_errors, 4);
    assert_eq!(stats.pending, 0);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_log_ships_what_was_not_shipped_before() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), |_| {});
        for i in 0..500 {
            assert_eq!(log.append(click(i)).await, Appended::Durable);
        }
        // Dropped without a shipper: nothing was shipped.
    }
    let log = open(dir.path(), |_| {});
    assert_eq!(log.stats().pending, 500);
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    wait_until("500 records are shipped", || sink.delivered().len() >= 500).await;
    log.close().await;
    drop(log);
    assert_eq!(sink.delivered(), ids(0..500));

    // After a clean stop the cursor is persisted: only what is new is shipped next time.
    {
        let log = open(dir.path(), |s| s.durability = Durability::Fast);
        for i in 500..700 {
            assert_eq!(log.append(click(i)).await, Appended::Queued);
        }
    }
    let log = open(dir.path(), |_| {});
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    wait_until("200 records are shipped", || sink.delivered().len() >= 200).await;
    log.close().await;
    assert_eq!(sink.delivered(), ids(500..700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ships_everything_appended_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |s| s.durability = Durability::Fast);
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), ShipSettings { linger: Duration::from_secs(5), ..fast_shipping() }).unwrap();
    for i in 0..2_000 {
        assert_eq!(log.append(click(i)).await, Appended::Queued);
    }
    log.close().await;
    assert_eq!(sink.delivered(), ids(0..2_000));
    assert_eq!(log.append(click(2_000)).await, Appended::Dropped(DropReason::Closed));
    assert_eq!(log.stats().dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_at_shutdown_leaves_the_records_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |_| {});
    let down = MemorySink::failing(usize::MAX);
    log.start_shipper(Arc::clone(&down), ShipSettings { drain_timeout: Duration::from_millis(300), ..fast_shipping() })
        .unwrap();
    for i in 0..100 {
        assert_eq!(log.append(click(i)).await, Appended::Durable);
    }
    let closing = std::time::Instant::now();
    log.close().await;
    assert!(closing.elapsed() < Duration::from_secs(3), "close took {:?}", closing.elapsed());
    assert!(down.delivered().is_empty());
    assert!(log.stats().ship_errors > 0);
    drop(log);

    let log = open(dir.path(), |_| {});
    assert_eq!(log.stats().pending, 100);
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    log.close().await;
    assert_eq!(sink.delivered(), ids(0..100));
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Segments that end where their records end (no preallocation), so the damage lands on the records.
async fn torn_tail_is_cut(damage: impl FnOnce(&Path), expected_kept: usize) {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), |s| s.preallocate = false);
        for i in 0..100 {
            assert_eq!(log.append(click(i)).await, Appended::Durable);
        }
    }
    damage(&last_segment(dir.path()));
    let log = open(dir.path(), |s| s.preallocate = false);
    assert_eq!(log.append(click(100)).await, Appended::Durable, "the log stays usable");
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    log.close().await;
    let delivered = sink.delivered();
    let mut expected = ids(0..expected_kept);
    expected.push("click-000100".to_owned());
    assert_eq!(delivered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_cut_mid_record_keeps_every_whole_record_before_it() {
    torn_tail_is_cut(
        |seg| {
            let len = std::fs::metadata(seg).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            file.set_len(len - 7).unwrap();
        },
        99,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_record_is_cut_and_nothing_before_it_is_lost() {
    torn_tail_is_cut(
        |seg| {
            let mut bytes = std::fs::read(seg).unwrap();
            bytes.extend_from_slice(&[0x2a, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
            std::fs::write(seg, bytes).unwrap();
        },
        100,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |s| {
        s.segment_bytes = 4096;
        s.max_bytes = 16 << 10;
        s.max_queued_bytes = 4096;
        s.max_record_bytes = 2048;
    });
    let outcomes = tokio::time::timeout(Duration::from_secs(5), async {
        let mut outcomes = Vec::new();
        for i in 0..200 {
            outcomes.push(log.append(click(i)).await);
        }
        outcomes
    })
    .await
    .expect("appends to a full log do not block");
    let stored = outcomes.iter().take_while(|o| **o == Appended::Durable).count();
    assert!(stored > 0);
    assert!(
        outcomes[stored..].iter().all(|o| *o == Appended::Dropped(DropReason::Full)),
        "once full, every append is dropped: {outcomes:?}"
    );
    let stats = log.stats();
    assert_eq!(stats.dropped, (200 - stored) as u64);
    assert!(stats.bytes <= 16 << 10, "{} bytes on disk", stats.bytes);

    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    wait_until("the stored records are shipped", || sink.delivered().len() >= stored).await;
    assert_eq!(sink.delivered(), ids(0..stored));

    // Shipping freed the space: appends are stored again.
    wait_until("the log has room", || log.stats().bytes < 8 << 10).await;
    assert_eq!(log.append(click(1_000)).await, Appended::Durable);
    log.close().await;
    assert_eq!(sink.delivered().last().map(String::as_str), Some("click-001000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |s| s.segment_bytes = 1024);
    for i in 0..400 {
        log.append(click(i)).await;
    }
    let before = segment_count(dir.path());
    assert!(before > 10, "{before} segments");
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    wait_until("400 records are shipped", || sink.delivered().len() >= 400).await;
    wait_until("shipped segments are deleted", || segment_count(dir.path()) == 1).await;
    wait_until("the freed bytes are counted", || log.stats().bytes <= 1024 + 1024).await;
    log.close().await;
    assert_eq!(sink.delivered(), ids(0..400));
}

#[tokio::test]
async fn a_log_directory_is_used_by_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |_| {});
    let second = ClickLog::open(ClickLogSettings::new(dir.path()), &Telemetry::new());
    assert!(matches!(second, Err(ClickLogError::Locked { .. })), "{:?}", second.err());
    drop(log);
    assert!(ClickLog::open(ClickLogSettings::new(dir.path()), &Telemetry::new()).is_ok());
}

#[tokio::test]
async fn oversized_records_are_dropped_and_bad_settings_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |s| s.max_record_bytes = 100);
    let big = Record::new(Topic::Clicks, "k", vec![b'x'; 200]);
    assert_eq!(log.append(big).await, Appended::Dropped(DropReason::TooLarge));
    assert_eq!(log.stats().dropped, 1);

    let mut settings = ClickLogSettings::new(dir.path().join("other"));
    settings.max_bytes = settings.segment_bytes;
    assert!(matches!(ClickLog::open(settings, &Telemetry::new()), Err(ClickLogError::Settings(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_appends_are_committed_in_groups_at_most_one_per_gap() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), |s| s.durability = Durability::Fast);
    let started = std::time::Instant::now();
    for i in 0..3_000 {
        assert_eq!(log.append(click(i)).await, Appended::Queued);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    wait_until("every record is on disk", || log.stats().appended == 3_000).await;
    let elapsed = started.elapsed();
    let fsyncs = log.stats().fsyncs;
    // One fsync opens the first segment; after it, commits are at least FAST_COMMIT_GAP apart.
    let most = 2 + (elapsed.as_secs_f64() / FAST_COMMIT_GAP.as_secs_f64()) as u64;
    assert!(fsyncs <= most, "{fsyncs} fsyncs in {elapsed:?}, at most {most}");
    log.close().await;
}

/// Where the records of a segment end: the first zero frame, or the end of the file.
fn records_end(seg: &Path) -> u64 {
    let bytes = std::fs::read(seg).unwrap();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 8 + len;
    }
    at as u64
}

/// Opens a preallocating log with small segments and appends from `first` until the active segment is a
/// preallocated one holding records (the first segment of a new log is not: its spare is still being made).
/// Returns the log and the next click number.
async fn preallocated_log(dir: &Path, first: usize) -> (ClickLog, usize) {
    const SEGMENT: u64 = 256 << 10;
    let log = open(dir, |s| s.segment_bytes = SEGMENT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut next = first;
    loop {
        assert_eq!(log.append(click(next)).await, Appended::Durable);
        next += 1;
        let seg = last_segment(dir);
        if std::fs::metadata(&seg).unwrap().len() == SEGMENT && records_end(&seg) > 8 {
            return (log, next);
        }
        assert!(tokio::time::Instant::now() < deadline, "no preallocated segment in use after {next} appends");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preallocated_segment_keeps_its_zero_tail_across_a_restart_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut next) = preallocated_log(dir.path(), 0).await;
    for _ in 0..50 {
        assert_eq!(log.append(click(next)).await, Appended::Durable);
        next += 1;
    }
    let seg = last_segment(dir.path());
    let end = records_end(&seg);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 256 << 10, "the segment is written into, not grown");
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let stats = log.stats();
    assert!(stats.bytes < on_disk - (256 << 10) + end + 1, "the zero tail is not counted: {stats:?}");
    drop(log);

    let log = open(dir.path(), |s| s.segment_bytes = 256 << 10);
    assert_eq!(log.append(click(next)).await, Appended::Durable);
    assert_eq!(last_segment(dir.path()), seg, "appending goes on in the same segment");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 256 << 10, "the zero tail was kept, not cut");
    assert!(records_end(&seg) > end);
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    log.close().await;
    assert_eq!(sink.delivered(), ids(0..next + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_of_a_torn_write_in_the_zero_tail_is_cut_and_never_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let (log, next) = preallocated_log(dir.path(), 0).await;
    drop(log);
    let seg = last_segment(dir.path());
    let end = records_end(&seg);
    // A crash tore a batch of two records: the first never reached the disk, the second did. The second is
    // a whole, valid record (a copy of the segment's first), lying exactly where the next append will end.
    let bytes = std::fs::read(&seg).unwrap();
    let first_len = 8 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(click(0).payload.len(), click(next).payload.len(), "every click record has the same size");
    let leftover = &bytes[8..8 + first_len];
    let mut file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(end + first_len as u64)).unwrap();
    std::io::Write::write_all(&mut file, leftover).unwrap();
    drop(file);

    let log = open(dir.path(), |s| s.segment_bytes = 256 << 10);
    assert_eq!(log.append(click(next)).await, Appended::Durable);
    let sink = Arc::new(MemorySink::default());
    log.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    log.close().await;
    drop(log);
    let reopened = open(dir.path(), |s| s.segment_bytes = 256 << 10);
    reopened.start_shipper(Arc::clone(&sink), fast_shipping()).unwrap();
    reopened.close().await;
    assert_eq!(sink.delivered(), ids(0..next + 1), "only what was appended, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_commit_is_timed_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Telemetry::new();
    let log = ClickLog::open(ClickLogSettings::new(dir.path()), &telemetry).unwrap();
    for i in 0..20 {
        assert_eq!(log.append(click(i)).await, Appended::Durable);
    }
    let text = telemetry.encode_metrics();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name));
        line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    let commits = value("traffoflex_clicklog_commit_seconds_count");
    assert_eq!(commits, 20.0, "one commit per sequential durable append:\n{text}");
    assert!(value("traffoflex_clicklog_commit_seconds_sum") > 0.0);
    let slowest = r#"traffoflex_clicklog_commit_seconds_bucket{le="+Inf"}"#;
    assert_eq!(value(slowest), 20.0);
    log.close().await;
}
