//! The TraffoFlex object model: one set of Rust types serves the CRDs, the store documents and the API JSON.

/// Every CRD of the `traffoflex.io` group as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    String::new()
}
