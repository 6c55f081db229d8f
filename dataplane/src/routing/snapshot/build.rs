//! Building a [`RoutingSnapshot`] from the store's documents: resolve, compile, index, warn.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

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
use crate::routing::condition::CompiledCondition;
use crate::routing::macros::UrlTemplate;
use crate::routing::select::BestRoiPolicy;

struct Warnings(Vec<BuildWarning>);

/// One copy of each value many objects repeat: IDs that several campaigns refer to (destinations, traffic
/// sources, teams), trafficback URLs, and compiled conditions (streams made from one template often share
/// theirs). A snapshot of many campaigns is mostly such repeats.
#[derive(Default)]
struct Interner {
    strs: HashMap<Box<str>, Arc<str>>,
    templates: HashMap<Box<str>, Arc<UrlTemplate>>,
    conditions: HashMap<String, Arc<CompiledCondition>>,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strs.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.strs.insert(s.into(), Arc::clone(&a));
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
        // The document's own JSON is the key: equal conditions serialise equally.
        let key = serde_json::to_string(condition).map_err(|e| e.to_string())?;
        if let Some(c) = self.conditions.get(&key) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(CompiledCondition::compile(condition)?);
        self.conditions.insert(key, Arc::clone(&c));
        Ok(c)
    }
}

/// Fingerprint -> ID, while building; [`freeze`] turns it into the sorted slice a snapshot keeps.
pub(super) type FpMap = HashMap<[u8; 4], Option<Arc<str>>>;

pub(super) fn freeze(map: FpMap) -> FingerprintIndex {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_unstable_by_key(|(fp, _)| *fp);
    v.into()
}

impl Warnings {
    fn add(&mut self, kind: &'static str, id: &str, message: impl Into<String>) {
        self.0.push(BuildWarning { kind, id: id.to_string(), message: message.into() });
    }
}

pub(super) fn build(
    mut campaigns: Vec<(String, CampaignSpec)>,
    mut streams: Vec<(String, StreamSpec)>,
    mut destinations: Vec<(String, DestinationSpec)>,
    mut sources: Vec<(String, TrafficSourceSpec)>,
) -> RoutingSnapshot {
    campaigns.sort_by(|a, b| a.0.cmp(&b.0));
    streams.sort_by(|a, b| a.0.cmp(&b.0));
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
        match destination(id, spec, &mut intern, &mut w) {
            Some(entry) => {
                snap.destination_by_id.insert(id.as_str().into(), dests.len());
                dests.push(entry);
            }
            None => continue,
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
        let fp = fingerprint8(id);
        match snap.by_fingerprint.entry(fp) {
            Entry::Vacant(slot) => {
                slot.insert(Some(camps.len()));
            }
            Entry::Occupied(mut slot) => {
                slot.insert(None);
                w.add("Campaign", id, "shares its click-ID fingerprint with another campaign: clicks of both can't be attributed from the ID alone");
            }
        }
        if let Some(token) = spec.public_token.as_deref().filter(|t| !t.is_empty()) {
            match snap.by_token.entry(token.into()) {
                Entry::Vacant(slot) => {
                    slot.insert(camps.len());
                }
                Entry::Occupied(_) => {
                    w.add("Campaign", id, "its publicToken is another campaign's too; `/r/` goes there")
                }
            }
        }
        if let Some(public_id) = spec.public_id.as_deref().filter(|t| !t.is_empty()) {
            match snap.by_public_id.entry(public_id.into()) {
                Entry::Vacant(slot) => {
                    slot.insert(camps.len());
                }
                Entry::Occupied(_) => {
                    w.add("Campaign", id, "its publicId is another campaign's too; `/go/` goes there")
                }
            }
        }
        snap.by_id.insert(id.as_str().into(), camps.len());
        snap.by_key.insert(spec.key.as_str().into(), camps.len());
        camps.push(entry);
    }

    let mut per_campaign: Vec<Vec<StreamEntry>> = camps.iter().map(|_| Vec::new()).collect();
    let mut fingerprints: Vec<(FpMap, FpMap)> = camps.iter().map(|_| Default::default()).collect();
    let mut seen_streams: HashMap<&str, ()> = HashMap::new();
    for (id, spec) in &streams {
        if seen_streams.insert(id, ()).is_some() {
            w.add("Stream", id, "the ID is used twice; the first one is kept");
            continue;
        }
        let Some(campaign_id) = spec.campaign_id.as_deref() else {
            w.add("Stream", id, "has no campaignId; skipped");
            continue;
        };
        let Some(&ci) = snap.by_id.get(campaign_id) else {
            w.add("Stream", id, format!("campaign {campaign_id} does not exist; skipped"));
            continue;
        };
        let stream_id = intern.str(id);
        if let (Some(camp), Some(fps)) = (camps.get(ci), fingerprints.get_mut(ci)) {
            index_stream_fingerprints(&camp.id, fps, &stream_id, spec, &mut intern, &mut w);
        }
        if !spec.enabled {
            continue;
        }
        if let (Some(entry), Some(list)) =
            (stream(stream_id, spec, &snap, &mut intern, &mut w), per_campaign.get_mut(ci))
        {
            list.push(entry);
        }
    }
    drop(intern);
    for ((camp, mut list), (streams, destinations)) in camps.iter_mut().zip(per_campaign).zip(fingerprints) {
        // Already in ID order; a stable sort keeps it for equal priorities.
        list.sort_by_key(|s| s.priority);
        camp.streams = list.into();
        camp.stream_fp = freeze(streams);
        camp.destination_fp = freeze(destinations);
    }

    snap.campaigns = camps.into();
    snap.destinations = dests.into();
    snap.warnings = w.0;
    snap
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
pub(super) fn index_fp(map: &mut FpMap, fp: [u8; 4], id: &Arc<str>) -> bool {
    match map.entry(fp) {
        Entry::Vacant(slot) => {
            slot.insert(Some(Arc::clone(id)));
            true
        }
        Entry::Occupied(slot) if slot.get().as_deref() == Some(&**id) => true,
        Entry::Occupied(mut slot) => {
            slot.insert(None);
            false
        }
    }
}

fn index_stream_fingerprints(
    campaign_id: &str,
    (streams, destinations): &mut (FpMap, FpMap),
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
