//! Prints the memory a routing snapshot takes: the bytes it holds live on the heap (counted by this probe's
//! allocator) and the process's resident memory, after loading it from a data directory made by `bench_seed`.
//! `cargo run --release --example mem_probe -- DATA_DIR`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use traffoflex_core::store::{ConfigStore, SqliteStore};
use traffoflex_dataplane::traffic::config::LiveConfig;

/// The system allocator, counting the bytes currently allocated and the most ever allocated at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size()
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed) - (layout.size() - new_size)
            };
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
        / 1024
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: mem_probe DATA_DIR")?);
    let store: Arc<dyn ConfigStore> = Arc::new(SqliteStore::open(&dir.join("config.sqlite")).await?);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let live = LiveConfig::new(store);
    live.refresh(true).await?;
    let loaded = LIVE.load(Ordering::Relaxed);
    let campaigns = live.current().snapshot.campaigns().len();
    println!(
        "snapshot of {campaigns} campaigns: {:.1} MiB live on the heap ({:.0} bytes a campaign), {:.1} MiB at the peak of loading; process RSS {} MiB",
        mib(loaded - before),
        (loaded - before) as f64 / campaigns.max(1) as f64,
        mib(PEAK.load(Ordering::Relaxed) - before),
        rss_mib()
    );
    Ok(())
}
