//! The routing engine of the click hot path: pure, no I/O and no clock — time, randomness, health, cap
//! usage and ROI figures are arguments.
//!
//! Per click the traffic server calls [`route`] (or [`route_trafficback`] for `/tb/{key}`):
//!
//! ```text
//! let ctx = ClickContext::from_query(query_pairs);          // aliases applied
//! ctx.ip = Some(client_ip); ctx.user_agent = ua.into(); …   // the server's own facts
//! let inputs = RouteInputs { health: &health, caps: &counters, roi: &roi,
//!                            ..RouteInputs::new(&anti_repeat, &click_id_codec) };
//! match route(&snapshot, key, &ctx, Utc::now(), &inputs, &mut rand::rng()) {
//!     RouteDecision::NotFound | RouteDecision::NoRoute { .. } => 404,
//!     RouteDecision::Redirect { url, click_id, .. } | RouteDecision::Trafficback { url, click_id, .. } => 302,
//! }
//! ```
//!
//! - [`snapshot`]: [`RoutingSnapshot`], built once per configuration from the store's documents; also
//!   resolves click-ID fingerprints for postback attribution.
//! - [`context`]: [`ClickContext`], the click's facts, and [`Facts`], the same seen through a campaign.
//! - [`condition`]: compiled stream conditions.
//! - [`availability`]: manual status -> health -> schedule -> caps; [`antirepeat`]: the per-visitor step.
//! - [`select`]: waterfall, round robin, weighted, best ROI.
//! - [`macros`]: URL templates that macros can't redirect elsewhere.
//! - [`engine`]: the decision.

pub mod antirepeat;
pub mod availability;
pub mod condition;
pub mod context;
pub mod engine;
#[cfg(test)]
mod fixtures;
pub mod macros;
pub mod select;
pub mod snapshot;
pub(crate) mod text;

pub use antirepeat::{AntiRepeatCache, AntiRepeatPolicy, UserKey};
pub use availability::{AllHealthy, CapCounters, CapLimit, HealthView, NoCounters, Unavailable, UnhealthySet};
pub use condition::{CompiledCondition, NodeCache};
pub use context::{ClickContext, Facts, QUERY_ALIASES, TRAFFICBACK_DEPTH_PARAM};
pub use engine::{
    ClickIdIssuer, NoRouteCause, RouteDecision, RouteInputs, TrafficbackReason, route, route_trafficback,
};
pub use macros::{Macro, MacroValues, RenderError, TemplateError, UrlTemplate};
pub use select::{BestRoiPolicy, DEFAULT_EXPLORE_SHARE, NoRoiStats, RoiSample, RoiStats};
pub use snapshot::{
    Attribution, BuildWarning, CampaignEntry, DestinationEntry, RoutingSnapshot, SnapshotBuilder, StreamEntry,
};
