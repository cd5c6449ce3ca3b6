//! The committed `deploy/crds/*.yaml` are exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    for (file, crd) in crds::crds() {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
            panic!("deploy/crds/{file}: {e}; run `cargo run -p crds --bin crdgen`")
        });
        assert!(
            committed == crds::crd_yaml(&crd),
            "deploy/crds/{file} differs from the Rust types; run `cargo run -p crds --bin crdgen` and commit"
        );
    }
}
