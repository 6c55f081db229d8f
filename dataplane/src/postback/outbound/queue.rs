//! The outbound postback queue in the store (`outboundPostbacks`): one job document per (conversion ID,
//! target), made by a unique-index insert, claimed by a lease written with a compare-and-swap on the
//! document's `version`, and finished the same way with its delivery log.
//!
//! Due jobs are found without range queries (the store has none): `status == pending`, ordered by
//! `nextAttemptAt`, the first few read and the due ones kept. A claim moves `nextAttemptAt` to the lease's
//! end, so a job in flight is out of the way, and comes due again by itself if its worker dies.
//!
//! The compare-and-swap is atomic on SQLite and MongoDB. FerretDB 1.x does not re-check the version when it
//! writes, so there two workers can both win a claim now and then, and the job is sent twice with the same
//! `Idempotency-Key` (the header exists for exactly that).

use serde::{Deserialize, Serialize};
use traffoflex_core::events::now_millis;
use traffoflex_core::store::{Collection, ConfigStore, ConfigStoreExt, Query, StoreError, Stored};
use traffoflex_crds::ConversionStatus;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    /// Waiting for its next attempt, or leased to a worker that is making it.
    Pending,
    /// A 2xx answer arrived.
    Delivered,
    /// Every attempt failed, or the target is refused.
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One delivery attempt, as the job's delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When it started (Unix ms).
    pub at: i64,
    /// The answer's HTTP status; 0 when none came (refused, unreachable, timed out).
    pub http_status: u16,
    /// Why it failed; empty when it was delivered.
    #[serde(default)]
    pub error: String,
    pub latency_millis: u32,
    /// The start of the answer's body (at most [`super::send::MAX_LOGGED_BODY`] bytes, lossy UTF-8).
    #[serde(default)]
    pub response: String,
    /// The worker that made it.
    #[serde(default)]
    pub worker: String,
}

/// An outbound postback job as stored; its store `id` is the `Idempotency-Key` it is sent with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundJob {
    pub conversion_id: String,
    /// Whose URL (`campaign:<id>` or `trafficSource:<id>`) and the conversion's revision (`#r<n>`).
    pub target: String,
    pub url: String,
    pub status: JobStatus,
    /// The conversion's status this job reports.
    pub conversion_status: ConversionStatus,
    pub revision: u64,
    #[serde(default)]
    pub network_id: String,
    #[serde(default)]
    pub transaction_id: String,
    #[serde(default)]
    pub campaign_id: String,
    /// The team of the conversion (who may see this job).
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub traffic_source_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the job is next due (Unix ms); while leased, the lease's end.
    pub next_attempt_at: i64,
    /// The worker holding the lease; empty when none does.
    #[serde(default)]
    pub lease_owner: String,
    /// When the lease ends (Unix ms); 0 when there is none.
    #[serde(default)]
    pub lease_until: i64,
    /// When it was delivered (Unix ms), 0 until then.
    #[serde(default)]
    pub delivered_at: i64,
    /// The last failure, empty when none.
    #[serde(default)]
    pub last_error: String,
    /// Every attempt, oldest first.
    #[serde(default)]
    pub log: Vec<Attempt>,
}

impl OutboundJob {
    /// A new job, due now.
    pub fn new(conversion_id: &str, target: String, url: String, conv: &super::super::record::ConversionDoc) -> Self {
        Self {
            conversion_id: conversion_id.to_owned(),
            target,
            url,
            status: JobStatus::Pending,
            conversion_status: conv.status,
            revision: conv.revision,
            network_id: conv.network_id.clone(),
            transaction_id: conv.transaction_id.clone(),
            campaign_id: conv.campaign_id.clone(),
            team_id: conv.team_id.clone(),
            traffic_source_id: conv.traffic_source_id.clone(),
            attempts: 0,
            next_attempt_at: now_millis(),
            lease_owner: String::new(),
            lease_until: 0,
            delivered_at: 0,
            last_error: String::new(),
            log: Vec::new(),
        }
    }
}

/// A job as stored.
pub type StoredJob = Stored<OutboundJob>;

/// What enqueueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    New,
    /// The same (conversion, target) was queued before: nothing changed.
    AlreadyQueued,
}

/// Queues `job` once per (conversion ID, target).
pub async fn enqueue(store: &dyn ConfigStore, job: &OutboundJob) -> Result<Enqueued, StoreError> {
    match store.insert_as::<_, StoredJob>(Collection::OutboundPostbacks, job).await {
        Ok(_) => Ok(Enqueued::New),
        Err(StoreError::Duplicate { .. }) => Ok(Enqueued::AlreadyQueued),
        Err(e) => Err(e),
    }
}

/// Up to `limit` pending jobs due at `now`, soonest first (read from the first `scan` pending ones).
pub async fn due(store: &dyn ConfigStore, now: i64, limit: usize, scan: u64) -> Result<Vec<StoredJob>, StoreError> {
    let query = Query::new().eq("status", JobStatus::Pending.as_str()).sort_asc("nextAttemptAt").limit(scan);
    let jobs: Vec<StoredJob> = store.find_as(Collection::OutboundPostbacks, &query).await?;
    Ok(jobs.into_iter().filter(|j| j.doc.next_attempt_at <= now).take(limit).collect())
}

/// Removes delivered and failed jobs that finished before `before` (Unix ms), oldest first, at most `limit`;
/// returns how many. Pending jobs are never removed.
pub async fn sweep(store: &dyn ConfigStore, before: i64, limit: u64) -> Result<u64, StoreError> {
    let mut removed = 0;
    for status in [JobStatus::Delivered, JobStatus::Failed] {
        let query = Query::new().eq("status", status.as_str()).sort_asc("nextAttemptAt").limit(limit);
        let jobs: Vec<StoredJob> = store.find_as(Collection::OutboundPostbacks, &query).await?;
        for job in jobs.iter().take_while(|j| j.doc.next_attempt_at < before) {
            match store.delete(Collection::OutboundPostbacks, &job.id, Some(job.version)).await {
                Ok(()) => removed += 1,
                Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Leases `job` to `owner` until `until` (Unix ms). `None` when another worker changed it first.
pub async fn claim(
    store: &dyn ConfigStore,
    job: &StoredJob,
    owner: &str,
    until: i64,
) -> Result<Option<StoredJob>, StoreError> {
    let leased =
        OutboundJob { lease_owner: owner.to_owned(), lease_until: until, next_attempt_at: until, ..job.doc.clone() };
    swap(store, job, &leased).await
}

/// Replaces `job` (at its version) with `next`; `None` when someone changed or removed it meanwhile.
pub async fn swap(
    store: &dyn ConfigStore,
    job: &StoredJob,
    next: &OutboundJob,
) -> Result<Option<StoredJob>, StoreError> {
    match store.replace_as(Collection::OutboundPostbacks, &job.id, Some(job.version), next).await {
        Ok(stored) => Ok(Some(stored)),
        Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
