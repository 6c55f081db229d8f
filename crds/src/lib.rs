//! The TraffoFlex object model: one set of Rust types serves the CRDs, the store documents and the API JSON.
//!
//! Seven kinds, each a `…Spec` type that is at once the `spec` of a `traffoflex.io/v1alpha1` custom resource
//! (the derived root types [`Campaign`], [`Stream`], …), the body of the admin API's requests and responses
//! (without `id`, `createdAt`, `updatedAt`, `version`, `managedBy`, which the API and store add), and the
//! store document. JSON is camelCase everywhere. Unknown keys are ignored when reading (so an API body may
//! carry `"kind"` or the envelope fields); condition trees are the exception and reject unknown keys.
//!
//! **IDs and refs.** The API and the store refer to other objects by ID (`campaignId`,
//! `destinations[].destinationId`, `trafficSourceId`, `postbackTemplateId`); custom resources refer to them
//! by name (`campaignRef: {name}`, `destinations[].destinationRef`, `trafficSourceRef`,
//! `postbackTemplateRef`). Each spec carries both forms as optional fields, and [`Validate::validate`] takes
//! a [`ValidationContext`] that says which one must be present: `Api` requires IDs and rejects refs,
//! `Kubernetes` requires refs and rejects IDs, `Store` requires IDs and allows refs (the operator resolves
//! refs to IDs and keeps the refs on mirrored objects). One type per kind keeps the API, the store, the CRD
//! schema and the UI's generated types from drifting apart; the cost is two optional fields per reference,
//! and the context argument. Secrets work the same way: inline `token`/`secret` in the API, or
//! `auth.secretRef` to a Kubernetes Secret.
//!
//! **Aliases.** CONTRACT.md's shapes are canonical; the MVP's spellings are accepted where cheap:
//! `caps.dailyClicks` (= a clicks rule over 24 h), `antiRepeat.windowHours`, operator names such as
//! `prefix`, `neq`, `not_in`, condition lists (= `all`), `query.NAME` (= `param:NAME`).
//!
//! **Validation paths** are relative to the spec (see [`validation`]).

pub mod affiliate_network;
pub mod campaign;
pub mod caps;
pub mod common;
pub mod condition;
pub mod crd;
pub mod dataplane;
pub mod destination;
pub mod macros;
pub mod postback_template;
pub mod schedule;
pub mod status;
pub mod stream;
pub mod traffic_source;
pub mod validation;

pub use affiliate_network::{AffiliateNetwork, AffiliateNetworkSpec, AuthMode, ClickLookupMode, NetworkAuth};
pub use campaign::{Campaign, CampaignSpec, CampaignStatus, CostModel, CostModelType};
pub use caps::{CapMetric, CapRule, Caps};
pub use common::{Amount, ConversionStatus, Money, ObjectRef, SecretKeyRef};
pub use condition::{Condition, ConditionField, ConditionOp, ConditionRule, ConditionValue};
pub use crd::{all_crds, try_crds_yaml};
pub use dataplane::{Component, ComponentSpec, ComponentStatus, DataPlane, DataPlaneSpec, DataPlaneStatus, PodStatus};
pub use destination::{Destination, DestinationSpec, HealthCheck, ManualStatus};
pub use postback_template::{PostbackParams, PostbackTemplate, PostbackTemplateSpec};
pub use schedule::{Schedule, ScheduleWindow, Weekday};
pub use status::{ConditionStatus, ResourceStatus, StatusCondition};
pub use stream::{AntiRepeat, BestRoi, ExhaustedMode, Selection, Stream, StreamDestination, StreamSpec};
pub use traffic_source::{TrafficSource, TrafficSourceSpec};
pub use validation::{FieldError, Validate, ValidationContext, ValidationErrors, from_json_str, from_json_value};

/// The team an object belongs to when its document names none (single-team installs never name one).
pub const DEFAULT_TEAM: &str = "default";

/// Every CRD of the `traffoflex.io` group as one multi-document YAML stream (what `traffoflex crds` prints).
pub fn crds_yaml() -> String {
    try_crds_yaml().unwrap_or_else(|err| format!("# traffoflex: the CRDs could not be written as YAML: {err}\n"))
}
