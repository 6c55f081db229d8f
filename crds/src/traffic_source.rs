//! TrafficSource: who sends (and is paid for) the traffic, and the outbound postback that tells it about
//! conversions.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ConversionStatus;
use crate::macros::{MacroSet, check_url_template};
use crate::status::ResourceStatus;
use crate::validation::{Errors, FieldError, Validate, ValidationContext, item};

/// A traffic source: an ad network or publisher buying traffic for campaigns.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "TrafficSource",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "A TraffoFlex traffic source: who sends the traffic, and where conversions are reported back to.",
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.key"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSourceSpec {
    /// Short key (the `{source}` macro and the `source` condition field): lowercase letters, digits and
    /// dashes, 1–63 characters.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Where conversions are reported to the source: an http(s) URL template with click and postback
    /// macros (`{sub1}`, `{payout}`, `{status}`, …) in its path and query. Absent sends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_postback_url: Option<String>,
    /// Which conversion statuses are reported (default: only `approved`).
    #[serde(default = "default_outbound_statuses")]
    pub outbound_postback_statuses: Vec<ConversionStatus>,
}

/// Only approved conversions are reported unless told otherwise.
pub fn default_outbound_statuses() -> Vec<ConversionStatus> {
    vec![ConversionStatus::Approved]
}

impl Validate for TrafficSourceSpec {
    fn validate(&self, _ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        errs.key("key", &self.key);
        errs.required_text("name", &self.name, "name", 200);
        if let Some(url) = &self.outbound_postback_url {
            for problem in check_url_template(url, MacroSet::Postback) {
                errs.add("outboundPostbackUrl", problem);
            }
        }
        for (i, status) in self.outbound_postback_statuses.iter().enumerate() {
            if self.outbound_postback_statuses[..i].contains(status) {
                errs.add(item("outboundPostbackStatuses", i), format!("`{status}` is listed twice"));
            }
        }
        errs.into_vec()
    }
}
