//! Recording a conversion exactly once per (network, transaction ID): a unique-index insert (the only
//! dedupe FerretDB and MongoDB both hold under concurrency). A refused insert reads the conversion already
//! there: the same status is a duplicate; another status is a compare-and-swap replace with `revision + 1`,
//! retried a few times when someone else changed it first.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use traffoflex_core::analytics::ClickFacts;
use traffoflex_core::store::{Collection, ConfigStore, ConfigStoreExt, Filter, StoreError, Stored};
use traffoflex_crds::ConversionStatus;

/// How often a status change is retried after losing a compare-and-swap.
const CAS_ATTEMPTS: usize = 8;

/// A conversion as stored in [`Collection::Conversions`]; its store `id` is the conversion ID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionDoc {
    pub network_id: String,
    pub network_key: String,
    pub transaction_id: String,
    pub click_id: String,
    pub status: ConversionStatus,
    pub payout: Decimal,
    pub currency: String,
    /// The payout in the report currency; equal to `payout` until a rate table exists.
    pub revenue: Decimal,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub campaign_id: String,
    #[serde(default)]
    pub stream_id: String,
    #[serde(default)]
    pub destination_id: String,
    #[serde(default)]
    pub traffic_source_id: String,
    /// The team the conversion counts for: its campaign's, else its network's.
    #[serde(default)]
    pub team_id: String,
    pub attributed: bool,
    /// When the click happened (from the click ID), 0 when unknown.
    #[serde(default)]
    pub click_ts: i64,
    /// The click as analytics had it when the postback came, if it had it (for outbound postback macros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click: Option<ClickFacts>,
    /// When the conversion was first accepted (Unix ms).
    pub ts: i64,
    /// 1 on acceptance, +1 per status change.
    pub revision: u64,
}

/// What recording did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// A new conversion.
    Accepted(Stored<ConversionDoc>),
    /// The same (network, transaction ID) with the same status was already there; nothing changed.
    Duplicate(Stored<ConversionDoc>),
    /// The status changed: the stored conversion now has a higher revision.
    Updated(Stored<ConversionDoc>),
}

impl Recorded {
    pub fn conversion(&self) -> &Stored<ConversionDoc> {
        match self {
            Recorded::Accepted(c) | Recorded::Duplicate(c) | Recorded::Updated(c) => c,
        }
    }

    /// `accepted`, `duplicate` or `updated`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Recorded::Accepted(_) => "accepted",
            Recorded::Duplicate(_) => "duplicate",
            Recorded::Updated(_) => "updated",
        }
    }
}

/// Why a conversion could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store is unreachable: nothing was recorded, the network should retry.
    #[error("the conversion store is unavailable: {0}")]
    Unavailable(String),
    /// Too many concurrent status changes of one conversion.
    #[error("the conversion kept changing meanwhile; retry")]
    Contention,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => RecordError::Unavailable(m),
            other => RecordError::Store(other),
        }
    }
}

/// Records `doc` (whose `revision` is ignored) once per (network, transaction ID).
pub async fn record(store: &dyn ConfigStore, doc: ConversionDoc) -> Result<Recorded, RecordError> {
    let doc = ConversionDoc { revision: 1, ..doc };
    let filter =
        Filter::all().eq("networkId", doc.network_id.as_str()).eq("transactionId", doc.transaction_id.as_str());
    for _ in 0..CAS_ATTEMPTS {
        match store.insert_as::<_, Stored<ConversionDoc>>(Collection::Conversions, &doc).await {
            Ok(stored) => return Ok(Recorded::Accepted(stored)),
            Err(StoreError::Duplicate { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(existing) = store.find_one(Collection::Conversions, &filter).await? else {
            // Deleted between the refused insert and the read: insert again.
            continue;
        };
        let existing: Stored<ConversionDoc> = serde_json::from_value(existing)
            .map_err(|e| RecordError::Store(StoreError::Backend(format!("a stored conversion does not parse: {e}"))))?;
        if existing.doc.status == doc.status {
            return Ok(Recorded::Duplicate(existing));
        }
        let changed = ConversionDoc {
            status: doc.status,
            payout: doc.payout,
            currency: doc.currency.clone(),
            revenue: doc.revenue,
            event_type: if doc.event_type.is_empty() {
                existing.doc.event_type.clone()
            } else {
                doc.event_type.clone()
            },
            revision: existing.doc.revision.saturating_add(1),
            click: existing.doc.click.clone().or_else(|| doc.click.clone()),
            ..existing.doc.clone()
        };
        match store
            .replace_as::<_, Stored<ConversionDoc>>(
                Collection::Conversions,
                &existing.id,
                Some(existing.version),
                &changed,
            )
            .await
        {
            Ok(stored) => return Ok(Recorded::Updated(stored)),
            Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RecordError::Contention)
}
