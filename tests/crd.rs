//! The checked-in CRD is exactly what the code generates.

#[test]
fn checked_in_crd_equals_generated_crd() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/jwtkeysets.jwt.keyrotator.dev.yaml"
    );
    let checked_in = std::fs::read_to_string(path).expect("crds/ manifest is readable");
    let generated = jwt_key_rotator::api::crd_yaml().expect("CRD serializes");
    assert!(
        checked_in == generated,
        "crds/jwtkeysets.jwt.keyrotator.dev.yaml is stale; regenerate it with\n  cargo run -- crd > crds/jwtkeysets.jwt.keyrotator.dev.yaml"
    );
}

#[test]
fn crd_binary_prints_the_checked_in_manifest() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwt-key-rotator"))
        .arg("crd")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/jwtkeysets.jwt.keyrotator.dev.yaml"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(path).unwrap()
    );
}
