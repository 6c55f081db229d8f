//! The committed `crds/generated/crds.yaml` must be exactly what `crds_yaml()` prints today.
//!
//! To refresh it: `cargo run -- crds > crds/generated/crds.yaml`, or
//! `TRAFFOFLEX_UPDATE_CRDS=1 cargo test -p traffoflex-crds --test drift`.

use std::path::PathBuf;

#[test]
fn generated_crds_yaml_is_up_to_date() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("generated/crds.yaml");
    let current = traffoflex_crds::crds_yaml();
    assert!(current.starts_with("---\n"), "crds_yaml() failed: {current}");
    if std::env::var_os("TRAFFOFLEX_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &current).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != current {
        let line = committed
            .lines()
            .zip(current.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "crds/generated/crds.yaml is out of date (first difference at {line}): the CRD types changed.\n\
             run `cargo run -- crds > crds/generated/crds.yaml` (or \
             `TRAFFOFLEX_UPDATE_CRDS=1 cargo test -p traffoflex-crds --test drift`) and commit the file"
        );
    }
}
