//! The six mirrored kinds: what each one names, how resolved references fill in its store document, and the
//! document itself. Pure: no I/O here.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::core::object::HasStatus;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use traffoflex_core::store::Collection;
use traffoflex_crds::{
    AffiliateNetwork, AffiliateNetworkSpec, AuthMode, Campaign, CampaignSpec, Destination, DestinationSpec,
    PostbackTemplate, PostbackTemplateSpec, ResourceStatus, Stream, StreamSpec, TrafficSource, TrafficSourceSpec,
    Validate,
};

use crate::refs::{RefKind, Reference, Resolved};

/// The store fields every mirrored document carries (CONTRACT.md: the API answers 409 on these objects).
pub const MANAGED_BY: &str = "kubernetes";

/// A custom resource the operator mirrors into one collection of the configuration store.
pub trait Mirrored:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status = ResourceStatus>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The spec type: at once the custom resource's spec and the store document.
    type Spec: Validate + Serialize + Clone + Send + Sync;

    /// The reference kind naming this kind.
    const REF_KIND: RefKind;

    /// The kinds this kind's specs can name (their changes re-run this kind's reconciliation).
    const NAMES: &'static [RefKind];

    fn spec(&self) -> &Self::Spec;

    /// Every object the spec names, in spec order.
    fn references(spec: &Self::Spec) -> Vec<Reference>;

    /// The spec with each reference's resolved ID (and Secret values) filled in; references stay as they are.
    fn resolve(spec: &Self::Spec, resolved: &Resolved) -> Self::Spec;

    /// The collection it is mirrored into.
    fn collection() -> Collection {
        Self::REF_KIND.collection().unwrap_or(Collection::Meta)
    }
}

/// The store document of a mirrored object: the resolved spec, `kind`, `managedBy: "kubernetes"`, the team it
/// belongs to (the default team: the API's users of that team see it, read-only), and where it comes from
/// (`kubernetes: {namespace, name, uid}`). The store adds `id`, `version` and the timestamps.
pub fn store_document<K: Mirrored>(obj: &K, resolved_spec: &K::Spec) -> Result<Value, serde_json::Error> {
    let mut doc = serde_json::to_value(resolved_spec)?;
    if let Value::Object(map) = &mut doc {
        map.insert("kind".into(), Value::String(K::REF_KIND.kind().into()));
        map.insert("managedBy".into(), Value::String(MANAGED_BY.into()));
        map.insert("teamId".into(), Value::String(traffoflex_crds::DEFAULT_TEAM.into()));
        let meta = obj.meta();
        map.insert("kubernetes".into(), json!({"namespace": meta.namespace, "name": meta.name, "uid": meta.uid}));
    }
    Ok(doc)
}

/// The fields of `stored` that the operator wrote: everything but the store's own `id`, `version`,
/// `createdAt`, `updatedAt`. Equal to [`store_document`]'s output when the store is up to date.
pub fn without_store_fields(mut stored: Value) -> Value {
    if let Value::Object(map) = &mut stored {
        for field in ["id", "version", "createdAt", "updatedAt"] {
            map.remove(field);
        }
    }
    stored
}

impl Mirrored for Campaign {
    type Spec = CampaignSpec;
    const REF_KIND: RefKind = RefKind::Campaign;
    const NAMES: &'static [RefKind] = &[RefKind::TrafficSource];

    fn spec(&self) -> &CampaignSpec {
        &self.spec
    }

    fn references(spec: &CampaignSpec) -> Vec<Reference> {
        spec.traffic_source_ref
            .iter()
            .map(|r| Reference::new(RefKind::TrafficSource, &r.name, "spec.trafficSourceRef"))
            .collect()
    }

    fn resolve(spec: &CampaignSpec, resolved: &Resolved) -> CampaignSpec {
        let mut spec = spec.clone();
        if let Some(r) = &spec.traffic_source_ref {
            spec.traffic_source_id = resolved.id(RefKind::TrafficSource, &r.name);
        }
        spec
    }
}

impl Mirrored for Stream {
    type Spec = StreamSpec;
    const REF_KIND: RefKind = RefKind::Stream;
    const NAMES: &'static [RefKind] = &[RefKind::Campaign, RefKind::Destination];

    fn spec(&self) -> &StreamSpec {
        &self.spec
    }

    fn references(spec: &StreamSpec) -> Vec<Reference> {
        let campaign = spec.campaign_ref.iter().map(|r| Reference::new(RefKind::Campaign, &r.name, "spec.campaignRef"));
        let destinations = spec.destinations.iter().enumerate().filter_map(|(i, d)| {
            let path = format!("spec.destinations[{i}].destinationRef");
            d.destination_ref.as_ref().map(|r| Reference::new(RefKind::Destination, &r.name, path))
        });
        campaign.chain(destinations).collect()
    }

    fn resolve(spec: &StreamSpec, resolved: &Resolved) -> StreamSpec {
        let mut spec = spec.clone();
        if let Some(r) = &spec.campaign_ref {
            spec.campaign_id = resolved.id(RefKind::Campaign, &r.name);
        }
        for d in &mut spec.destinations {
            if let Some(r) = &d.destination_ref {
                d.destination_id = resolved.id(RefKind::Destination, &r.name);
            }
        }
        spec
    }
}

impl Mirrored for Destination {
    type Spec = DestinationSpec;
    const REF_KIND: RefKind = RefKind::Destination;
    const NAMES: &'static [RefKind] = &[];

    fn spec(&self) -> &DestinationSpec {
        &self.spec
    }

    fn references(_: &DestinationSpec) -> Vec<Reference> {
        Vec::new()
    }

    fn resolve(spec: &DestinationSpec, _: &Resolved) -> DestinationSpec {
        spec.clone()
    }
}

impl Mirrored for TrafficSource {
    type Spec = TrafficSourceSpec;
    const REF_KIND: RefKind = RefKind::TrafficSource;
    const NAMES: &'static [RefKind] = &[];

    fn spec(&self) -> &TrafficSourceSpec {
        &self.spec
    }

    fn references(_: &TrafficSourceSpec) -> Vec<Reference> {
        Vec::new()
    }

    fn resolve(spec: &TrafficSourceSpec, _: &Resolved) -> TrafficSourceSpec {
        spec.clone()
    }
}

impl Mirrored for PostbackTemplate {
    type Spec = PostbackTemplateSpec;
    const REF_KIND: RefKind = RefKind::PostbackTemplate;
    const NAMES: &'static [RefKind] = &[];

    fn spec(&self) -> &PostbackTemplateSpec {
        &self.spec
    }

    fn references(_: &PostbackTemplateSpec) -> Vec<Reference> {
        Vec::new()
    }

    fn resolve(spec: &PostbackTemplateSpec, _: &Resolved) -> PostbackTemplateSpec {
        spec.clone()
    }
}

impl Mirrored for AffiliateNetwork {
    type Spec = AffiliateNetworkSpec;
    const REF_KIND: RefKind = RefKind::AffiliateNetwork;
    const NAMES: &'static [RefKind] = &[RefKind::PostbackTemplate];

    fn spec(&self) -> &AffiliateNetworkSpec {
        &self.spec
    }

    fn references(spec: &AffiliateNetworkSpec) -> Vec<Reference> {
        let template = spec
            .postback_template_ref
            .iter()
            .map(|r| Reference::new(RefKind::PostbackTemplate, &r.name, "spec.postbackTemplateRef"));
        let secret = spec
            .auth
            .secret_ref
            .iter()
            .filter(|_| spec.auth.mode != AuthMode::None)
            .map(|s| Reference::secret(&s.name, &s.key, "spec.auth.secretRef"));
        template.chain(secret).collect()
    }

    /// The Secret's value becomes `auth.token` (mode `token`) or `auth.secret` (mode `hmac`), as the data
    /// plane reads it; an inline value in the spec wins over the Secret.
    fn resolve(spec: &AffiliateNetworkSpec, resolved: &Resolved) -> AffiliateNetworkSpec {
        let mut spec = spec.clone();
        if let Some(r) = &spec.postback_template_ref {
            spec.postback_template_id = resolved.id(RefKind::PostbackTemplate, &r.name);
        }
        if let Some(s) = &spec.auth.secret_ref {
            let value = resolved.secret(&s.name, &s.key);
            let blank = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim().is_empty());
            match spec.auth.mode {
                AuthMode::Token if blank(&spec.auth.token) => spec.auth.token = value,
                AuthMode::Hmac if blank(&spec.auth.secret) => spec.auth.secret = value,
                _ => {}
            }
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffoflex_crds::ValidationContext;

    fn stream() -> Stream {
        let spec: StreamSpec = serde_json::from_value(json!({
            "campaignRef": {"name": "summer"}, "name": "DE mobile", "selection": "weighted",
            "destinations": [{"destinationRef": {"name": "offer-a"}, "weight": 70},
                             {"destinationRef": {"name": "offer-b"}, "weight": 30}]
        }))
        .unwrap();
        let mut s = Stream::new("de-mobile", spec);
        s.metadata.namespace = Some("shop".into());
        s.metadata.uid = Some("u-1".into());
        s
    }

    #[test]
    fn stream_references_carry_their_paths() {
        let refs = Stream::references(&stream().spec);
        let listed: Vec<(RefKind, &str, &str)> =
            refs.iter().map(|r| (r.kind, r.name.as_str(), r.path.as_str())).collect();
        assert_eq!(
            listed,
            vec![
                (RefKind::Campaign, "summer", "spec.campaignRef"),
                (RefKind::Destination, "offer-a", "spec.destinations[0].destinationRef"),
                (RefKind::Destination, "offer-b", "spec.destinations[1].destinationRef"),
            ]
        );
    }

    #[test]
    fn a_resolved_stream_is_a_valid_store_document() {
        let s = stream();
        assert!(s.spec.check(ValidationContext::Kubernetes).is_ok());
        let mut resolved = Resolved::new();
        for r in Stream::references(&s.spec) {
            resolved.found(&r, format!("id-{}", r.name));
        }
        let spec = Stream::resolve(&s.spec, &resolved);
        assert_eq!(spec.check(ValidationContext::Store), Ok(()));
        let doc = store_document(&s, &spec).unwrap();
        assert_eq!(doc["campaignId"], json!("id-summer"));
        assert_eq!(doc["campaignRef"], json!({"name": "summer"}));
        assert_eq!(doc["destinations"][1]["destinationId"], json!("id-offer-b"));
        assert_eq!(doc["managedBy"], json!("kubernetes"));
        assert_eq!(doc["kind"], json!("Stream"));
        assert_eq!(doc["kubernetes"], json!({"namespace": "shop", "name": "de-mobile", "uid": "u-1"}));
        assert_eq!(doc["teamId"], json!("default"), "seen by the API's default team");
        // Without its IDs the spec is not a store document.
        assert!(s.spec.check(ValidationContext::Store).is_err());
    }

    #[test]
    fn a_secret_fills_the_credential_of_its_mode() {
        let spec: AffiliateNetworkSpec = serde_json::from_value(json!({
            "key": "neta", "name": "Network A", "postbackTemplateRef": {"name": "generic"},
            "auth": {"mode": "hmac", "secretRef": {"name": "neta-auth", "key": "hmac"}}
        }))
        .unwrap();
        assert!(spec.check(ValidationContext::Kubernetes).is_ok());
        let refs = AffiliateNetwork::references(&spec);
        assert_eq!(refs.len(), 2);
        let mut resolved = Resolved::new();
        resolved.found(&refs[0], "tpl-1".into());
        resolved.found_secret(&refs[1], "k3y".into());
        let out = AffiliateNetwork::resolve(&spec, &resolved);
        assert_eq!(out.postback_template_id.as_deref(), Some("tpl-1"));
        assert_eq!(out.auth.secret.as_deref(), Some("k3y"));
        assert_eq!(out.auth.token, None);
        assert_eq!(out.check(ValidationContext::Store), Ok(()));
    }

    #[test]
    fn store_fields_are_ignored_when_comparing() {
        let doc = json!({"name": "A", "kind": "Destination"});
        let mut stored = doc.clone();
        stored["id"] = json!("x");
        stored["version"] = json!(3);
        stored["createdAt"] = json!("2026-01-01T00:00:00.000Z");
        stored["updatedAt"] = json!("2026-01-02T00:00:00.000Z");
        assert_eq!(without_store_fields(stored), doc);
    }
}
