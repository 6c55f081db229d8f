//! PostbackTemplate: how to read an affiliate network's postback — parameter names and status mapping.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ConversionStatus;
use crate::status::ResourceStatus;
use crate::validation::{Errors, FieldError, Validate, ValidationContext, join};

/// How to read one network's postbacks: which parameter carries what, and what its statuses mean.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "PostbackTemplate",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "A TraffoFlex postback template: the parameter names and status mapping of a network's postbacks.",
    printcolumn(name = "Default status", type_ = "string", json_path = ".spec.defaultStatus"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PostbackTemplateSpec {
    /// Display name.
    pub name: String,
    /// The names of the postback's query or body parameters.
    pub params: PostbackParams,
    /// The network's status values (case-insensitive) mapped to ours, e.g. `{"1": approved, "0": rejected}`.
    #[serde(default)]
    pub status_map: BTreeMap<String, ConversionStatus>,
    /// The status when the postback has none, or one `statusMap` does not list (default `approved`).
    #[serde(default = "default_status")]
    pub default_status: ConversionStatus,
}

/// Parameter names in a network's postback. Each defaults to the usual aliases of the MVP when absent
/// (click ID: `click_id`, `cid`, `subid`, `sub_id`; …).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PostbackParams {
    /// The parameter carrying our click ID (the one sent to the network in the destination URL).
    pub click_id: String,
    /// The network's transaction or order ID: repeats of one (network, transactionId) are deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The payout amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<String>,
    /// The payout currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The conversion status, mapped through `statusMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The event type (e.g. `lead`, `sale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
}

fn default_status() -> ConversionStatus {
    ConversionStatus::Approved
}

impl PostbackTemplateSpec {
    /// Our status for the network's `value`: `statusMap` (case-insensitive), else `defaultStatus`.
    pub fn map_status(&self, value: Option<&str>) -> ConversionStatus {
        value
            .and_then(|v| {
                self.status_map
                    .get(v)
                    .or_else(|| self.status_map.iter().find(|(k, _)| k.eq_ignore_ascii_case(v)).map(|(_, s)| s))
            })
            .copied()
            .unwrap_or(self.default_status)
    }
}

impl Validate for PostbackTemplateSpec {
    fn validate(&self, _ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        errs.required_text("name", &self.name, "name", 200);
        let p = &self.params;
        let named = [
            ("clickId", Some(&p.click_id)),
            ("transactionId", p.transaction_id.as_ref()),
            ("payout", p.payout.as_ref()),
            ("currency", p.currency.as_ref()),
            ("status", p.status.as_ref()),
            ("eventType", p.event_type.as_ref()),
        ];
        for (i, (field, name)) in named.iter().enumerate() {
            let Some(name) = name else { continue };
            let path = join("params", field);
            if name.trim().is_empty() {
                errs.add(&path, "name the parameter, e.g. \"clickid\" (or leave it out)");
            } else if !is_param(name) {
                errs.add(&path, format!("`{name}` is not a parameter name: letters, digits, `_`, `-`, `.`"));
            } else if let Some((other, _)) = named[..i].iter().find(|(_, n)| n.is_some_and(|n| n == *name)) {
                errs.add(&path, format!("`{name}` is already the parameter of `{other}`"));
            }
        }
        for key in self.status_map.keys() {
            if key.trim().is_empty() {
                errs.add(join("statusMap", key), "a status value can't be empty");
            }
        }
        let mut lower: Vec<String> = self.status_map.keys().map(|k| k.to_ascii_lowercase()).collect();
        lower.sort();
        if let Some(pair) = lower.windows(2).find(|w| w[0] == w[1]) {
            errs.add("statusMap", format!("`{}` is listed twice (keys are case-insensitive)", pair[0]));
        }
        errs.into_vec()
    }
}

fn is_param(name: &str) -> bool {
    name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
}
