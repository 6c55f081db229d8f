//! DataPlane: the traffic, postback and ingest Deployments the operator runs and scales.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ObjectRef;
use crate::status::StatusCondition;
use crate::validation::{Errors, FieldError, Validate, ValidationContext, join};

/// The data plane: one image, three components, each scaled between its bounds on its request rate.
// clippy reads the repeated `type_ = …` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "traffoflex.io",
    version = "v1alpha1",
    kind = "DataPlane",
    namespaced,
    status = "DataPlaneStatus",
    derive = "PartialEq",
    category = "traffoflex",
    doc = "The TraffoFlex data plane: traffic, postback and ingest Deployments that the operator scales.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Traffic", type_ = "integer", json_path = ".status.traffic.readyReplicas"),
    printcolumn(name = "Postback", type_ = "integer", json_path = ".status.postback.readyReplicas"),
    printcolumn(name = "Ingest", type_ = "integer", json_path = ".status.ingest.readyReplicas"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneSpec {
    /// The `traffoflex` image every component runs, e.g. `ghcr.io/acme/traffoflex:0.1.0`.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// A Secret whose keys become environment variables of every component
    /// (`TRAFFOFLEX_MONGO_URI`, `TRAFFOFLEX_KAFKA_BROKERS`, `TRAFFOFLEX_CLICKHOUSE_URL`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_secret_ref: Option<ObjectRef>,
    /// The click redirect service (`traffoflex traffic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<ComponentSpec>,
    /// The postback service (`traffoflex postback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback: Option<ComponentSpec>,
    /// The Kafka-to-ClickHouse ingester (`traffoflex ingest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<ComponentSpec>,
}

/// Sizing of one component. Absent fields take the component's defaults ([`Component::defaults`]).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Fewest replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,
    /// Most replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// The request (or, for ingest, event) rate one pod should handle; the operator scales to keep
    /// `observed rate / replicas` near it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_requests_per_second: Option<i64>,
    /// CPU and memory requests and limits of each pod, as in a container's `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
}

/// `limits` and `requests` of a container; the full upstream schema repeats a page of text per quantity.
fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-int-or-string": true},
    });
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "description": "CPU and memory requests and limits of each pod, e.g. {requests: {cpu: 250m, memory: 128Mi}}.",
        "properties": {"limits": quantities.clone(), "requests": quantities},
    })
}

/// The three data-plane components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// `traffoflex traffic`.
    Traffic,
    /// `traffoflex postback`.
    Postback,
    /// `traffoflex ingest`.
    Ingest,
}

impl Component {
    /// All three, in a fixed order.
    pub const ALL: [Component; 3] = [Self::Traffic, Self::Postback, Self::Ingest];

    /// The JSON field and subcommand name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Traffic => "traffic",
            Self::Postback => "postback",
            Self::Ingest => "ingest",
        }
    }

    /// Sizing used for every field the spec leaves out.
    pub fn defaults(self) -> ResolvedComponent {
        let (min_replicas, max_replicas, target) = match self {
            Self::Traffic => (2, 10, 2000),
            Self::Postback => (1, 5, 500),
            Self::Ingest => (1, 3, 20_000),
        };
        ResolvedComponent { min_replicas, max_replicas, target_requests_per_second: target, resources: None }
    }
}

/// A component's sizing with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedComponent {
    /// Fewest replicas.
    pub min_replicas: i32,
    /// Most replicas.
    pub max_replicas: i32,
    /// Target rate per pod.
    pub target_requests_per_second: i64,
    /// Pod resources.
    pub resources: Option<ResourceRequirements>,
}

impl DataPlaneSpec {
    /// The spec of `component`, if given.
    pub fn component(&self, component: Component) -> Option<&ComponentSpec> {
        match component {
            Component::Traffic => self.traffic.as_ref(),
            Component::Postback => self.postback.as_ref(),
            Component::Ingest => self.ingest.as_ref(),
        }
    }

    /// The sizing of `component` with defaults filled in.
    pub fn resolved(&self, component: Component) -> ResolvedComponent {
        let d = component.defaults();
        let Some(spec) = self.component(component) else {
            return d;
        };
        ResolvedComponent {
            min_replicas: spec.min_replicas.unwrap_or(d.min_replicas),
            max_replicas: spec.max_replicas.unwrap_or(d.max_replicas.max(spec.min_replicas.unwrap_or(0))),
            target_requests_per_second: spec.target_requests_per_second.unwrap_or(d.target_requests_per_second),
            resources: spec.resources.clone(),
        }
    }
}

/// What the operator observed of the data plane.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Synced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatusCondition>,
    /// The traffic component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<ComponentStatus>,
    /// The postback component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback: Option<ComponentStatus>,
    /// The ingester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<ComponentStatus>,
}

/// One component's replicas and load.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas the operator asked for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Replicas that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Requests (or events) per second over all pods, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_requests_per_second: Option<f64>,
    /// The ready pods the operator reached, with the configuration revision each has loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodStatus>,
}

/// One ready pod of a component.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// The pod (or its address, when its EndpointSlice names no pod).
    pub name: String,
    /// The configuration revision it serves; absent when its `/metrics` could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<String>,
}

impl Validate for DataPlaneSpec {
    fn validate(&self, _ctx: ValidationContext) -> Vec<FieldError> {
        let mut errs = Errors::new();
        if self.image.trim().is_empty() {
            errs.add("image", "image is required, e.g. ghcr.io/acme/traffoflex:0.1.0");
        } else if self.image.chars().any(char::is_whitespace) {
            errs.add("image", format!("`{}` is not an image reference: it contains spaces", self.image));
        }
        if let Some(policy) = &self.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
        {
            errs.add("imagePullPolicy", format!("`{policy}` is not one of Always, IfNotPresent, Never"));
        }
        if let Some(secret) = &self.env_secret_ref
            && secret.name.is_empty()
        {
            errs.add("envSecretRef.name", "name the Secret");
        }
        for component in Component::ALL {
            let Some(spec) = self.component(component) else {
                continue;
            };
            let path = component.as_str();
            if let Some(min) = spec.min_replicas
                && min < 0
            {
                errs.add(join(path, "minReplicas"), format!("must be 0 or more (got {min})"));
            }
            if let Some(max) = spec.max_replicas
                && max < 1
            {
                errs.add(join(path, "maxReplicas"), format!("must be at least 1 (got {max})"));
            }
            let resolved = self.resolved(component);
            if resolved.min_replicas > resolved.max_replicas {
                errs.add(
                    join(path, "minReplicas"),
                    format!(
                        "minReplicas ({}) is more than maxReplicas ({})",
                        resolved.min_replicas, resolved.max_replicas
                    ),
                );
            }
            if let Some(target) = spec.target_requests_per_second
                && target < 1
            {
                errs.add(join(path, "targetRequestsPerSecond"), format!("must be at least 1 (got {target})"));
            }
        }
        errs.into_vec()
    }
}
