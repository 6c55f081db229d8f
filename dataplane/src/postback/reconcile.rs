//! Closing the one gap between the store and the event log: a postback is recorded in the store first and its
//! conversion event appended to the durable event log second, so a process that dies between the two leaves a
//! conversion without its event — and the network's retry is answered `duplicate`, which emits nothing.
//!
//! A running postback process keeps a marker in its event log's directory (`running`) with a heartbeat: the
//! time, rewritten every [`HEARTBEAT`]. A clean shutdown removes it after the log is closed. A process that
//! finds the marker at start knows the last run ended without that, and appends again the conversion events of
//! every conversion changed since shortly before the last heartbeat. Analytics stores a conversion once per
//! (network, transaction ID) at its highest revision, so an event appended twice counts once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use traffoflex_core::events::Event;
use traffoflex_core::store::{Collection, ConfigStore, ConfigStoreExt, Query, StoreError, Stored};

use super::process::conversion_event;
use super::record::ConversionDoc;
use crate::clicklog::{ClickLog, Record};

/// How often the heartbeat is written.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// How far before the last heartbeat the replay starts (the process may have lived up to one heartbeat
/// longer, plus clock steps).
const MARGIN: Duration = Duration::from_secs(120);

const PAGE: u64 = 500;

/// When a run was last seen alive.
pub type LastSeen = DateTime<Utc>;

/// The marker of a running process in `dir`.
pub fn marker(dir: &Path) -> PathBuf {
    dir.join("running")
}

/// When the last run was last seen alive, if it did not stop cleanly (its marker is still there). A marker
/// that can't be read counts as a heartbeat at the file's modification time.
pub fn unclean_since(dir: &Path) -> Option<DateTime<Utc>> {
    let path = marker(dir);
    let text = std::fs::read_to_string(&path).ok();
    let from_text = text.and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok()).map(|t| t.with_timezone(&Utc));
    from_text.or_else(|| std::fs::metadata(&path).and_then(|m| m.modified()).ok().map(DateTime::<Utc>::from))
}

/// Writes the heartbeat now (atomically: a temp file renamed over the marker).
pub fn beat(dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join("running.tmp");
    std::fs::write(&tmp, Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true))?;
    std::fs::rename(&tmp, marker(dir))
}

/// Removes the marker: the run ended cleanly.
pub fn clean_stop(dir: &Path) {
    if let Err(e) = std::fs::remove_file(marker(dir))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "could not remove the postback event log's running marker; the next start replays recent conversions");
    }
}

/// Beats every [`HEARTBEAT`] until `shutdown`.
pub fn spawn_heartbeat(dir: PathBuf, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    crate::live::spawn_every(HEARTBEAT, shutdown, move || {
        if let Err(e) = beat(&dir) {
            tracing::warn!(error = %e, "could not write the postback heartbeat");
        }
        std::future::ready(())
    })
}

/// Appends the conversion events of every conversion changed since `last_seen` minus a margin; returns how
/// many. The conversions are read newest first, a page at a time.
pub async fn replay_since(
    store: &dyn ConfigStore,
    log: &ClickLog,
    last_seen: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let from = last_seen - chrono::Duration::from_std(MARGIN).unwrap_or_default();
    let from = from.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut replayed = 0;
    let mut skip = 0;
    loop {
        let query = Query::new().sort_desc("updatedAt").skip(skip).limit(PAGE);
        let page: Vec<Stored<ConversionDoc>> = store.find_as(Collection::Conversions, &query).await?;
        let full = page.len() as u64 == PAGE;
        for c in &page {
            if c.updated_at < from {
                return Ok(replayed);
            }
            let event = Event::Conversion(conversion_event(c));
            if log.append(Record::from_event(&event)).await.is_dropped() {
                tracing::error!(conversion = %c.id, "replaying a conversion event failed: the event log is full");
            } else {
                replayed += 1;
            }
        }
        if !full {
            return Ok(replayed);
        }
        skip += PAGE;
    }
}
