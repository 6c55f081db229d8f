//! Durable appends with group commit against the naive baseline — a lock held across one write and one
//! fdatasync per record — measured in the same run on the same disk; prints both rates and their ratio.
//!
//! `cargo bench -p traffoflex-dataplane --bench clicklog`. Without `--bench` (e.g. `cargo test --all-targets`)
//! it runs a few records only, as a smoke test.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use traffoflex_core::events::{ClickEvent, Event};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{Appended, ClickLog, ClickLogSettings, Record};

const CONCURRENCY: usize = 256;

fn click(i: usize) -> Record {
    Record::from_event(&Event::Click(ClickEvent {
        click_id: format!("bench-{i:08}"),
        campaign_id: "campaign-1".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0".into(),
        ..Default::default()
    }))
}

/// `per_task` durable appends from each of `CONCURRENCY` tasks; the time and the fsyncs taken.
async fn group_commit(per_task: usize) -> (Duration, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(ClickLog::open(ClickLogSettings::new(dir.path()), &Telemetry::new()).expect("open"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for i in 0..per_task {
                    assert_eq!(log.append(click(t * per_task + i)).await, Appended::Durable);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = started.elapsed();
    (elapsed, log.stats().fsyncs)
}

/// The same appends, each written and fdatasynced under one lock.
async fn fsync_per_record(per_task: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = Arc::new(Mutex::new(std::fs::File::create(dir.path().join("baseline.log")).expect("create")));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let file = Arc::clone(&file);
            tokio::spawn(async move {
                for i in 0..per_task {
                    let record = click(t * per_task + i);
                    let file = Arc::clone(&file);
                    tokio::task::spawn_blocking(move || {
                        let mut f = file.lock().expect("lock");
                        f.write_all(&record.payload).expect("write");
                        f.sync_data().expect("fdatasync");
                    })
                    .await
                    .expect("blocking task");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    started.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (group_per_task, baseline_per_task) = if full { (200, 10) } else { (2, 1) };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");

    let (group_time, fsyncs) = runtime.block_on(group_commit(group_per_task));
    let baseline_time = runtime.block_on(fsync_per_record(baseline_per_task));

    let group_records = (CONCURRENCY * group_per_task) as f64;
    let baseline_records = (CONCURRENCY * baseline_per_task) as f64;
    let group_rate = group_records / group_time.as_secs_f64();
    let baseline_rate = baseline_records / baseline_time.as_secs_f64();
    println!("durable appends, {CONCURRENCY} concurrent tasks:");
    println!(
        "  group commit      {group_records:>8} records in {group_time:>10.2?}: {group_rate:>10.0} records/s, {:.1} records per fsync",
        group_records / fsyncs.max(1) as f64
    );
    println!(
        "  fsync per record  {baseline_records:>8} records in {baseline_time:>10.2?}: {baseline_rate:>10.0} records/s"
    );
    println!("  ratio             {:.1}x", group_rate / baseline_rate);
}
