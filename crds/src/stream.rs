//! Stream: the routing rule of a campaign — conditions, destinations, how one is selected, anti-repeat.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::caps::MAX_WINDOW_HOURS;
use crate::common::{ObjectRef, default_true};
use crate::condition::{Condition, validate_condition};
use crate::status::ResourceStatus;
use crate::validation::{Errors, FieldError, Link, Validate, ValidationContext, item, join};

/// Largest `priority`.
pub const MAX_PRIORITY: i32 = 1_000_000;
/// Largest destination weight.
pub const MAX_WEIGHT: i64 = 1_000_000;
/// Default anti-repeat window: one day.
pub const DEFAULT_ANTI_REPEAT_SECONDS: i64 = 86_400;

/// A stream of a campaign: when its conditions match a click, one of its destinations gets it.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "Stream",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "A TraffoFlex stream: when its conditions match a click of its campaign, one of its destinations gets it.",
    printcolumn(name = "Campaign", type_ = "string", json_path = ".spec.campaignRef.name"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Selection", type_ = "string", json_path = ".spec.selection"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// The campaign, by ID (API, store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The campaign, by name (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_ref: Option<ObjectRef>,
    /// Display name.
    pub name: String,
    /// Lower is evaluated first (0–1000000, default 0); ties go by name.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub priority: i32,
    /// A disabled stream is skipped.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// When the stream applies; absent matches every click.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Condition>,
    /// How a destination is chosen among the available ones.
    #[serde(default)]
    pub selection: Selection,
    /// The destinations, in waterfall order.
    pub destinations: Vec<StreamDestination>,
    /// Keep sending a visitor to destinations they have not seen yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_repeat: Option<AntiRepeat>,
    /// Settings of `selection: bestRoi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_roi: Option<BestRoi>,
}

/// How a stream picks one of its available destinations.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum Selection {
    /// The first available one, in list order.
    Waterfall,
    /// Each in turn.
    RoundRobin,
    /// At random, in proportion to `weight`.
    #[default]
    Weighted,
    /// The one with the best ROI over a recent window (see `bestRoi`).
    BestRoi,
}

/// One destination of a stream.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamDestination {
    /// The destination, by ID (API, store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
    /// The destination, by name (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ref: Option<ObjectRef>,
    /// Share of `weighted` traffic (0–1000000, default 1); 0 keeps it for other selections only.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub weight: i64,
}

/// Send a visitor to a destination they have not been sent to within a window.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AntiRepeat {
    /// Off unless `true`.
    #[serde(default)]
    pub enabled: bool,
    /// What identifies a visitor: `ip` (default), `userAgent`, `sourceClickId`, `sub1`…`sub10`,
    /// `utmSource`…`utmTerm`, or `query.NAME` / `param:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// How long a visit is remembered, in seconds (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// The same in hours (the MVP's unit); give one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<i64>,
    /// What happens when the visitor has seen every destination.
    #[serde(default)]
    pub exhausted_mode: ExhaustedMode,
}

/// What anti-repeat does once a visitor has seen every destination.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum ExhaustedMode {
    /// Pick among all destinations again.
    #[default]
    AllowRepeat,
    /// Treat it as "no destination available" (trafficback).
    NoDestination,
}

/// Settings of best-ROI selection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BestRoi {
    /// ROI is measured over the last this many hours (1–8784, default 24).
    #[serde(default = "default_roi_window_hours")]
    #[schemars(range(min = 1, max = 8784))]
    pub window_hours: i64,
    /// Destinations with fewer clicks in the window are not ranked (default 100).
    #[serde(default = "default_min_clicks")]
    #[schemars(range(min = 0))]
    pub min_clicks: i64,
    /// How to pick while no destination has enough data (default `roundRobin`; not `bestRoi`).
    #[serde(default = "default_fallback")]
    pub fallback: Selection,
}

impl Default for BestRoi {
    fn default() -> Self {
        Self {
            window_hours: default_roi_window_hours(),
            min_clicks: default_min_clicks(),
            fallback: default_fallback(),
        }
    }
}

fn default_weight() -> i64 {
    1
}
fn default_roi_window_hours() -> i64 {
    24
}
fn default_min_clicks() -> i64 {
    100
}
fn default_fallback() -> Selection {
    Selection::RoundRobin
}

impl AntiRepeat {
    /// The window in seconds: `windowSeconds`, else `windowHours` × 3600, else one day.
    pub fn effective_window_seconds(&self) -> i64 {
        self.window_seconds.or(self.window_hours.map(|h| h.saturating_mul(3600))).unwrap_or(DEFAULT_ANTI_REPEAT_SECONDS)
    }

    /// The user key, `ip` when not set.
    pub fn effective_user_key(&self) -> &str {
        self.user_key.as_deref().unwrap_or("ip")
    }
}

/// Whether `key` names something that identifies a visitor (see [`AntiRepeat::user_key`]).
pub fn is_user_key(key: &str) -> bool {
    const FIXED: &[&str] =
        &["ip", "userAgent", "sourceClickId", "utmSource", "utmMedium", "utmCampaign", "utmContent", "utmTerm"];
    if FIXED.contains(&key) {
        return true;
    }
    if let Some(n) = key.strip_prefix("sub") {
        return (1..=10).any(|i| n == i.to_string());
    }
    key.strip_prefix("query.").or_else(|| key.strip_prefix("param:")).is_some_and(crate::condition::is_query_name)
}

impl Validate for StreamSpec {
    fn validate(&self, ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        let campaign = Link {
            id_name: "campaignId",
            id: self.campaign_id.as_deref(),
            ref_name: "campaignRef",
            reference: self.campaign_ref.as_ref(),
            required: true,
        };
        errs.link(ctx, "", campaign);
        errs.required_text("name", &self.name, "name", 200);
        errs.range("priority", i64::from(self.priority), 0, i64::from(MAX_PRIORITY), "");
        if let Some(conditions) = &self.conditions {
            validate_condition(&mut errs, "conditions", conditions);
        }
        if self.destinations.is_empty() {
            errs.add("destinations", "a stream needs at least one destination");
        }
        for (i, dest) in self.destinations.iter().enumerate() {
            let at = item("destinations", i);
            let link = Link {
                id_name: "destinationId",
                id: dest.destination_id.as_deref(),
                ref_name: "destinationRef",
                reference: dest.destination_ref.as_ref(),
                required: true,
            };
            errs.link(ctx, &at, link);
            errs.range(&join(&at, "weight"), dest.weight, 0, MAX_WEIGHT, "");
        }
        let weighted_like = self.selection == Selection::Weighted
            || (self.selection == Selection::BestRoi
                && self.best_roi.clone().unwrap_or_default().fallback == Selection::Weighted);
        if weighted_like && !self.destinations.is_empty() && self.destinations.iter().all(|d| d.weight <= 0) {
            errs.add("destinations", "weighted selection needs at least one destination with a weight above 0");
        }
        if let Some(anti) = &self.anti_repeat {
            validate_anti_repeat(&mut errs, "antiRepeat", anti);
        }
        if let Some(best) = &self.best_roi {
            errs.range("bestRoi.windowHours", best.window_hours, 1, MAX_WINDOW_HOURS, " hours");
            if best.min_clicks < 0 {
                errs.add("bestRoi.minClicks", format!("must be 0 or more (got {})", best.min_clicks));
            }
            if best.fallback == Selection::BestRoi {
                errs.add(
                    "bestRoi.fallback",
                    "the fallback is used when ROI data is thin: use waterfall, roundRobin or weighted",
                );
            }
        }
        errs.into_vec()
    }
}

fn validate_anti_repeat(errs: &mut Errors, path: &str, anti: &AntiRepeat) {
    if let Some(key) = &anti.user_key
        && !is_user_key(key)
    {
        errs.add(
            join(path, "userKey"),
            format!(
                "`{key}` can't identify a visitor: use ip, userAgent, sourceClickId, sub1…sub10, utmSource…utmTerm or query.NAME"
            ),
        );
    }
    let max_seconds = MAX_WINDOW_HOURS * 3600;
    match (anti.window_seconds, anti.window_hours) {
        (Some(_), Some(_)) => errs.add(join(path, "windowHours"), "give windowSeconds or windowHours, not both"),
        (Some(s), None) => errs.range(&join(path, "windowSeconds"), s, 1, max_seconds, " seconds"),
        (None, Some(h)) => errs.range(&join(path, "windowHours"), h, 1, MAX_WINDOW_HOURS, " hours"),
        (None, None) => {}
    }
}
