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
