//! Destination: where a click is sent — its URL template and what makes it available (manual status,
//! health, schedule, caps).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::caps::{Caps, validate_caps};
use crate::common::default_true;
use crate::macros::{MacroSet, check_url_template};
use crate::schedule::{Schedule, validate_schedule};
use crate::status::ResourceStatus;
use crate::validation::{Errors, FieldError, Validate, ValidationContext};

/// Shortest health-check interval.
pub const MIN_HEALTH_INTERVAL_SECONDS: i64 = 5;
/// Longest health-check interval: one day.
pub const MAX_HEALTH_INTERVAL_SECONDS: i64 = 86_400;

/// A destination: an offer or landing page that streams send clicks to.
///
/// Availability is decided in this order: `enabled` and `manualStatus`, then health, then `schedule`,
/// then `caps`, then the stream's anti-repeat.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "Destination",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "A TraffoFlex destination: an offer or landing page that streams send clicks to.",
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSpec {
    /// Display name.
    pub name: String,
    /// Absolute http(s) URL template; click macros such as `{clickId}` and `{param:NAME}` may appear in
    /// the path and query only, never in the scheme, host or port.
    pub url: String,
    /// A disabled destination gets no clicks.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Manual status (the MVP's); anything but `active` takes the destination out like `enabled: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_status: Option<ManualStatus>,
    /// Limits on clicks, cost, conversions and revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Caps>,
    /// When the destination is open; absent means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Periodic checks that take an unhealthy destination out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// Manual status (the MVP's); anything but `active` takes the destination out like `enabled: false`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum ManualStatus {
    /// In rotation.
    #[default]
    Active,
    /// Out of rotation for now.
    Paused,
    /// Out of rotation for good.
    Archived,
}

/// Health checking of a destination.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Off unless `true`.
    #[serde(default)]
    pub enabled: bool,
    /// The URL to check; absent checks the destination URL with its macros left empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds between checks (5–86400, default 60).
    #[serde(default = "default_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub interval_seconds: i64,
    /// Seconds before a check counts as failed (1–60, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<i64>,
}

fn default_interval() -> i64 {
    60
}

impl DestinationSpec {
    /// Whether the destination is switched on (`enabled` and `manualStatus` active), before health,
    /// schedule and caps are considered.
    pub fn is_switched_on(&self) -> bool {
        self.enabled && self.manual_status.unwrap_or_default() == ManualStatus::Active
    }
}

impl Validate for DestinationSpec {
    fn validate(&self, _ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        errs.required_text("name", &self.name, "name", 200);
        for problem in check_url_template(&self.url, MacroSet::Click) {
            errs.add("url", problem);
        }
        if let Some(caps) = &self.caps {
            validate_caps(&mut errs, "caps", caps);
        }
        if let Some(schedule) = &self.schedule {
            validate_schedule(&mut errs, "schedule", schedule);
        }
        if let Some(check) = &self.health_check {
            if let Some(url) = &check.url {
                for problem in check_url_template(url, MacroSet::None) {
                    errs.add("healthCheck.url", problem);
                }
            }
            errs.range(
                "healthCheck.intervalSeconds",
                check.interval_seconds,
                MIN_HEALTH_INTERVAL_SECONDS,
                MAX_HEALTH_INTERVAL_SECONDS,
                " seconds",
            );
            if let Some(timeout) = check.timeout_seconds {
                errs.range("healthCheck.timeoutSeconds", timeout, 1, 60, " seconds");
            }
        }
        errs.into_vec()
    }
}
