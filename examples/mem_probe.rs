//! Prints the resident memory of loading a routing snapshot from a data directory made by `bench_seed`.
//! `cargo run --release --example mem_probe -- DATA_DIR`

use std::sync::Arc;

use traffoflex_core::store::{ConfigStore, SqliteStore};
use traffoflex_dataplane::traffic::config::LiveConfig;

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
    println!("start: {} MiB", rss_mib());
    let store: Arc<dyn ConfigStore> = Arc::new(SqliteStore::open(&dir.join("config.sqlite")).await?);
    let live = LiveConfig::new(store);
    live.refresh(true).await?;
    println!("snapshot loaded ({} campaigns): {} MiB", live.current().snapshot.campaigns().len(), rss_mib());
    Ok(())
}
