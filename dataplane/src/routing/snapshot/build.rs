//! Building a [`RoutingSnapshot`] from the store's documents: resolve, compile, index, warn.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use sha2::{Digest, Sha256};
use traffoflex_core::clickid::{fingerprint4, fingerprint8};
use traffoflex_crds::campaign::MAX_TRAFFICBACK_DEPTH;
use traffoflex_crds::caps::MAX_WINDOW_HOURS;
use traffoflex_crds::{
    CampaignSpec, CampaignStatus, CostModelType, DestinationSpec, Selection, StreamSpec, TrafficSourceSpec,
};

use super::{
    BuildWarning, CampaignEntry, DestinationEntry, FingerprintIndex, RoutingSnapshot, StreamEntry, StreamTarget,
};
use crate::routing::antirepeat::{AntiRepeatPolicy, UserKey};
use crate::routing::availability::CapLimit;
use crate::routing::condition::{CompiledCondition, NodeCache};
use crate::routing::macros::UrlTemplate;
use crate::routing::select::BestRoiPolicy;

struct Warnings(Vec<BuildWarning>);

/// One copy of each value many objects repeat: IDs that several campaigns refer to (destinations, traffic
/// sources, teams), trafficback URLs, and compiled conditions (streams made from one template often share
/// theirs). A snapshot of many campaigns is mostly such repeats.
#[derive(Default)]
struct Interner {
    strs: HashSet<Arc<str>>,
    templates: HashMap<Box<str>, Arc<UrlTemplate>>,
    /// By the SHA-256 of the condition's JSON: a load holds every distinct condition's key until it is done,
    /// and the JSON itself would be as large as the compiled conditions.
    conditions: HashMap<[u8; 32], Arc<CompiledCondition>>,
    /// The rules and subtrees of those conditions, by the same kind of key: distinct conditions still share them.
    nodes: NodeCache,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strs.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.strs.insert(Arc::clone(&a));
        a
    }

    fn template(&mut self, url: &str) -> Result<Arc<UrlTemplate>, crate::routing::macros::TemplateError> {
        if let Some(t) = self.templates.get(url) {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(UrlTemplate::parse(url)?);
        self.templates.insert(url.into(), Arc::clone(&t));
        Ok(t)
    }

    fn condition(&mut self, condition: &traffoflex_crds::Condition) -> Result<Arc<CompiledCondition>, String> {
        // The document's own JSON identifies it: equal conditions serialise equally.
        let json = serde_json::to_vec(condition).map_err(|e| e.to_string())?;
        let key: [u8; 32] = Sha256::digest(&json).into();
        if let Some(c) = self.conditions.get(&key) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(CompiledCondition::compile_with(condition, &mut self.nodes)?);
        self.conditions.insert(key, Arc::clone(&c));
        Ok(c)
    }
}

/// Fingerprint -> ID while building, sorted by fingerprint, so that [`freeze`] only has to let go of spare
/// room. A small sorted `Vec` rather than a map: a load holds two of these per campaign until it is done, and
/// with 10,000 campaigns their hash tables took more than 8 MiB at the peak of a load.
pub(super) type FpList = Vec<([u8; 4], Option<Arc<str>>)>;

pub(super) fn freeze(map: FpList) -> FingerprintIndex {
    map.into_boxed_slice()
}

/// Makes room for one more element: exactly one while `v` is short (most campaigns have a handful of streams,
/// and doubling would leave a third of what a load builds per campaign unused until it is done), by doubling
/// beyond that, so that a campaign with thousands of streams still loads in linear time.
fn reserve_one<T>(v: &mut Vec<T>) {
    const TIGHT_UP_TO: usize = 32;
    if v.len() == v.capacity() && v.len() < TIGHT_UP_TO {
        v.reserve_exact(1);
    }
}

impl Warnings {
    fn add(&mut self, kind: &'static str, id: &str, message: impl Into<String>) {
        self.0.push(BuildWarning { kind, id: id.to_string(), message: message.into() });
    }
}

pub(super) fn build(
    campaigns: Vec<(String, CampaignSpec)>,
    mut streams: Vec<(String, StreamSpec)>,
    destinations: Vec<(String, DestinationSpec)>,
    sources: Vec<(String, TrafficSourceSpec)>,
) -> RoutingSnapshot {
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = SnapshotBuilder::new(campaigns, destinations, sources);
    for (id, spec) in &streams {
        builder.add_stream(id, spec);
    }
    builder.finish()
}

/// Builds a [`RoutingSnapshot`] in steps: campaigns, destinations and traffic sources first, then the streams one
/// at a time, so that a loader can compile streams (most of a large configuration) page by page as it reads
/// them instead of holding every document at once. Streams are best added in ID order: of two with the same
/// ID, the first added is kept.
pub struct SnapshotBuilder {
    snap: RoutingSnapshot,
    camps: Vec<CampaignEntry>,
    dests: Vec<DestinationEntry>,
    per_campaign: Vec<Vec<StreamEntry>>,
    fingerprints: Vec<(FpList, FpList)>,
    seen_streams: HashSet<Arc<str>>,
    intern: Interner,
    w: Warnings,
}

impl SnapshotBuilder {
    pub fn new(
        mut campaigns: Vec<(String, CampaignSpec)>,
        mut destinations: Vec<(String, DestinationSpec)>,
        mut sources: Vec<(String, TrafficSourceSpec)>,
    ) -> Self {
        campaigns.sort_by(|a, b| a.0.cmp(&b.0));
        destinations.sort_by(|a, b| a.0.cmp(&b.0));
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        let mut w = Warnings(Vec::new());
        let mut snap = RoutingSnapshot::default();
        let mut intern = Interner::default();

        let mut source_keys: HashMap<&str, &str> = HashMap::new();
        for (id, spec) in &sources {
            if source_keys.insert(id, &spec.key).is_some() {
                w.add("TrafficSource", id, "the ID is used twice; the first one is kept");
            }
        }

        let mut dests = Vec::with_capacity(destinations.len());
        for (id, spec) in &destinations {
            if snap.destination_by_id.contains_key(id.as_str()) {
                w.add("Destination", id, "the ID is used twice; the first one is kept");
                continue;
            }
            if let Some(entry) = destination(id, spec, &mut intern, &mut w) {
                snap.destination_by_id.insert(id.as_str().into(), dests.len());
                dests.push(entry);
            }
        }

        let mut camps: Vec<CampaignEntry> = Vec::with_capacity(campaigns.len());
        for (id, spec) in &campaigns {
            if snap.by_id.contains_key(id.as_str()) {
                w.add("Campaign", id, "the ID is used twice; the first one is kept");
                continue;
            }
            if let Some(&other) = snap.by_key.get(spec.key.as_str()) {
                let other = camps.get(other).map_or("", |c| &*c.id);
                w.add(
                    "Campaign",
                    id,
                    format!("key `{}` is already campaign {other}'s; this campaign is skipped", spec.key),
                );
                continue;
            }
            let entry = campaign(id, spec, &source_keys, &mut intern, &mut w);
            index_campaign(&mut snap, camps.len(), id, spec, &mut w);
            camps.push(entry);
        }
        Self {
            per_campaign: camps.iter().map(|_| Vec::new()).collect(),
            fingerprints: camps.iter().map(|_| Default::default()).collect(),
            snap,
            camps,
            dests,
            seen_streams: HashSet::new(),
            intern,
            w,
        }
    }

    /// Compiles one stream into its campaign (or notes why it can't be used).
    pub fn add_stream(&mut self, id: &str, spec: &StreamSpec) {
        // Not interned: stream IDs are unique, so the interner would only hold a second set of them.
        let stream_id: Arc<str> = Arc::from(id);
        if !self.seen_streams.insert(Arc::clone(&stream_id)) {
            self.w.add("Stream", id, "the ID is used twice; the first one is kept");
            return;
        }
        let Some(campaign_id) = spec.campaign_id.as_deref() else {
            self.w.add("Stream", id, "has no campaignId; skipped");
            return;
        };
        let Some(&ci) = self.snap.by_id.get(campaign_id) else {
            self.w.add("Stream", id, format!("campaign {campaign_id} does not exist; skipped"));
            return;
        };
        if let (Some(camp), Some(fps)) = (self.camps.get(ci), self.fingerprints.get_mut(ci)) {
            index_stream_fingerprints(&camp.id, fps, &stream_id, spec, &mut self.intern, &mut self.w);
        }
        if !spec.enabled {
            return;
        }
        if let (Some(entry), Some(list)) =
            (stream(stream_id, spec, &self.snap, &mut self.intern, &mut self.w), self.per_campaign.get_mut(ci))
        {
            reserve_one(list);
            list.push(entry);
        }
    }

    /// The snapshot: each campaign's streams in priority order (by ID among equals).
    pub fn finish(self) -> RoutingSnapshot {
        let Self { mut snap, mut camps, dests, per_campaign, fingerprints, w, .. } = self;
        for ((camp, mut list), (streams, destinations)) in camps.iter_mut().zip(per_campaign).zip(fingerprints) {
            list.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
            camp.streams = list.into();
            camp.stream_fp = freeze(streams);
            camp.destination_fp = freeze(destinations);
        }
        snap.campaigns = camps.into();
        snap.destinations = dests.into();
        snap.warnings = w.0;
        snap
    }
}

/// Indexes campaign number `index` by ID, key, click-ID fingerprint, public token and public ID.
fn index_campaign(snap: &mut RoutingSnapshot, index: usize, id: &str, spec: &CampaignSpec, w: &mut Warnings) {
    match snap.by_fingerprint.entry(fingerprint8(id)) {
        Entry::Vacant(slot) => {
            slot.insert(Some(index));
        }
        Entry::Occupied(mut slot) => {
            slot.insert(None);
            w.add("Campaign", id, "shares its click-ID fingerprint with another campaign: clicks of both can't be attributed from the ID alone");
        }
    }
    if let Some(token) = spec.public_token.as_deref().filter(|t| !t.is_empty()) {
        match snap.by_token.entry(token.into()) {
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
            Entry::Occupied(_) => w.add("Campaign", id, "its publicToken is another campaign's too; `/r/` goes there"),
        }
    }
    if let Some(public_id) = spec.public_id.as_deref().filter(|t| !t.is_empty()) {
        match snap.by_public_id.entry(public_id.into()) {
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
            Entry::Occupied(_) => w.add("Campaign", id, "its publicId is another campaign's too; `/go/` goes there"),
        }
    }
    snap.by_id.insert(id.into(), index);
    snap.by_key.insert(spec.key.as_str().into(), index);
}

fn destination(id: &str, spec: &DestinationSpec, intern: &mut Interner, w: &mut Warnings) -> Option<DestinationEntry> {
    let template = match UrlTemplate::parse(&spec.url) {
        Ok(t) => t,
        Err(e) => {
            w.add("Destination", id, format!("{e}; skipped"));
            return None;
        }
    };
    if let Some(schedule) = &spec.schedule
        && schedule.enabled
        && schedule.tz().is_none()
    {
        w.add("Destination", id, format!("unknown time zone `{}`: the schedule is always closed", schedule.time_zone));
    }
    let mut caps = Vec::new();
    for rule in spec.caps.as_ref().map(|c| c.effective_rules()).unwrap_or_default() {
        let Some(limit) = rule.limit.to_decimal() else {
            w.add(
                "Destination",
                id,
                format!("cap limit `{}` is not a number; that cap is ignored", rule.limit.as_str()),
            );
            continue;
        };
        let hours = rule.window_hours.clamp(1, MAX_WINDOW_HOURS);
        caps.push(CapLimit { metric: rule.metric, limit, window_hours: u32::try_from(hours).unwrap_or(24) });
    }
    Some(DestinationEntry {
        id: intern.str(id),
        name: spec.name.as_str().into(),
        switched_on: spec.is_switched_on(),
        template,
        schedule: spec.schedule.clone(),
        caps: caps.into(),
    })
}

fn campaign(
    id: &str,
    spec: &CampaignSpec,
    sources: &HashMap<&str, &str>,
    intern: &mut Interner,
    w: &mut Warnings,
) -> CampaignEntry {
    let trafficback = spec.trafficback_url.as_deref().and_then(|url| match intern.template(url.trim()) {
        Ok(t) => Some(t),
        Err(e) => {
            w.add("Campaign", id, format!("trafficbackUrl: {e}; clicks without a route get 404"));
            None
        }
    });
    let source_key = spec.traffic_source_id.as_deref().and_then(|sid| match sources.get(sid) {
        Some(key) => Some(intern.str(key)),
        None => {
            w.add("Campaign", id, format!("traffic source {sid} does not exist; `source` stays empty"));
            None
        }
    });
    let cpc = spec
        .cost_model
        .as_ref()
        .filter(|m| m.type_ == CostModelType::Cpc)
        .and_then(|m| Some((m.value.to_decimal()?, intern.str(m.currency.as_deref().unwrap_or("")))));
    let depth = spec.trafficback_max_depth.clamp(0, MAX_TRAFFICBACK_DEPTH);
    CampaignEntry {
        id: id.into(),
        key: spec.key.as_str().into(),
        paused: spec.status == CampaignStatus::Paused,
        trafficback,
        trafficback_max_depth: u32::try_from(depth).unwrap_or(1),
        traffic_source_id: spec.traffic_source_id.as_deref().map(|s| intern.str(s)),
        team_id: intern.str(spec.team_id.as_deref().unwrap_or(traffoflex_crds::DEFAULT_TEAM)),
        source_key,
        cpc,
        streams: Box::default(),
        stream_fp: Box::default(),
        destination_fp: Box::default(),
    }
}

/// Adds `id` under `fp`; false when another ID already has the fingerprint (it becomes ambiguous).
pub(super) fn index_fp(map: &mut FpList, fp: [u8; 4], id: &Arc<str>) -> bool {
    match map.binary_search_by(|(k, _)| k.cmp(&fp)) {
        Err(at) => {
            reserve_one(map);
            map.insert(at, (fp, Some(Arc::clone(id))));
            true
        }
        Ok(at) => {
            let slot = &mut map[at].1;
            if slot.as_deref() == Some(&**id) {
                return true;
            }
            *slot = None;
            false
        }
    }
}

fn index_stream_fingerprints(
    campaign_id: &str,
    (streams, destinations): &mut (FpList, FpList),
    id: &Arc<str>,
    spec: &StreamSpec,
    intern: &mut Interner,
    w: &mut Warnings,
) {
    if !index_fp(streams, fingerprint4(id), id) {
        w.add("Stream", id, "shares its click-ID fingerprint with another stream of the campaign");
    }
    for dest_id in spec.destinations.iter().filter_map(|d| d.destination_id.as_deref()) {
        if !index_fp(destinations, fingerprint4(dest_id), &intern.str(dest_id)) {
            w.add(
                "Destination",
                dest_id,
                format!("shares its click-ID fingerprint with another destination of campaign {campaign_id}"),
            );
        }
    }
}

fn stream(
    id: Arc<str>,
    spec: &StreamSpec,
    snap: &RoutingSnapshot,
    intern: &mut Interner,
    w: &mut Warnings,
) -> Option<StreamEntry> {
    let id = &id;
    let condition = match spec.conditions.as_ref().map(|c| intern.condition(c)).transpose() {
        Ok(c) => c,
        Err(e) => {
            w.add("Stream", id, format!("conditions: {e}; skipped"));
            return None;
        }
    };
    let mut targets = Vec::with_capacity(spec.destinations.len());
    for (i, d) in spec.destinations.iter().enumerate() {
        let Some(dest_id) = d.destination_id.as_deref() else {
            w.add("Stream", id, format!("destinations[{i}] has no destinationId; it is left out"));
            continue;
        };
        let Some(&dest) = snap.destination_by_id.get(dest_id) else {
            w.add("Stream", id, format!("destination {dest_id} does not exist or can't be used; it is left out"));
            continue;
        };
        targets.push(StreamTarget { dest, weight: u64::try_from(d.weight).unwrap_or(0) });
    }
    if targets.is_empty() {
        w.add("Stream", id, "has no usable destination; skipped");
        return None;
    }
    let anti_repeat = spec.anti_repeat.as_ref().filter(|a| a.enabled).map(|a| {
        let user_key = UserKey::parse(a.effective_user_key()).unwrap_or_else(|| {
            w.add("Stream", id, format!("antiRepeat.userKey `{}` is not a user key; using ip", a.effective_user_key()));
            UserKey::Ip
        });
        let window_ms = a.effective_window_seconds().clamp(1, MAX_WINDOW_HOURS * 3600).saturating_mul(1000);
        AntiRepeatPolicy { user_key, window_ms, exhausted: a.exhausted_mode }
    });
    let roi = spec.best_roi.clone().unwrap_or_default();
    let best_roi = BestRoiPolicy {
        window_hours: u32::try_from(roi.window_hours.clamp(1, MAX_WINDOW_HOURS)).unwrap_or(24),
        min_clicks: u64::try_from(roi.min_clicks).unwrap_or(0),
        fallback: if roi.fallback == Selection::BestRoi { Selection::RoundRobin } else { roi.fallback },
    };
    Some(StreamEntry {
        id: Arc::clone(id),
        name: spec.name.as_str().into(),
        priority: spec.priority,
        condition,
        selection: spec.selection,
        destinations: targets.into(),
        anti_repeat,
        best_roi,
        rr: AtomicUsize::new(0),
    })
}
