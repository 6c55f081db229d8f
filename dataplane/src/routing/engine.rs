//! [`route`]: one click in, one decision out — the routing engine's entry point.
//!
//! 1. The campaign by key; unknown or paused -> [`RouteDecision::NotFound`] (404, no redirect anywhere).
//! 2. Its streams by priority: the **first whose conditions match** is the click's stream; none ->
//!    trafficback (`NoStream`).
//! 3. That stream's destinations, each checked in PARITY's order (manual status, health, schedule, caps),
//!    then anti-repeat for the visitor.
//! 4. One is selected (waterfall, roundRobin, weighted, bestRoi), a click ID issued, its URL rendered ->
//!    [`RouteDecision::Redirect`].
//!
//! **When the matched stream has no available destination** the click goes to trafficback
//! (`NoDestination`), as in the MVP: streams are targeting rules, not a fallback chain, so a capped or
//! closed offer never silently leaks its targeted traffic into a lower-priority stream. Put a fallback
//! destination last in a waterfall stream to keep such traffic in the campaign.
//!
//! **Trafficback** goes to the campaign's `trafficbackUrl` (macros filled, stream and destination empty)
//! with `trafficback_depth=N+1` added to its query, where N is the click's own depth
//! ([`ClickContext::trafficback_depth`], read from that parameter). A click whose depth already reached
//! the campaign's `trafficbackMaxDepth` (default 1), or a campaign without a trafficback URL, gets
//! [`RouteDecision::NoRoute`] (404) — so two campaigns trafficking back to each other can't loop.
//!
//! Inbound parameters such as `url` or `redirect_url` are never read: only the destination's template
//! decides where a user goes, and macros can't change its scheme, host or port.

use chrono::{DateTime, Utc};
use rand::Rng;
use smallvec::SmallVec;
use traffoflex_core::clickid::ClickIdCodec;
use url::Url;

use super::antirepeat::AntiRepeatCache;
use super::availability::{AllHealthy, CapCounters, HealthView, NoCounters, check};
use super::context::{ClickContext, Facts, TRAFFICBACK_DEPTH_PARAM};
use super::macros::MacroValues;
use super::select::{self, Candidate, DEFAULT_EXPLORE_SHARE, NoRoiStats, RoiStats};
use super::snapshot::{CampaignEntry, DestinationEntry, RoutingSnapshot, StreamEntry};
use traffoflex_crds::{ExhaustedMode, Selection};

/// Issues click IDs; the engine calls it once per redirect, after it knows the stream and destination.
pub trait ClickIdIssuer {
    /// A click ID for a click at `ts_millis`; stream and destination are empty for trafficback.
    fn issue(&self, ts_millis: i64, campaign_id: &str, stream_id: &str, destination_id: &str) -> String;
}

impl ClickIdIssuer for ClickIdCodec {
    fn issue(&self, ts_millis: i64, campaign_id: &str, stream_id: &str, destination_id: &str) -> String {
        ClickIdCodec::issue(self, ts_millis, campaign_id, stream_id, destination_id)
    }
}

/// What the server passes with every click besides the click itself.
#[derive(Clone, Copy)]
pub struct RouteInputs<'a> {
    /// Destination health (default: all healthy).
    pub health: &'a dyn HealthView,
    /// Cap usage (default: unknown, so caps fail open).
    pub caps: &'a dyn CapCounters,
    /// bestRoi figures (default: none, so bestRoi uses its fallback).
    pub roi: &'a dyn RoiStats,
    /// Anti-repeat history; shared by every click and kept across snapshot reloads.
    pub anti_repeat: &'a AntiRepeatCache,
    /// Issues the click ID of each redirect.
    pub click_ids: &'a dyn ClickIdIssuer,
    /// bestRoi's exploration share (default [`DEFAULT_EXPLORE_SHARE`]).
    pub explore_share: f64,
}

impl<'a> RouteInputs<'a> {
    /// Inputs with the defaults above; set the fields the server has.
    pub fn new(anti_repeat: &'a AntiRepeatCache, click_ids: &'a dyn ClickIdIssuer) -> Self {
        Self {
            health: &AllHealthy,
            caps: &NoCounters,
            roi: &NoRoiStats,
            anti_repeat,
            click_ids,
            explore_share: DEFAULT_EXPLORE_SHARE,
        }
    }
}

/// Why a click went to trafficback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrafficbackReason {
    /// No stream's conditions matched.
    NoStream,
    /// The matched stream had no available destination (or anti-repeat said no).
    NoDestination,
    /// The click came in on the direct trafficback entry (`/tb/{key}`).
    Direct,
}

/// Why a click that needed trafficback gets 404 instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoRouteCause {
    /// The campaign has no (usable) trafficback URL.
    NoTrafficbackUrl,
    /// The click already went round trafficback `trafficbackMaxDepth` times.
    DepthLimit,
}

/// What to do with a click.
#[derive(Debug)]
pub enum RouteDecision<'s> {
    /// Unknown or paused campaign: answer 404.
    NotFound,
    /// Redirect to a destination.
    Redirect {
        /// The `Location`.
        url: String,
        /// The click's ID (`X-Click-Id`).
        click_id: String,
        /// The campaign.
        campaign: &'s CampaignEntry,
        /// The stream that matched.
        stream: &'s StreamEntry,
        /// The destination chosen.
        destination: &'s DestinationEntry,
    },
    /// Redirect to the campaign's trafficback URL.
    Trafficback {
        /// The `Location`.
        url: String,
        /// The click's ID (`X-Click-Id`).
        click_id: String,
        /// The campaign.
        campaign: &'s CampaignEntry,
        /// The stream that matched, for `NoDestination`.
        stream: Option<&'s StreamEntry>,
        /// Why.
        reason: TrafficbackReason,
    },
    /// Nowhere to send the click: answer 404.
    NoRoute {
        /// The campaign.
        campaign: &'s CampaignEntry,
        /// The stream that matched, for `NoDestination`.
        stream: Option<&'s StreamEntry>,
        /// Why it needed trafficback.
        reason: TrafficbackReason,
        /// Why trafficback couldn't take it.
        cause: NoRouteCause,
    },
}

/// Routes one click of campaign `campaign_key` at `now` (see the module docs).
pub fn route<'s, R: Rng + ?Sized>(
    snapshot: &'s RoutingSnapshot,
    campaign_key: &str,
    ctx: &ClickContext<'_>,
    now: DateTime<Utc>,
    inputs: &RouteInputs<'_>,
    rng: &mut R,
) -> RouteDecision<'s> {
    let Some(campaign) = snapshot.campaign(campaign_key).filter(|c| !c.paused) else {
        return RouteDecision::NotFound;
    };
    let facts = facts(campaign, ctx, now);
    let Some(stream) = campaign.streams.iter().find(|s| s.condition.as_ref().is_none_or(|c| c.matches(&facts))) else {
        return trafficback(campaign, None, TrafficbackReason::NoStream, &facts, now, inputs);
    };
    match pick(snapshot, stream, &facts, now, inputs, rng) {
        Some((destination, visitor)) => {
            let now_ms = now.timestamp_millis();
            let click_id = inputs.click_ids.issue(now_ms, &campaign.id, &stream.id, &destination.id);
            let values = MacroValues {
                click_id: &click_id,
                campaign_id: &campaign.id,
                campaign_key: &campaign.key,
                stream_id: &stream.id,
                destination_id: &destination.id,
                facts: &facts,
            };
            let Ok(url) = destination.template.render_str(&values) else {
                return trafficback(campaign, Some(stream), TrafficbackReason::NoDestination, &facts, now, inputs);
            };
            if let (Some(visitor), Some(policy)) = (visitor, &stream.anti_repeat) {
                let dest = inputs.anti_repeat.destination(&destination.id);
                inputs.anti_repeat.record(visitor, dest, now_ms, policy.window_ms);
            }
            RouteDecision::Redirect { url, click_id, campaign, stream, destination }
        }
        None => trafficback(campaign, Some(stream), TrafficbackReason::NoDestination, &facts, now, inputs),
    }
}

/// The direct trafficback entry (`/tb/{key}`): the campaign's trafficback, with the same loop protection.
pub fn route_trafficback<'s>(
    snapshot: &'s RoutingSnapshot,
    campaign_key: &str,
    ctx: &ClickContext<'_>,
    now: DateTime<Utc>,
    inputs: &RouteInputs<'_>,
) -> RouteDecision<'s> {
    let Some(campaign) = snapshot.campaign(campaign_key).filter(|c| !c.paused) else {
        return RouteDecision::NotFound;
    };
    let facts = facts(campaign, ctx, now);
    trafficback(campaign, None, TrafficbackReason::Direct, &facts, now, inputs)
}

fn facts<'f>(campaign: &'f CampaignEntry, ctx: &'f ClickContext<'f>, now: DateTime<Utc>) -> Facts<'f> {
    Facts::new(ctx, now).with_defaults(campaign.source_key(), campaign.cpc_cost())
}

/// The stream's destination for this click and the anti-repeat visitor key, if any.
fn pick<'s, R: Rng + ?Sized>(
    snapshot: &'s RoutingSnapshot,
    stream: &'s StreamEntry,
    facts: &Facts<'_>,
    now: DateTime<Utc>,
    inputs: &RouteInputs<'_>,
    rng: &mut R,
) -> Option<(&'s DestinationEntry, Option<u64>)> {
    let mut available: SmallVec<[(&'s DestinationEntry, u64); 8]> = stream
        .destinations
        .iter()
        .filter_map(|t| snapshot.destinations.get(t.dest).map(|d| (d, t.weight)))
        .filter(|(d, _)| check(d, now, inputs.health, inputs.caps).is_ok())
        .collect();
    let mut visitor = None;
    if let Some(policy) = &stream.anti_repeat
        && !available.is_empty()
    {
        visitor = inputs.anti_repeat.visitor(&stream.id, policy, facts);
        if let Some(v) = visitor {
            let seen = inputs.anti_repeat.seen(v, now.timestamp_millis());
            if !seen.is_empty() {
                let fresh: SmallVec<[(&'s DestinationEntry, u64); 8]> = available
                    .iter()
                    .copied()
                    .filter(|(d, _)| !seen.contains(&inputs.anti_repeat.destination(&d.id)))
                    .collect();
                if !fresh.is_empty() {
                    available = fresh;
                } else if policy.exhausted == ExhaustedMode::NoDestination {
                    return None;
                }
            }
        }
    }
    let candidates: SmallVec<[Candidate<'s>; 8]> =
        available.iter().map(|(d, weight)| Candidate { id: &d.id, weight: *weight }).collect();
    let chosen = match stream.selection {
        Selection::BestRoi => {
            select::best_roi(&candidates, &stream.best_roi, inputs.roi, inputs.explore_share, &stream.rr, rng)
        }
        simple => select::simple(simple, &candidates, &stream.rr, rng),
    };
    chosen.and_then(|i| available.get(i)).map(|(d, _)| (*d, visitor))
}

fn trafficback<'s>(
    campaign: &'s CampaignEntry,
    stream: Option<&'s StreamEntry>,
    reason: TrafficbackReason,
    facts: &Facts<'_>,
    now: DateTime<Utc>,
    inputs: &RouteInputs<'_>,
) -> RouteDecision<'s> {
    let no_route = |cause| RouteDecision::NoRoute { campaign, stream, reason, cause };
    let Some(template) = &campaign.trafficback else { return no_route(NoRouteCause::NoTrafficbackUrl) };
    let depth = facts.ctx.trafficback_depth;
    if depth >= campaign.trafficback_max_depth {
        return no_route(NoRouteCause::DepthLimit);
    }
    let click_id = inputs.click_ids.issue(now.timestamp_millis(), &campaign.id, "", "");
    let values = MacroValues {
        click_id: &click_id,
        campaign_id: &campaign.id,
        campaign_key: &campaign.key,
        stream_id: "",
        destination_id: "",
        facts,
    };
    let Ok(mut url) = template.render(&values) else { return no_route(NoRouteCause::NoTrafficbackUrl) };
    set_depth(&mut url, depth.saturating_add(1));
    RouteDecision::Trafficback { url: url.into(), click_id, campaign, stream, reason }
}

/// Sets `trafficback_depth` in the query, keeping every other parameter as written.
fn set_depth(url: &mut Url, depth: u32) {
    let value = depth.to_string();
    if url.query_pairs().any(|(k, _)| k == TRAFFICBACK_DEPTH_PARAM) {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != TRAFFICBACK_DEPTH_PARAM)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(kept).append_pair(TRAFFICBACK_DEPTH_PARAM, &value);
    } else {
        url.query_pairs_mut().append_pair(TRAFFICBACK_DEPTH_PARAM, &value);
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
