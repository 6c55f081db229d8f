//! [`RoutingSnapshot`]: the whole routing configuration, built once from the store's documents and then
//! only read (the server swaps in a new one on reload).
//!
//! Building does every lookup and parse a click would otherwise repeat: campaigns are indexed by key and ID,
//! each campaign's enabled streams are sorted by `(priority, id)` with their destinations resolved to
//! indexes, conditions are compiled, URL templates and caps parsed. A document that can't be used —
//! a dangling reference, a bad condition or URL — is skipped with a [`BuildWarning`]; the rest of the
//! snapshot still works. Inputs are sorted by ID first, so the same documents always build the same
//! snapshot (for example, which of two campaigns with one key wins).
//!
//! It also indexes click-ID fingerprints ([`traffoflex_core::clickid`]) so a postback can be attributed
//! from the click ID alone: [`RoutingSnapshot::resolve`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rust_decimal::Decimal;
use traffoflex_core::clickid::ClickIdInfo;
use traffoflex_crds::{CampaignSpec, DestinationSpec, Schedule, Selection, StreamSpec, TrafficSourceSpec};

use super::antirepeat::AntiRepeatPolicy;
use super::availability::CapLimit;
use super::condition::CompiledCondition;
use super::macros::UrlTemplate;
use super::select::BestRoiPolicy;

mod build;
pub use build::SnapshotBuilder;

/// Something in the configuration the snapshot had to skip or work around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildWarning {
    /// `Campaign`, `Stream`, `Destination` or `TrafficSource`.
    pub kind: &'static str,
    /// The object's ID.
    pub id: String,
    /// What is wrong and what was done about it.
    pub message: String,
}

/// A campaign as routing sees it.
#[derive(Debug)]
pub struct CampaignEntry {
    pub(crate) id: Box<str>,
    pub(crate) key: Box<str>,
    pub(crate) paused: bool,
    /// Shared by every campaign with the same trafficback URL.
    pub(crate) trafficback: Option<Arc<UrlTemplate>>,
    pub(crate) trafficback_max_depth: u32,
    pub(crate) traffic_source_id: Option<Arc<str>>,
    /// The owning team ([`traffoflex_crds::DEFAULT_TEAM`] when the document names none).
    pub(crate) team_id: Arc<str>,
    pub(crate) source_key: Option<Arc<str>>,
    pub(crate) cpc: Option<(Decimal, Arc<str>)>,
    pub(crate) streams: Box<[StreamEntry]>,
    /// Stream and destination fingerprints of every stream of the campaign (disabled ones too), sorted by
    /// fingerprint; `None` where two IDs share a fingerprint.
    pub(crate) stream_fp: FingerprintIndex,
    pub(crate) destination_fp: FingerprintIndex,
}

/// Fingerprint -> ID, sorted by fingerprint; `None` where two IDs share one.
pub(crate) type FingerprintIndex = Box<[([u8; 4], Option<Arc<str>>)]>;

impl CampaignEntry {
    /// The campaign's ID.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The public key in `/c/{key}`.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// Whether the campaign is paused (its clicks get 404).
    pub fn is_paused(&self) -> bool {
        self.paused
    }
    /// The traffic source's ID, if any.
    pub fn traffic_source_id(&self) -> Option<&str> {
        self.traffic_source_id.as_deref()
    }
    /// The team owning the campaign.
    pub fn team_id(&self) -> &str {
        &self.team_id
    }
    /// The traffic source's key (the `source` default), if the source exists.
    pub fn source_key(&self) -> Option<&str> {
        self.source_key.as_deref()
    }
    /// The per-click cost of a `cpc` cost model and its currency (the `cost` default).
    pub fn cpc_cost(&self) -> Option<(Decimal, &str)> {
        self.cpc.as_ref().map(|(d, c)| (*d, &**c))
    }
    /// The trafficback URL template, if any usable one is set.
    pub fn trafficback_url(&self) -> Option<&str> {
        self.trafficback.as_deref().map(UrlTemplate::as_str)
    }
    /// How many trafficback rounds a click may make.
    pub fn trafficback_max_depth(&self) -> u32 {
        self.trafficback_max_depth
    }
    /// The enabled, usable streams in evaluation order.
    pub fn streams(&self) -> &[StreamEntry] {
        &self.streams
    }
}

/// A stream as routing sees it.
#[derive(Debug)]
pub struct StreamEntry {
    pub(crate) id: Arc<str>,
    pub(crate) name: Box<str>,
    pub(crate) priority: i32,
    /// Shared by every stream with the same conditions.
    pub(crate) condition: Option<Arc<CompiledCondition>>,
    pub(crate) selection: Selection,
    pub(crate) destinations: Box<[StreamTarget]>,
    pub(crate) anti_repeat: Option<AntiRepeatPolicy>,
    pub(crate) best_roi: BestRoiPolicy,
    /// The round-robin position: the only state of a snapshot.
    pub(crate) rr: AtomicUsize,
}

impl StreamEntry {
    /// The stream's ID.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Lower is evaluated first.
    pub fn priority(&self) -> i32 {
        self.priority
    }
    /// How a destination is chosen.
    pub fn selection(&self) -> Selection {
        self.selection
    }
    /// How many usable destinations it has.
    pub fn destination_count(&self) -> usize {
        self.destinations.len()
    }
}

/// A destination of a stream: an index into the snapshot's destinations and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamTarget {
    pub(crate) dest: usize,
    pub(crate) weight: u64,
}

/// A destination as routing sees it.
#[derive(Debug)]
pub struct DestinationEntry {
    pub(crate) id: Arc<str>,
    pub(crate) name: Box<str>,
    pub(crate) switched_on: bool,
    pub(crate) template: UrlTemplate,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) caps: Box<[CapLimit]>,
}

impl DestinationEntry {
    /// The destination's ID.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The URL template.
    pub fn url_template(&self) -> &str {
        self.template.as_str()
    }
    /// Its caps.
    pub fn caps(&self) -> &[CapLimit] {
        &self.caps
    }
}

/// What a click ID's fingerprints point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribution<'s> {
    /// The campaign.
    pub campaign_id: &'s str,
    /// The stream; `None` for trafficback clicks or an unknown (or ambiguous) fingerprint.
    pub stream_id: Option<&'s str>,
    /// The destination; `None` likewise.
    pub destination_id: Option<&'s str>,
}

/// The immutable, pre-indexed routing configuration (see the module docs).
#[derive(Debug, Default)]
pub struct RoutingSnapshot {
    pub(crate) campaigns: Box<[CampaignEntry]>,
    pub(crate) destinations: Box<[DestinationEntry]>,
    by_key: HashMap<Box<str>, usize>,
    by_id: HashMap<Box<str>, usize>,
    by_token: HashMap<Box<str>, usize>,
    by_public_id: HashMap<Box<str>, usize>,
    destination_by_id: HashMap<Box<str>, usize>,
    /// `None` where two campaign IDs share a fingerprint.
    by_fingerprint: HashMap<[u8; 8], Option<usize>>,
    warnings: Vec<BuildWarning>,
}

impl RoutingSnapshot {
    /// Builds a snapshot from the store's documents, each `(id, spec)`. Never fails: what can't be used
    /// is skipped and reported in [`RoutingSnapshot::warnings`].
    pub fn build(
        campaigns: Vec<(String, CampaignSpec)>,
        streams: Vec<(String, StreamSpec)>,
        destinations: Vec<(String, DestinationSpec)>,
        traffic_sources: Vec<(String, TrafficSourceSpec)>,
    ) -> Self {
        build::build(campaigns, streams, destinations, traffic_sources)
    }

    /// The campaign with this public key (paused ones too).
    pub fn campaign(&self, key: &str) -> Option<&CampaignEntry> {
        self.by_key.get(key).and_then(|&i| self.campaigns.get(i))
    }

    /// The campaign with this ID.
    pub fn campaign_by_id(&self, id: &str) -> Option<&CampaignEntry> {
        self.by_id.get(id).and_then(|&i| self.campaigns.get(i))
    }

    /// The campaign `/go/{id}` names: by its ID, else by its `publicId`.
    pub fn campaign_for_go(&self, id: &str) -> Option<&CampaignEntry> {
        self.campaign_by_id(id).or_else(|| self.by_public_id.get(id).and_then(|&i| self.campaigns.get(i)))
    }

    /// The campaign with this public token (`/r/{publicToken}`).
    pub fn campaign_by_token(&self, token: &str) -> Option<&CampaignEntry> {
        self.by_token.get(token).and_then(|&i| self.campaigns.get(i))
    }

    /// The destination with this ID.
    pub fn destination(&self, id: &str) -> Option<&DestinationEntry> {
        self.destination_by_id.get(id).and_then(|&i| self.destinations.get(i))
    }

    /// Every campaign, by ID.
    pub fn campaigns(&self) -> &[CampaignEntry] {
        &self.campaigns
    }

    /// What was skipped or worked around at build.
    pub fn warnings(&self) -> &[BuildWarning] {
        &self.warnings
    }

    /// Takes the round-robin positions of the streams `previous` has too, so a reload (any change anywhere)
    /// does not send the next click of every round-robin stream back to its first destination.
    pub fn carry_over(&self, previous: &RoutingSnapshot) {
        for campaign in self.campaigns.iter() {
            let Some(old) = previous.campaign_by_id(&campaign.id) else { continue };
            for stream in campaign.streams.iter() {
                if let Some(before) = old.streams.iter().find(|s| s.id == stream.id) {
                    stream.rr.store(before.rr.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
    }

    /// What a verified click ID's fingerprints point at, or `None` when its campaign isn't known here.
    pub fn resolve(&self, info: &ClickIdInfo) -> Option<Attribution<'_>> {
        let campaign = self.by_fingerprint.get(&info.campaign).copied().flatten()?;
        let campaign = self.campaigns.get(campaign)?;
        Some(Attribution {
            campaign_id: &campaign.id,
            stream_id: find_fp(&info.stream, &campaign.stream_fp),
            destination_id: find_fp(&info.destination, &campaign.destination_fp),
        })
    }
}

/// The ID under a non-zero fingerprint, unless unknown or ambiguous.
fn find_fp<'m>(fp: &[u8; 4], sorted: &'m FingerprintIndex) -> Option<&'m str> {
    if *fp == [0; 4] {
        return None;
    }
    let i = sorted.binary_search_by(|(k, _)| k.cmp(fp)).ok()?;
    sorted[i].1.as_deref()
}

#[cfg(test)]
mod tests;
