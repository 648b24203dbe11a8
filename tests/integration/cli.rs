//! The client commands people use, run as the real binary against a real vault.

use crate::common;

use std::process::{Command, Output};

pub(crate) fn pii_vault(vault: &common::TestVault, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(args)
        .env("PII_VAULT_ADDR", format!("http://{}", vault.addr))
        .env("PII_VAULT_API_KEY", common::ADMIN_KEY)
        .output()
        .unwrap()
}

pub(crate) fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout_of(output)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_tokenize_detokenize_and_delete_from_the_command_line() {
    let vault = common::spawn_vault().await;

    let put = json_of(&pii_vault(
        &vault,
        &[
            "put",
            "cli-1",
            "ssn:ssn=123456789",
            "email:email=Jo@Example.COM",
            "note=hello",
            "--purpose",
            "billing",
            "--json",
        ],
    ));
    let ssn_token = put["tokens"]["ssn"].as_str().unwrap().to_owned();
    assert!(ssn_token.starts_with("tok_"));

    let text = stdout_of(&pii_vault(
        &vault,
        &["get", "cli-1", "--purpose", "billing"],
    ));
    assert!(text.contains("123-45-6789"), "{text}");
    assert!(text.contains("Jo@example.com"), "{text}");
    assert!(text.contains("hello"), "{text}");

    let got = json_of(&pii_vault(
        &vault,
        &["get", "cli-1", "email", "--purpose", "billing", "--json"],
    ));
    assert_eq!(got["fields"][0]["value"], "Jo@example.com");
    assert_eq!(got["fields"][0]["disclosure"], "plaintext");

    let tokens = json_of(&pii_vault(
        &vault,
        &[
            "tokenize",
            "cli-1",
            "card_number=4242 4242 4242 4242",
            "--format",
            "format_preserving",
            "--purpose",
            "billing",
            "--json",
        ],
    ));
    let card_token = tokens["tokens"][0].as_str().unwrap().to_owned();
    assert!(
        card_token.ends_with("4242") && card_token.len() == 16,
        "{card_token}"
    );

    let resolved = json_of(&pii_vault(
        &vault,
        &[
            "detokenize",
            &card_token,
            &ssn_token,
            "--purpose",
            "billing",
            "--json",
        ],
    ));
    assert_eq!(resolved["results"][0]["value"], "4242424242424242");
    assert_eq!(resolved["results"][1]["value"], "123-45-6789");

    let receipt = json_of(&pii_vault(
        &vault,
        &["delete-customer", "cli-1", "--yes", "--json"],
    ));
    assert_eq!(receipt["fields_erased"], 3);
    assert_eq!(receipt["state"], "logical");

    let refused = pii_vault(&vault, &["detokenize", &card_token, "--purpose", "billing"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("token not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_reported_with_their_status_and_a_failing_exit_code() {
    let vault = common::spawn_vault().await;
    let bad = pii_vault(
        &vault,
        &[
            "put",
            "cli-2",
            "ssn:ssn=000-12-3456",
            "--purpose",
            "billing",
        ],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("area"),
        "{stderr}"
    );
    assert!(!stderr.contains("000-12-3456"));

    let unauthenticated = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["get", "cli-2", "--purpose", "billing"])
        .env("PII_VAULT_ADDR", format!("http://{}", vault.addr))
        .env("PII_VAULT_API_KEY", "wrong")
        .output()
        .unwrap();
    assert!(!unauthenticated.status.success());
    assert!(String::from_utf8_lossy(&unauthenticated.stderr).contains("Unauthenticated"));
}

#[test]
fn keygen_writes_a_private_root_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read(&key).unwrap();
    assert_eq!(first.len(), 65);
    assert!(!run().status.success(), "keygen overwrote an existing key");
    assert_eq!(std::fs::read(&key).unwrap(), first);
}

#[test]
fn serve_dev_creates_a_private_vault_and_prints_its_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let log = dir.path().join("serve.log");
    let start = || {
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap()
            .contains("pii-vault listening on")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "dev vault did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::read_to_string(&log).unwrap()
    };
    let first = start();
    let api_key = std::fs::read_to_string(data_dir.join("dev-api-key")).unwrap();
    assert!(
        first.contains(api_key.trim()),
        "key not printed on first start:\n{first}"
    );
    let second = start();
    assert!(
        !second.contains(api_key.trim()),
        "key printed again:\n{second}"
    );
    use std::os::unix::fs::PermissionsExt;
    for private in ["root.key", "keyring", "dev-api-key", "policy.toml"] {
        let mode = std::fs::metadata(data_dir.join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} is readable by others");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_export_audit_and_receipts_from_the_command_line() {
    let vault = common::spawn_vault().await;

    let purposes = stdout_of(&pii_vault(&vault, &["purposes"]));
    assert!(
        purposes.contains("marketing") && purposes.contains("Sending you offers picked for you.")
    );

    let refused = pii_vault(
        &vault,
        &[
            "put",
            "cli-3",
            "email:email=a@b.example",
            "--purpose",
            "marketing",
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("consent"));

    // A consent may name only a published policy version.
    stdout_of(&pii_vault(
        &vault,
        &[
            "policy",
            "publish",
            "--version",
            "2026-11",
            "--summary",
            "Our privacy policy.",
        ],
    ));
    let granted = json_of(&pii_vault(
        &vault,
        &[
            "consent",
            "set",
            "cli-3",
            "marketing",
            "--granted",
            "--policy-version",
            "2026-11",
            "--source",
            "web-signup",
            "--json",
        ],
    ));
    assert_eq!(granted["consents"][0]["granted"], true);
    stdout_of(&pii_vault(
        &vault,
        &[
            "put",
            "cli-3",
            "email:email=a@b.example",
            "--purpose",
            "marketing",
        ],
    ));
    stdout_of(&pii_vault(
        &vault,
        &["consent", "set", "cli-3", "marketing", "--withdrawn"],
    ));
    let history = json_of(&pii_vault(
        &vault,
        &["consent", "list", "cli-3", "--history", "--json"],
    ));
    assert_eq!(history["consents"].as_array().unwrap().len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let export_file = dir.path().join("export.json");
    let written = pii_vault(
        &vault,
        &["export", "cli-3", "--out", export_file.to_str().unwrap()],
    );
    assert!(written.status.success());
    let export: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export_file).unwrap()).unwrap();
    assert_eq!(export["fields"][0]["value"], "a@b.example");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&export_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "an export is personal data: owner-only");
    let report = stdout_of(&pii_vault(&vault, &["export", "cli-3", "--format", "text"]));
    assert!(
        report.contains("We hold 1 piece of information about you"),
        "{report}"
    );

    let events = stdout_of(&pii_vault(
        &vault,
        &["audit", "list", "--customer", "cli-3", "--json"],
    ));
    let actions: Vec<String> = events
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        actions.contains(&"SetConsent".to_owned()) && actions.contains(&"PutFields".to_owned()),
        "{actions:?}"
    );
    let verified = stdout_of(&pii_vault(&vault, &["audit", "verify"]));
    assert!(verified.contains("intact"), "{verified}");

    let receipt = json_of(&pii_vault(
        &vault,
        &["delete-customer", "cli-3", "--yes", "--json"],
    ));
    let receipt_id = receipt["receipt_id"].as_str().unwrap();
    let status = json_of(&pii_vault(
        &vault,
        &["deletion-status", receipt_id, "--json"],
    ));
    assert_eq!(status["customer_id"], "cli-3");
    assert_eq!(status["audit_hash"], receipt["audit_hash"]);
    assert!(!status["audit_hash"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_can_be_rotated_and_inspected_from_the_command_line() {
    let vault = common::spawn_vault().await;
    stdout_of(&pii_vault(
        &vault,
        &["put", "cli-4", "note=x", "--purpose", "billing"],
    ));

    // Not a terminal: plain progress lines, then a summary.
    let rotated = stdout_of(&pii_vault(
        &vault,
        &["keys", "rotate-master", "--retire", "--yes"],
    ));
    assert!(rotated.contains("1/1 customers re-wrapped"), "{rotated}");
    assert!(
        rotated.contains("master key rotated to v2")
            && rotated.contains("destroyed master versions [1]"),
        "{rotated}"
    );

    let rekeyed = json_of(&pii_vault(
        &vault,
        &["keys", "rotate-customer", "cli-4", "--json"],
    ));
    assert_eq!(rekeyed["new_key_version"], 2);
    let status = json_of(&pii_vault(&vault, &["keys", "status", "cli-4", "--json"]));
    assert_eq!(status["active_master_version"], 2);
    assert_eq!(status["master_versions"], serde_json::json!([2]));
    assert_eq!(status["customer_key_version"], 2);
    assert_eq!(status["root_of_trust"]["kind"], "file");
    let text = stdout_of(&pii_vault(&vault, &["keys", "status"]));
    assert!(text.contains("active master version  v2"), "{text}");
    assert!(text.contains("root of trust          file at "), "{text}");
    assert!(text.contains("--backup-retention"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_left_older_access_events_out_says_how_to_get_them() {
    let mut options = pii_vault::app::VaultOptions::default();
    options.limits.export_access_page = 2;
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    stdout_of(&pii_vault(
        &vault,
        &[
            "put",
            "cli-9",
            "email:email=paged@example.com",
            "--purpose",
            "billing",
        ],
    ));
    for _ in 0..2 {
        stdout_of(&pii_vault(
            &vault,
            &["get", "cli-9", "--purpose", "billing"],
        ));
    }

    let first = pii_vault(&vault, &["export", "cli-9"]);
    let first_page = json_of(&first);
    assert_eq!(first_page["access_history"].as_array().unwrap().len(), 2);
    assert_eq!(first_page["access_history_page"]["last_page"], false);
    let stderr = String::from_utf8(first.stderr).unwrap();
    let token = stderr
        .split_whitespace()
        .find(|word| word.starts_with("aht_"))
        .unwrap_or_else(|| panic!("no page token in: {stderr}"));
    assert_eq!(first_page["access_history_page"]["next_page_token"], token);

    let second = pii_vault(
        &vault,
        &["export", "cli-9", "--access-history-page-token", token],
    );
    let second_page = json_of(&second);
    assert_eq!(second_page["access_history_page"]["first_page"], false);
    assert_eq!(second_page["access_history_page"]["last_page"], true);
    let actions: Vec<&str> = second_page["access_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|access| access["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["PutFields"]);
    assert!(second.stderr.is_empty(), "{:?}", second.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_out_never_reuses_an_existing_file_nor_follows_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let vault = common::spawn_vault().await;
    stdout_of(&pii_vault(
        &vault,
        &[
            "put",
            "cli-4",
            "email:email=a@b.example",
            "--purpose",
            "billing",
        ],
    ));
    let dir = tempfile::tempdir().unwrap();
    let mode_of = |path: &std::path::Path| {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };

    // An existing file, readable by all: refused, left as it was.
    let existing = dir.path().join("existing.json");
    std::fs::write(&existing, b"keep").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = existing.to_str().unwrap();
    let refused = pii_vault(&vault, &["export", "cli-4", "--out", out]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("exists") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    // With --force it is replaced by a new owner-only file.
    stdout_of(&pii_vault(
        &vault,
        &["export", "cli-4", "--out", out, "--force"],
    ));
    assert!(std::fs::read_to_string(&existing)
        .unwrap()
        .contains("a@b.example"));
    assert_eq!(mode_of(&existing), 0o600);

    // A symlink to a file elsewhere: refused, with or without --force; the
    // file it points to is never written.
    let target = dir.path().join("target.txt");
    std::fs::write(&target, b"elsewhere").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.path().join("dangling.json");
    std::os::unix::fs::symlink(dir.path().join("absent.txt"), &dangling).unwrap();
    for path in [&link, &dangling] {
        for force in [false, true] {
            let mut args = vec!["export", "cli-4", "--out", path.to_str().unwrap()];
            if force {
                args.push("--force");
            }
            let refused = pii_vault(&vault, &args);
            assert!(!refused.status.success(), "{path:?} force={force}");
            let message = String::from_utf8_lossy(&refused.stderr);
            assert!(message.contains("symbolic link"), "{message}");
        }
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"elsewhere");
    assert!(!dir.path().join("absent.txt").exists());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The seq of each event `audit list --json` printed, in order.
fn listed_seqs(output: &Output) -> Vec<u64> {
    stdout_of(output)
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["customer_id"], "pager", "{event}");
            event["seq"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_follows_the_pages_until_the_last_event_or_the_limit() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    // More events than one page (1,000) holds.
    let written = 1100;
    for i in 0..written {
        let value = format!("v{i}");
        common::put(
            &mut admin,
            common::PutFields::of("pager").field("note", pii_vault::pb::FieldKind::Generic, &value),
        )
        .await
        .unwrap();
    }

    let all = listed_seqs(&pii_vault(
        &vault,
        &[
            "audit",
            "list",
            "--customer",
            "pager",
            "--limit",
            "0",
            "--json",
        ],
    ));
    assert_eq!(all.len(), written, "every event, across pages");
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "oldest first, once each"
    );

    let limited = listed_seqs(&pii_vault(
        &vault,
        &[
            "audit",
            "list",
            "--customer",
            "pager",
            "--limit",
            "1050",
            "--json",
        ],
    ));
    assert_eq!(limited, all[..1050]);

    let default = listed_seqs(&pii_vault(
        &vault,
        &["audit", "list", "--customer", "pager", "--json"],
    ));
    assert_eq!(default, all[..100]);
}
