//! The delivery worker every postback process runs: every poll interval it claims the due jobs with a lease,
//! sends them (a few at a time), and writes each attempt into the job's delivery log — delivered on a 2xx,
//! failed after [`OutboundSettings::max_attempts`] attempts or a refused target, else due again after an
//! exponential backoff. On shutdown the attempts in flight finish (each bounded by the timeout) and nothing
//! new is claimed; a job whose worker died comes due again when its lease ends.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;
use traffoflex_core::events::now_millis;
use traffoflex_core::store::{ConfigStore, StoreError};
use traffoflex_core::telemetry::Telemetry;

use super::queue::{self, Attempt, JobStatus, OutboundJob, StoredJob};
use super::send::{Delivery, send};
use crate::egress::AddressPolicy;

/// How the worker delivers.
#[derive(Debug, Clone, Copy)]
pub struct OutboundSettings {
    /// How often the queue is checked for due jobs.
    pub poll_interval: Duration,
    /// Timeout of one attempt (DNS, connect, answer and body).
    pub timeout: Duration,
    /// How long a claimed job stays with its worker; longer than an attempt can take.
    pub lease: Duration,
    /// The wait after the first failed attempt; each further one waits 4 times longer.
    pub backoff_base: Duration,
    /// Attempts before a job is marked failed.
    pub max_attempts: u32,
    /// Jobs claimed per poll.
    pub batch: usize,
    /// Attempts in flight at once.
    pub concurrency: usize,
    pub policy: AddressPolicy,
    /// Delivered and failed jobs (with their delivery logs) are removed this long after they finished.
    pub retention: Duration,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            backoff_base: Duration::from_secs(30),
            max_attempts: 5,
            batch: 64,
            concurrency: 16,
            policy: AddressPolicy::default(),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// How often a worker removes finished jobs past their retention, and how many at most each time.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
const SWEEP_BATCH: u64 = 1000;

/// The wait after `failed` failed attempts (1 -> `base`, 2 -> 4 × `base`, 3 -> 16 × `base`, …).
pub fn backoff(base: Duration, failed: u32) -> Duration {
    let factor = 4u32.saturating_pow(failed.saturating_sub(1).min(10));
    base.saturating_mul(factor)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// One process's delivery worker.
pub struct OutboundWorker {
    store: Arc<dyn ConfigStore>,
    settings: OutboundSettings,
    id: String,
    attempts: Family<ResultLabel, Counter>,
}

impl OutboundWorker {
    /// A worker with a fresh ID (the lease owner in the store).
    pub fn new(store: Arc<dyn ConfigStore>, settings: OutboundSettings, telemetry: &Telemetry) -> Self {
        let attempts = Family::<ResultLabel, Counter>::default();
        telemetry.register("traffoflex_outbound_postback", |r| {
            r.register(
                "attempts",
                "Outbound postback attempts by result (delivered, retry, failed, leaseLost)",
                attempts.clone(),
            );
        });
        let id = format!("worker-{}", uuid::Uuid::now_v7().simple());
        Self { store, settings, id, attempts }
    }

    /// The lease owner this worker writes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown`, then lets the attempts in flight finish.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.id, "outbound postback worker started");
        let mut swept: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                swept = Some(std::time::Instant::now());
                self.sweep().await;
            }
            let full = match self.tick().await {
                Ok(n) => n >= self.settings.batch,
                Err(e) => {
                    tracing::warn!(error = %e, "outbound postback queue unavailable; retrying");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        tracing::info!(worker = %self.id, "outbound postback worker stopped");
    }

    /// Removes the finished jobs older than the retention, a bounded number per call.
    async fn sweep(&self) {
        let retention = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_millis().saturating_sub(retention);
        match queue::sweep(self.store.as_ref(), before, SWEEP_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "finished outbound postback jobs past their retention removed"),
            Err(e) => tracing::warn!(error = %e, "removing old outbound postback jobs failed; retrying later"),
        }
    }

    /// One pass: claims the due jobs and makes one attempt at each. Returns how many were claimed.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let store = self.store.as_ref();
        let now = now_millis();
        let due = queue::due(store, now, self.settings.batch, self.settings.batch as u64).await?;
        let until = now.saturating_add(i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX));
        let mut claimed = Vec::with_capacity(due.len());
        for job in &due {
            match queue::claim(store, job, &self.id, until).await {
                Ok(Some(job)) => claimed.push(job),
                // Another worker has it.
                Ok(None) => {}
                // Send what is claimed already; the rest waits for the next poll.
                Err(e) if claimed.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbound postbacks failed");
                    break;
                }
            }
        }
        let n = claimed.len();
        futures::stream::iter(claimed)
            .map(|job| self.attempt(job))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        Ok(n)
    }

    async fn attempt(&self, job: StoredJob) {
        let at = now_millis();
        let s = &self.settings;
        let d = send(&job.doc.url, &job.id, s.timeout, s.policy).await;
        let next = self.outcome(&job.doc, at, &d);
        let result = match next.status {
            JobStatus::Delivered => "delivered",
            JobStatus::Failed => "failed",
            JobStatus::Pending => "retry",
        };
        match queue::swap(self.store.as_ref(), &job, &next).await {
            Ok(Some(_)) => {
                self.attempts.get_or_create(&ResultLabel { result }).inc();
                let (attempt, status) = (next.attempts, d.http_status);
                match next.status {
                    JobStatus::Delivered => {
                        tracing::info!(job = %job.id, conversion = %job.doc.conversion_id, attempt, status, "outbound postback delivered");
                    }
                    _ => tracing::warn!(
                        job = %job.id, conversion = %job.doc.conversion_id, attempt, status, error = %d.error,
                        outcome = next.status.as_str(), "outbound postback attempt failed"
                    ),
                }
            }
            Ok(None) => {
                self.attempts.get_or_create(&ResultLabel { result: "leaseLost" }).inc();
                tracing::warn!(job = %job.id, "outbound postback job changed while it was being sent; its attempt is not logged");
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "outbound postback attempt not recorded; the job comes due again when its lease ends");
            }
        }
    }

    /// The job after an attempt that started at `at` and got `d`.
    fn outcome(&self, job: &OutboundJob, at: i64, d: &Delivery) -> OutboundJob {
        let number = job.attempts.saturating_add(1);
        let now = now_millis();
        let mut next = job.clone();
        next.attempts = number;
        next.lease_owner.clear();
        next.lease_until = 0;
        next.log.push(Attempt {
            number,
            at,
            http_status: d.http_status,
            error: d.error.clone(),
            latency_millis: d.latency_millis,
            response: d.response.clone(),
            worker: self.id.clone(),
        });
        if d.ok {
            next.status = JobStatus::Delivered;
            next.delivered_at = now;
            next.next_attempt_at = now;
            next.last_error.clear();
        } else {
            next.last_error.clone_from(&d.error);
            if d.permanent || number >= self.settings.max_attempts {
                next.status = JobStatus::Failed;
                next.next_attempt_at = now;
            } else {
                let wait = backoff(self.settings.backoff_base, number);
                next.next_attempt_at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_fourfold() {
        let base = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=4).map(|n| backoff(base, n).as_secs()).collect();
        assert_eq!(waits, [30, 120, 480, 1920]);
        assert_eq!(backoff(base, u32::MAX), backoff(base, 11), "capped, no overflow");
    }
}
