//! Promises that rest on how dependencies are built, checked on the resolved
//! dependency graph itself.

use std::process::Command;

/// SECURITY.md says a dropped AES-GCM cipher wipes its whole state: the AES
/// key schedule (aes-gcm's `zeroize`) and the GHASH subkey, which only
/// polyval's `zeroize` feature wipes (its `Drop` is compiled in only then).
#[test]
fn the_ghash_subkey_of_every_cipher_is_wiped_on_drop() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "features",
            "-i",
            "polyval",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.contains("polyval feature \"zeroize\""),
        "polyval is built without zeroize:\n{tree}"
    );
}

/// The README's run command, `cargo run --release -- serve --dev`, names no
/// binary, and the workspace also builds the load generator's: without the
/// vault package's `default-run`, cargo refuses to choose.
#[test]
fn cargo_run_without_a_binary_name_runs_the_vault() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--offline",
            "--locked",
            "--no-deps",
            "--format-version",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let binaries = |package: &serde_json::Value| -> Vec<String> {
        package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|target| {
                target["kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k == "bin")
            })
            .map(|target| target["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all: Vec<String> = packages.iter().flat_map(binaries).collect();
    assert!(all.len() > 1, "one binary: nothing to choose from: {all:?}");
    let vault = packages
        .iter()
        .find(|package| package["name"] == "pii-vault")
        .unwrap();
    assert_eq!(vault["default_run"], "pii-vault", "binaries: {all:?}");
}
