//! The manifests in examples/k8s parse as their kinds and are valid custom resources (no server needed).

use serde::de::DeserializeOwned;
use traffoflex_crds::{
    AffiliateNetwork, Campaign, Destination, PostbackTemplate, Stream, TrafficSource, Validate, ValidationContext,
};

fn example(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn valid<K: DeserializeOwned>(file: &str, spec: impl Fn(&K) -> Vec<traffoflex_crds::FieldError>) {
    let obj: K = serde_yaml::from_str(&example(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(spec(&obj), vec![], "{file}");
}

#[test]
fn every_example_is_a_valid_custom_resource() {
    let ctx = ValidationContext::Kubernetes;
    valid::<TrafficSource>("traffic-source.yaml", |o| o.spec.validate(ctx));
    valid::<Campaign>("campaign.yaml", |o| o.spec.validate(ctx));
    valid::<Destination>("destination-a.yaml", |o| o.spec.validate(ctx));
    valid::<Destination>("destination-b.yaml", |o| o.spec.validate(ctx));
    valid::<Stream>("stream.yaml", |o| o.spec.validate(ctx));
    valid::<PostbackTemplate>("postback-template.yaml", |o| o.spec.validate(ctx));
    valid::<AffiliateNetwork>("affiliate-network.yaml", |o| o.spec.validate(ctx));
    let secret: serde_yaml::Value = serde_yaml::from_str(&example("affiliate-network-secret.yaml")).unwrap();
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
}
