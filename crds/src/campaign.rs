//! Campaign: the public entry point `/c/{key}`, its traffic source, cost model and trafficback.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Money, ObjectRef};
use crate::macros::{MacroSet, check_url_template};
use crate::status::ResourceStatus;
use crate::validation::{Errors, FieldError, Link, Validate, ValidationContext, join};

/// The most times one click may be sent round through trafficback.
pub const MAX_TRAFFICBACK_DEPTH: i32 = 10;

/// A campaign: clicks arrive at `/c/{key}` and are routed by its streams.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "Campaign",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "A TraffoFlex campaign: clicks arrive at /c/{key} and are routed by its streams.",
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.key"),
    printcolumn(name = "Status", type_ = "string", json_path = ".spec.status"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CampaignSpec {
    /// The public key in `/c/{key}`: lowercase letters, digits and dashes, 1–63 characters.
    pub key: String,
    /// Display name.
    pub name: String,
    /// An opaque token for the link `/r/{publicToken}` (8–128 letters, digits, `-` and `_`), for links that
    /// should not show the campaign's key. Keep it unique; of two campaigns with one token the first by ID
    /// takes the clicks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_token: Option<String>,
    /// Another name for the campaign in `/go/{id}` links, besides its ID: the original MVP's public ID, so
    /// links already handed out keep working (1–128 letters, digits, `-` and `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_id: Option<String>,
    /// `paused` answers 404 to every click.
    #[serde(default)]
    pub status: CampaignStatus,
    /// The traffic source buying this campaign's traffic, by ID (API, store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_source_id: Option<String>,
    /// The traffic source, by name (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_source_ref: Option<ObjectRef>,
    /// Where a click goes when no stream matches or no destination is available; 404 when absent.
    /// Click macros are allowed in the path and query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trafficback_url: Option<String>,
    /// How many times a click may come back through trafficback before it gets a 404 (0–10, default 1).
    #[serde(default = "default_trafficback_max_depth")]
    #[schemars(range(min = 0, max = 10))]
    pub trafficback_max_depth: i32,
    /// What the traffic costs, when not passed per click.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_model: Option<CostModel>,
    /// Outbound postback URL for this campaign's conversions; overrides the traffic source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_postback_url: Option<String>,
    /// The team owning the campaign, which its events carry so reports can be scoped to a team. The store
    /// owns it (the API sets the caller's team, the operator its configured team); not part of the CRD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub team_id: Option<String>,
}

/// Whether a campaign takes clicks.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub enum CampaignStatus {
    /// Takes clicks.
    #[default]
    Active,
    /// Answers 404.
    Paused,
}

/// The price of the traffic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CostModel {
    /// How the price is counted.
    #[serde(rename = "type")]
    pub type_: CostModelType,
    /// The price per unit (a decimal string); for `revshare`, the percentage of revenue (0–100).
    pub value: Money,
    /// ISO 4217 currency code, e.g. `USD`; not needed for `revshare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// How traffic is paid for.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum CostModelType {
    /// Per click.
    Cpc,
    /// Per thousand impressions.
    Cpm,
    /// Per action (conversion).
    Cpa,
    /// Per lead.
    Cpl,
    /// Per sale.
    Cps,
    /// A share of revenue, in percent.
    Revshare,
}

fn default_trafficback_max_depth() -> i32 {
    1
}

impl Validate for CampaignSpec {
    fn validate(&self, ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        errs.key("key", &self.key);
        errs.required_text("name", &self.name, "name", 200);
        let url_safe = |v: &str, min: usize| {
            (min..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(token) = &self.public_token
            && !url_safe(token, 8)
        {
            errs.add("publicToken", "use 8–128 letters, digits, `-` and `_`, e.g. `q7Vx2mK9pL`");
        }
        if let Some(id) = &self.public_id
            && !url_safe(id, 1)
        {
            errs.add("publicId", "use 1–128 letters, digits, `-` and `_`, e.g. `64f1c2a9e3b7d51a2c9e0f13`");
        }
        errs.link(
            ctx,
            "",
            Link {
                id_name: "trafficSourceId",
                id: self.traffic_source_id.as_deref(),
                ref_name: "trafficSourceRef",
                reference: self.traffic_source_ref.as_ref(),
                required: false,
            },
        );
        if let Some(url) = &self.trafficback_url {
            for problem in check_url_template(url, MacroSet::Click) {
                errs.add("trafficbackUrl", problem);
            }
        }
        errs.range(
            "trafficbackMaxDepth",
            i64::from(self.trafficback_max_depth),
            0,
            i64::from(MAX_TRAFFICBACK_DEPTH),
            "",
        );
        if let Some(cost) = &self.cost_model {
            validate_cost_model(&mut errs, "costModel", cost);
        }
        if let Some(url) = &self.outbound_postback_url {
            for problem in check_url_template(url, MacroSet::Postback) {
                errs.add("outboundPostbackUrl", problem);
            }
        }
        errs.into_vec()
    }
}

fn validate_cost_model(errs: &mut Errors, path: &str, cost: &CostModel) {
    let value_path = join(path, "value");
    match cost.value.to_decimal() {
        None => errs.add(
            &value_path,
            format!("`{}` is not a decimal amount: write it as a string such as \"0.05\"", cost.value),
        ),
        Some(v) if cost.type_ == CostModelType::Revshare && v > rust_decimal::Decimal::ONE_HUNDRED => {
            errs.add(&value_path, format!("a revshare is a percentage from 0 to 100 (got {v})"))
        }
        Some(_) => {}
    }
    let currency_path = join(path, "currency");
    match &cost.currency {
        Some(currency) => errs.currency(&currency_path, currency),
        None if cost.type_ != CostModelType::Revshare => errs.add(&currency_path, "currency is required, e.g. \"USD\""),
        None => {}
    }
}
