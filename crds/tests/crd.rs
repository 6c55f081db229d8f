//! Each CRD has the right group, version, kind and scope, a status subresource, and a structural schema.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use pretty_assertions::assert_eq;
use serde_json::Value;
use traffoflex_crds::{all_crds, crds_yaml};

const KINDS: [(&str, &str); 7] = [
    ("Campaign", "campaigns"),
    ("Stream", "streams"),
    ("Destination", "destinations"),
    ("TrafficSource", "trafficsources"),
    ("AffiliateNetwork", "affiliatenetworks"),
    ("PostbackTemplate", "postbacktemplates"),
    ("DataPlane", "dataplanes"),
];

#[test]
fn every_kind_has_group_version_scope_and_status() {
    let crds = all_crds();
    assert_eq!(crds.len(), KINDS.len());
    for (crd, (kind, plural)) in crds.iter().zip(KINDS) {
        assert_eq!(crd.metadata.name.as_deref(), Some(format!("{plural}.traffoflex.io").as_str()));
        assert_eq!(crd.spec.group, "traffoflex.io");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.categories, Some(vec!["traffoflex".to_string()]));
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        let status = version.subresources.as_ref().and_then(|s| s.status.as_ref());
        assert!(status.is_some(), "{kind} has no status subresource");
        let columns = version.additional_printer_columns.as_deref().unwrap_or_default();
        assert!(columns.iter().any(|c| c.name == "Ready"), "{kind} shows no Ready column");
        assert!(columns.iter().any(|c| c.name == "Age"), "{kind} shows no Age column");
        let schema = serde_json::to_value(&version.schema).unwrap_or(Value::Null);
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
        assert!(status["observedGeneration"].is_object(), "{kind}: status.observedGeneration");
        assert!(status["conditions"]["items"]["properties"]["lastTransitionTime"].is_object(), "{kind}");
    }
}

/// Kubernetes accepts only structural schemas: no references, no `anyOf`/`oneOf` alternatives of
/// different shapes, a type on every node that does not preserve unknown fields or allow int-or-string.
#[test]
fn schemas_are_structural() {
    fn walk(path: &str, node: &Value, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else { return };
        for bad in ["$ref", "anyOf", "oneOf", "allOf", "definitions", "$defs"] {
            if obj.contains_key(bad) {
                problems.push(format!("{path}: has {bad}"));
            }
        }
        let free = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if !obj.contains_key("type") && !free {
            problems.push(format!("{path}: has no type"));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                walk(&format!("{path}.{name}"), child, problems);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = obj.get(key).filter(|c| c.is_object()) {
                walk(&format!("{path}[{key}]"), child, problems);
            }
        }
    }
    let mut problems = Vec::new();
    for crd in all_crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap_or(Value::Null);
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut problems);
    }
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn the_yaml_stream_holds_every_crd_in_order() {
    let yaml = crds_yaml();
    assert_eq!(yaml, crds_yaml(), "the output is deterministic");
    let docs: Vec<&str> = yaml.split("---\n").filter(|d| !d.trim().is_empty()).collect();
    assert_eq!(docs.len(), KINDS.len());
    for (doc, ((kind, _), crd)) in docs.iter().zip(KINDS.iter().zip(all_crds())) {
        let parsed: CustomResourceDefinition = serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(parsed.spec.names.kind, *kind);
        assert_eq!(parsed, crd, "{kind}: YAML and the derived CRD agree");
    }
}
