//! The CustomResourceDefinitions of the `traffoflex.io` group, and their YAML for `traffoflex crds`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{AffiliateNetwork, Campaign, DataPlane, Destination, PostbackTemplate, Stream, TrafficSource};

/// Every CRD, in a fixed order: Campaign, Stream, Destination, TrafficSource, AffiliateNetwork,
/// PostbackTemplate, DataPlane.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Campaign::crd(),
        Stream::crd(),
        Destination::crd(),
        TrafficSource::crd(),
        AffiliateNetwork::crd(),
        PostbackTemplate::crd(),
        DataPlane::crd(),
    ]
}

/// Every CRD as one multi-document YAML stream (`---` before each document), keys sorted so the output
/// is the same whatever serde_json features the build has.
pub fn try_crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        let value = serde_yaml::to_value(&crd)?;
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&sorted(value))?);
    }
    Ok(out)
}

fn sorted(value: serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            let mut entries: Vec<(Value, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
            Value::Mapping(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
