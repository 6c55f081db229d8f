//! Outbound postbacks: when the postback service accepts a conversion or a status change, it tells the
//! campaign's traffic source, server to server, through a queue persisted in the store.
//!
//! * [`plan`] — which URL (the campaign's `outboundPostbackUrl`, else its traffic source's), for which
//!   statuses (the traffic source's `outboundPostbackStatuses`, `approved` by default), rendered with the
//!   conversion's macros; the job's `target` key (pure).
//! * [`queue`] — the jobs in `outboundPostbacks`: unique per (conversion ID, target), leases by
//!   compare-and-swap, the delivery log.
//! * [`send`] — one attempt: vetted address, `Idempotency-Key`, timeout, no redirects, 4 KiB read.
//! * [`worker`] — the loop each postback process runs: claim, send, retry with backoff, give up after 5.
//!
//! A job is queued as part of accepting the postback, before it is answered: a duplicate postback queues
//! again, which the unique index turns into nothing, so a network retrying after a failed enqueue (answered
//! `503 outboundQueueUnavailable`) gets the job queued then.

pub mod plan;
pub mod queue;
pub mod send;
pub mod worker;

use traffoflex_core::store::{ConfigStore, StoreError, Stored};

pub use plan::OutboundRoutes;
pub use queue::{Enqueued, JobStatus, OutboundJob};
pub use worker::{OutboundSettings, OutboundWorker};

use super::record::ConversionDoc;

/// Queues the outbound postback of a stored conversion, if its campaign has one for its status. `Ok(None)`
/// when none is due; a URL that can't be rendered is logged and skipped (the configuration is at fault, and
/// the conversion itself is recorded).
pub async fn enqueue_for(
    store: &dyn ConfigStore,
    routes: &OutboundRoutes,
    c: &Stored<ConversionDoc>,
) -> Result<Option<Enqueued>, StoreError> {
    let planned = match routes.plan(c) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(conversion = %c.id, campaign = %c.doc.campaign_id, error = %e, "no outbound postback");
            return Ok(None);
        }
    };
    let job = OutboundJob::new(&c.id, planned.target, planned.url, &c.doc);
    queue::enqueue(store, &job).await.map(Some)
}
