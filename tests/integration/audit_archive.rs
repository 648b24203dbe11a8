//! Audit log retention through the real server and CLI, on either store
//! (`PII_VAULT_TEST_STORE=postgres`): TrimAuditLog deletes the oldest events
//! through one the caller names by its hash, the vault keeps that event as
//! the anchor its live log chains from, `audit archive` writes what it trims
//! to JSON lines that `audit verify-archive` checks offline, and refusals
//! change nothing (docs/audit-retention.md).

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    all_audit_events, expect_code, get, put, spawn_vault_with, test_policy, verify_audit_log,
    AuditClient, PutFields, TestVault, ADMIN_KEY, CHECKOUT_KEY,
};
use pii_vault::app::VaultOptions;
use pii_vault::pb::{self, FieldKind};
use pii_vault::policy::api_key_sha256_hex;
use pii_vault::store::AuditRecord;
use pii_vault::vault::{Limits, RefusalLimits};
use tonic::Code;
use tonic_types::StatusExt;

/// audit:read alone: may read and verify the log, never trim it.
const AUDITOR_KEY: &str = "pv_test_auditor_key";
/// keys:admin alone: may rotate keys, never trim a log it cannot read.
const KEY_ADMIN_KEY: &str = "pv_test_key_admin_key";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn policy() -> String {
    format!(
        r#"{}
[[principals]]
name = "auditor"
api_key_sha256 = "{}"
scopes = ["audit:read"]

[[principals]]
name = "key-admin"
api_key_sha256 = "{}"
scopes = ["keys:admin"]
"#,
        test_policy(),
        api_key_sha256_hex(AUDITOR_KEY),
        api_key_sha256_hex(KEY_ADMIN_KEY),
    )
}

/// A vault that lets any event but the head be trimmed at once.
async fn vault_without_retention() -> TestVault {
    let options = VaultOptions {
        audit_min_retention: Duration::ZERO,
        ..VaultOptions::default()
    };
    spawn_vault_with(&policy(), options).await
}

/// `count` audited calls: puts and reads of a few customers.
async fn calls(vault: &TestVault, count: usize) {
    let mut admin = vault.admin().await;
    for i in 0..count {
        let customer = format!("cust-{}", i % 3);
        if i % 2 == 0 {
            put(
                &mut admin,
                PutFields::of(&customer).field(
                    "email",
                    FieldKind::Email,
                    &format!("a{i}@example.com"),
                ),
            )
            .await
            .unwrap();
        } else {
            // The first read of a customer not yet written is a refusal: audited too.
            let _ = get(&mut admin, &customer, &["email"], "billing").await;
        }
    }
}

async fn trim(
    audit: &mut AuditClient,
    through_seq: u64,
    through_hash: &str,
) -> Result<pb::TrimAuditLogResponse, tonic::Status> {
    audit
        .trim_audit_log(pb::TrimAuditLogRequest {
            through_seq,
            through_hash: through_hash.into(),
        })
        .await
        .map(|response| response.into_inner())
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Asserts the events are numbered one after another and each links to the
/// one before, the first to `anchor_hash`.
#[track_caller]
fn assert_chained_from(events: &[pb::AuditEvent], anchor_seq: u64, anchor_hash: &str) {
    let mut prev = (anchor_seq, anchor_hash.to_owned());
    for event in events {
        assert_eq!(event.seq, prev.0 + 1, "{event:?}");
        assert_eq!(event.prev_hash, prev.1, "event {}", event.seq);
        prev = (event.seq, event.hash.clone());
    }
}

fn verify_archive(files: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pii-vault"));
    command.args(["audit", "verify-archive", "--json"]);
    command.args(files);
    // Offline: no vault is named, and none is needed.
    command.env_remove("PII_VAULT_ADDR").output().unwrap()
}

fn json_of(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "not one JSON document: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `audit archive` run in a blocking thread (the vault serves on this runtime).
async fn archive(vault: &TestVault, before: &str, out: &Path) -> Output {
    let addr = format!("http://{}", vault.addr);
    let out = out.to_owned();
    let before = before.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["audit", "archive", "--json", "--before", &before, "--out"])
            .arg(&out)
            .env("PII_VAULT_ADDR", addr)
            .env("PII_VAULT_API_KEY", ADMIN_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_trimmed_log_verifies_from_its_anchor_and_records_the_trim() {
    let vault = vault_without_retention().await;
    calls(&vault, 12).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let before = all_audit_events(&mut audit).await;
    let through = &before[6];

    let trimmed = trim(&mut audit, through.seq, &through.hash).await.unwrap();
    assert_eq!(
        trimmed,
        pb::TrimAuditLogResponse {
            events_trimmed: through.seq,
            anchor_seq: through.seq,
            anchor_hash: through.hash.clone(),
        }
    );

    let after = all_audit_events(&mut audit).await;
    // The held log is what followed the anchor, and the trim's own event.
    assert_eq!(after[..after.len() - 1], before[7..]);
    assert_chained_from(&after, through.seq, &through.hash);
    let recorded = after.last().unwrap();
    assert_eq!(
        (
            recorded.action.as_str(),
            recorded.principal.as_str(),
            recorded.customer_id.as_str(),
            recorded.outcome.as_str()
        ),
        ("TrimAuditLog", "admin", "", "ok")
    );
    assert!(recorded.fields.is_empty());

    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(
        verification.intact && verification.complete,
        "{verification:?}"
    );
    assert_eq!(verification.events_checked, after.len() as u64);
    assert_eq!(verification.anchor_seq, through.seq);
    assert_eq!(verification.anchor_hash, through.hash);
    assert_eq!(verification.head_hash, recorded.hash);

    // Resuming at the anchor checks the held log; below it is a mistake named as one.
    let at_anchor = audit
        .verify_audit_log(pb::VerifyAuditLogRequest {
            after_seq: through.seq,
            max_events: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(at_anchor.intact && at_anchor.complete, "{at_anchor:?}");
    assert_eq!(at_anchor.events_checked, after.len() as u64);
    let status = expect_code(
        audit
            .verify_audit_log(pb::VerifyAuditLogRequest {
                after_seq: 3,
                max_events: 0,
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(reason(&status), "AUDIT_EVENTS_TRIMMED");
    assert!(
        status
            .message()
            .contains(&format!("events up to {} were trimmed", through.seq)),
        "{status:?}"
    );
    // Listing starts at the first held event, whatever it is asked.
    let page = audit
        .list_audit_events_page(pb::ListAuditEventsRequest {
            after_seq: 2,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events[0].seq, through.seq + 1);
}

#[tokio::test]
async fn refused_trims_are_named_and_change_nothing() {
    let vault = vault_without_retention().await;
    calls(&vault, 8).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    let head = events.last().unwrap().clone();
    let wrong_hash = events[1].hash.clone();

    // The head first: each refusal is recorded, after it.
    let refusals: Vec<(u64, String, &str)> = vec![
        (head.seq, head.hash.clone(), "is the newest audit event"),
        (
            3,
            wrong_hash,
            "through_hash is not the hash of audit event 3",
        ),
        (head.seq + 1000, head.hash.clone(), "is not held"),
        (0, GENESIS.into(), "is not held"),
        (3, "not-hex".into(), "64 hex characters"),
    ];
    for (seq, hash, message) in refusals {
        let status = expect_code(trim(&mut audit, seq, &hash).await, Code::InvalidArgument);
        assert!(status.message().contains(message), "{seq}: {status:?}");
        if !message.contains("hex") {
            assert_eq!(reason(&status), "AUDIT_TRIM_REFUSED", "{status:?}");
        }
    }
    // Nothing was trimmed: every event is still there; the refusals were
    // recorded after them, and the chain starts at the genesis hash.
    let after = all_audit_events(&mut audit).await;
    assert_eq!(after[..events.len()], events[..]);
    assert!(after[events.len()..]
        .iter()
        .all(|event| event.action == "TrimAuditLog" && event.outcome == "INVALID_ARGUMENT"));
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(
        (verification.anchor_seq, verification.anchor_hash.as_str()),
        (0, GENESIS)
    );

    // An event trimmed already is not held any more.
    trim(&mut audit, 4, &events[3].hash).await.unwrap();
    let status = expect_code(
        trim(&mut audit, 2, &events[1].hash).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("events up to 4 were trimmed"),
        "{status:?}"
    );
    assert_eq!(verify_audit_log(&mut audit).await.unwrap().anchor_seq, 4);
}

#[tokio::test]
async fn the_default_minimum_retention_refuses_recent_events() {
    // Default options: --audit-min-retention 7d.
    let vault = spawn_vault_with(&policy(), VaultOptions::default()).await;
    calls(&vault, 4).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    let status = expect_code(
        trim(&mut audit, 2, &events[1].hash).await,
        Code::InvalidArgument,
    );
    assert_eq!(reason(&status), "AUDIT_TRIM_REFUSED");
    assert!(
        status
            .message()
            .contains("younger than the minimum retention of 7days"),
        "{status:?}"
    );
    // The CLI writes its archive, but the vault trims nothing (exit 77).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit-1.jsonl");
    let archived = archive(&vault, "0s", &out).await;
    assert_eq!(archived.status.code(), Some(77), "{archived:?}");
    assert!(String::from_utf8_lossy(&archived.stderr).contains("trimmed nothing"));
    assert!(out.exists(), "the archive stays written");
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact);
    assert_eq!(verification.anchor_seq, 0);
    assert_eq!(
        all_audit_events(&mut audit).await[..events.len()],
        events[..]
    );
}

#[tokio::test]
async fn only_a_principal_with_keys_admin_and_audit_read_may_trim() {
    let vault = vault_without_retention().await;
    calls(&vault, 4).await;
    let mut admin_audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut admin_audit).await;
    for (key, principal, scope) in [
        (AUDITOR_KEY, "auditor", "keys:admin"),
        (CHECKOUT_KEY, "checkout", "keys:admin"),
        (KEY_ADMIN_KEY, "key-admin", "audit:read"),
    ] {
        let mut audit = vault.audit(key).await;
        let status = expect_code(
            trim(&mut audit, 2, &events[1].hash).await,
            Code::PermissionDenied,
        );
        assert_eq!(reason(&status), "SCOPE_MISSING");
        assert!(status.message().contains(scope), "{status:?}");
        let refusal = all_audit_events(&mut admin_audit).await.pop().unwrap();
        assert_eq!(
            (refusal.action.as_str(), refusal.principal.as_str()),
            ("TrimAuditLog", principal)
        );
        assert_eq!(refusal.outcome, "PERMISSION_DENIED");
    }
    let after = all_audit_events(&mut admin_audit).await;
    assert_eq!(after[..events.len()], events[..]);
    assert_eq!(
        verify_audit_log(&mut admin_audit).await.unwrap().anchor_seq,
        0
    );
}

/// The sequence numbers of every event the store holds, and of every entry
/// of its per-customer index (sled), read from the store itself.
async fn stored_seqs(vault: &mut TestVault) -> (Vec<u64>, Vec<u64>) {
    if let Some(database) = &vault.database {
        let client = database.client().await;
        let rows = client
            .query("SELECT seq FROM audit_events ORDER BY seq", &[])
            .await
            .unwrap();
        let seqs: Vec<u64> = rows.iter().map(|row| row.get::<_, i64>(0) as u64).collect();
        return (seqs.clone(), seqs);
    }
    vault.stop().await;
    let found = {
        let db = common::open_sled_when_released(&vault.paths.data_dir);
        let seq_of = |key: &[u8]| u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap());
        let events = db
            .scan_prefix(b"a")
            .keys()
            .map(|key| seq_of(&key.unwrap()))
            .collect();
        let indexed = db
            .scan_prefix(b"b")
            .keys()
            .map(|key| seq_of(&key.unwrap()))
            .collect();
        (events, indexed)
    };
    vault.start_again().await;
    found
}

#[tokio::test]
async fn trimmed_events_are_gone_from_the_store_and_the_anchor_survives_a_restart() {
    let mut vault = vault_without_retention().await;
    calls(&vault, 10).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    let through = events[5].clone();
    trim(&mut audit, through.seq, &through.hash).await.unwrap();

    let (held, indexed) = stored_seqs(&mut vault).await;
    assert_eq!(held.first(), Some(&(through.seq + 1)), "{held:?}");
    assert_eq!(held.len() as u64, events.len() as u64 - through.seq + 1);
    assert!(!indexed.is_empty());
    assert!(indexed.iter().all(|seq| *seq > through.seq), "{indexed:?}");

    // stored_seqs restarted a sled vault; PostgreSQL's is restarted here.
    vault.restart().await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(
        (verification.anchor_seq, verification.anchor_hash.clone()),
        (through.seq, through.hash.clone())
    );
    // The chain goes on from its head, still anchored.
    calls(&vault, 2).await;
    let after = all_audit_events(&mut audit).await;
    assert_chained_from(&after, through.seq, &through.hash);
    assert!(verify_audit_log(&mut audit).await.unwrap().intact);
}

/// A vault whose repeated refusals are counted into one event within 200 ms.
async fn vault_that_counts_refusals() -> TestVault {
    let options = VaultOptions {
        audit_min_retention: Duration::ZERO,
        limits: Limits {
            refusals: RefusalLimits {
                window: Duration::from_millis(200),
                ..RefusalLimits::default()
            },
            ..Limits::default()
        },
        ..VaultOptions::default()
    };
    spawn_vault_with(&policy(), options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_verify_offline_across_files_and_end_at_the_anchor() {
    let vault = vault_that_counts_refusals().await;
    calls(&vault, 6).await;
    // Identical refusals past the first few are counted into one event: its
    // outcome is archived as the store keeps it, count included.
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    for _ in 0..6 {
        let _ = get(&mut checkout, "cust-0", &["email"], "marketing").await;
    }
    let mut audit = vault.audit(ADMIN_KEY).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_audit_events(&mut audit)
        .await
        .iter()
        .any(|e| e.count > 1)
    {
        assert!(Instant::now() < deadline, "no counted event was written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    calls(&vault, 2).await;
    let before = all_audit_events(&mut audit).await;

    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("audit-1.jsonl");
    let archived = archive(&vault, "0s", &first).await;
    assert!(archived.status.success(), "{archived:?}");
    let report = json_of(&archived);
    // Everything but the newest event, which the vault keeps.
    let last = &before[before.len() - 2];
    assert_eq!(report["events_archived"], before.len() as u64 - 1);
    assert_eq!(report["anchor_seq"], last.seq);
    assert_eq!(report["anchor_hash"], last.hash.as_str());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&first).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let lines = std::fs::read_to_string(&first).unwrap();
    assert_eq!(lines.lines().count(), before.len() - 1);
    assert!(
        lines.contains(";count="),
        "the counted event is archived whole"
    );
    // Names and ids only: no value the calls stored reaches the archive.
    assert!(!lines.contains("@example.com"), "{lines}");

    let checked = verify_archive(&[&first]);
    assert!(checked.status.success(), "{checked:?}");
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert_eq!(json_of(&checked)["last_hash"], verification.anchor_hash);
    assert_eq!(json_of(&checked)["first_seq"], 1);

    // A second archive goes on from the first.
    calls(&vault, 4).await;
    let second = dir.path().join("audit-2.jsonl");
    let archived = archive(&vault, "0s", &second).await;
    assert!(archived.status.success(), "{archived:?}");
    assert_eq!(json_of(&archived)["first_seq"], last.seq + 1);
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact, "{verification:?}");
    let both = verify_archive(&[&first, &second]);
    assert!(both.status.success(), "{both:?}");
    assert_eq!(json_of(&both)["last_hash"], verification.anchor_hash);
    assert_eq!(json_of(&both)["last_seq"], verification.anchor_seq);
    // Alone, the second verifies too, saying where it starts.
    let alone = verify_archive(&[&second]);
    assert!(alone.status.success(), "{alone:?}");
    assert_eq!(json_of(&alone)["first_prev_hash"], last.hash.as_str());
    // Out of order, they do not chain.
    let swapped = verify_archive(&[&second, &first]);
    assert_eq!(swapped.status.code(), Some(65), "{swapped:?}");

    // Nothing older than the cutoff: nothing archived, no file, nothing trimmed.
    let third = dir.path().join("audit-3.jsonl");
    let none = archive(&vault, "3650d", &third).await;
    assert!(none.status.success(), "{none:?}");
    assert_eq!(json_of(&none)["events_archived"], 0);
    assert!(!third.exists());
    // An existing archive is never overwritten.
    let again = archive(&vault, "0s", &first).await;
    assert!(!again.status.success());
    assert!(both.status.success() && verify_archive(&[&first]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_archive_fails_verify_archive() {
    let vault = vault_without_retention().await;
    calls(&vault, 8).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let archived = archive(&vault, "0s", &file).await;
    assert!(archived.status.success(), "{archived:?}");
    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = original.lines().collect();

    let write = |lines: &[String]| {
        let path = dir.path().join("tampered.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let owned = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    // A changed outcome (its stored hash kept).
    let mut changed = owned(&lines);
    let mut event: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    let outcome = if event["outcome"] == "ok" {
        "PERMISSION_DENIED"
    } else {
        "ok"
    };
    event["outcome"] = outcome.into();
    changed[3] = event.to_string();
    // A removed line, and a changed line given a fresh hash.
    let mut removed = owned(&lines);
    removed.remove(2);
    let mut rehashed = owned(&lines);
    let mut event: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    event["principal"] = "support".into();
    let mut record = AuditRecord {
        seq: event["seq"].as_u64().unwrap(),
        at_ms: event["at_ms"].as_i64().unwrap(),
        principal: "support".into(),
        action: event["action"].as_str().unwrap().into(),
        customer_id: event["customer_id"].as_str().unwrap().into(),
        fields: serde_json::from_value(event["fields"].clone()).unwrap(),
        purpose: event["purpose"].as_str().unwrap().into(),
        outcome: event["outcome"].as_str().unwrap().into(),
        request_id: event["request_id"].as_str().unwrap().into(),
        prev_hash: [0; 32],
        hash: [0; 32],
    };
    let prev = data_encoding::HEXLOWER
        .decode(event["prev_hash"].as_str().unwrap().as_bytes())
        .unwrap();
    record.prev_hash = prev.try_into().unwrap();
    event["hash"] = data_encoding::HEXLOWER
        .encode(&record.computed_hash())
        .into();
    rehashed[2] = event.to_string();
    // Not JSON at all.
    let mut garbage = owned(&lines);
    garbage[1] = "{not json".into();

    for (what, tampered, line) in [
        ("changed", changed, 4),
        ("removed", removed, 3),
        ("rehashed", rehashed, 4),
        ("garbage", garbage, 2),
    ] {
        let path = write(&tampered);
        let output = verify_archive(&[&path]);
        assert_eq!(output.status.code(), Some(65), "{what}: {output:?}");
        let report = json_of(&output);
        assert_eq!(report["intact"], false, "{what}");
        assert!(
            report["broken_at"]
                .as_str()
                .unwrap()
                .ends_with(&format!("line {line}")),
            "{what}: {report}"
        );
    }
    // The untouched file still verifies.
    assert!(verify_archive(&[&file]).status.success());
    // Text mode says so too.
    let text = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["audit", "verify-archive"])
        .arg(dir.path().join("tampered.jsonl"))
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&text.stdout).contains("BROKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_racing_with_writes_loses_nothing() {
    let vault = vault_without_retention().await;
    calls(&vault, 20).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let snapshot = all_audit_events(&mut audit).await;
    let through = snapshot[14].clone();

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(vault.admin().await);
    }
    let writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(writer, mut admin)| {
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..25 {
                    let customer = format!("race-{writer}-{i}");
                    let value = format!("r{writer}x{i}@example.com");
                    let request = common::PutFields::of(&customer)
                        .field("email", FieldKind::Email, &value)
                        .build();
                    let response = admin.put_fields(request).await.unwrap();
                    let id = response.metadata().get("x-request-id").unwrap();
                    written.push(id.to_str().unwrap().to_owned());
                }
                written
            })
        })
        .collect();
    // Trim once the writers are under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while all_audit_events(&mut audit).await.len() < snapshot.len() + 10 {
        assert!(Instant::now() < deadline, "the writers wrote nothing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let trimmed = trim(&mut audit, through.seq, &through.hash).await.unwrap();
    assert_eq!(trimmed.events_trimmed, through.seq);
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    assert_eq!(written.len(), 100);

    let held = all_audit_events(&mut audit).await;
    assert_chained_from(&held, through.seq, &through.hash);
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(
        verification.intact && verification.complete,
        "{verification:?}"
    );
    // Every write after the anchor is held; none was trimmed with it (they
    // all came after the events the trim was asked to delete).
    let held_ids: HashSet<String> = held.iter().map(|e| e.request_id.clone()).collect();
    let lost: Vec<&String> = written.difference(&held_ids).collect();
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(
        held.iter().filter(|e| e.action == "TrimAuditLog").count(),
        1
    );
    assert_eq!(held[..snapshot.len() - 15], snapshot[15..]);
}

#[tokio::test]
async fn an_export_states_what_was_trimmed_and_holds_only_later_accesses() {
    let vault = vault_without_retention().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-x").field("email", FieldKind::Email, "x@example.com"),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        get(&mut admin, "cust-x", &["email"], "billing")
            .await
            .unwrap();
    }
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let untrimmed = common::export(&mut privacy, "cust-x", pb::ExportFormat::Json)
        .await
        .unwrap();
    assert_eq!(untrimmed.audit_trimmed_through_seq, 0);

    trim(&mut audit, events[2].seq, &events[2].hash)
        .await
        .unwrap();
    let exported = common::export(&mut privacy, "cust-x", pb::ExportFormat::Json)
        .await
        .unwrap();
    assert_eq!(exported.audit_trimmed_through_seq, events[2].seq);
    let document: serde_json::Value = serde_json::from_slice(&exported.document).unwrap();
    assert_eq!(
        document["access_history_page"]["audit_trimmed_through_seq"],
        events[2].seq
    );
    // The last read and the first export are held; the put and two reads are not.
    let history = document["access_history"].as_array().unwrap();
    let actions: Vec<&str> = history
        .iter()
        .map(|access| access["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["ExportCustomer", "GetFields"]);
    let report = common::export(&mut privacy, "cust-x", pb::ExportFormat::Text)
        .await
        .unwrap();
    let text = String::from_utf8(report.document).unwrap();
    assert!(text.contains("moved to our audit archive"), "{text}");
    // The reads in the archive may fall in the report's period: "at least".
    assert!(text.contains("was read at least"), "{text}");
}

/// Changes the stored event `seq` (its stored hash kept), on either engine.
async fn rewrite_stored_event(
    vault: &mut TestVault,
    seq: u64,
    change: impl FnOnce(&mut AuditRecord),
) {
    if let Some(database) = &vault.database {
        let client = database.client().await;
        let seq = seq as i64;
        let row = client
            .query_one("SELECT record FROM audit_events WHERE seq = $1", &[&seq])
            .await
            .unwrap();
        let mut record: AuditRecord = postcard::from_bytes(row.get::<_, &[u8]>(0)).unwrap();
        change(&mut record);
        let bytes = postcard::to_stdvec(&record).unwrap();
        client
            .execute(
                "UPDATE audit_events SET record = $1 WHERE seq = $2",
                &[&bytes, &seq],
            )
            .await
            .unwrap();
        return;
    }
    vault.stop().await;
    {
        let db = common::open_sled_when_released(&vault.paths.data_dir);
        let mut key = b"a".to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let mut record: AuditRecord =
            postcard::from_bytes(&db.get(&key).unwrap().unwrap()).unwrap();
        change(&mut record);
        db.insert(key, postcard::to_stdvec(&record).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    vault.start_again().await;
}

#[tokio::test]
async fn a_broken_chain_is_not_trimmed() {
    let mut vault = vault_without_retention().await;
    calls(&vault, 8).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    rewrite_stored_event(&mut vault, 3, |record| record.outcome = "ok-ish".into()).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let status = expect_code(trim(&mut audit, 5, &events[4].hash).await, Code::DataLoss);
    assert_eq!(reason(&status), "INTEGRITY_CHECK_FAILED");
    assert!(status.message().contains("broken at event 3"), "{status:?}");
    let after = all_audit_events(&mut audit).await;
    assert_eq!(after[0].seq, 1);
    assert_eq!(after[3..events.len()], events[3..]);
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert_eq!(
        (verification.intact, verification.first_bad_seq),
        (false, 3)
    );
    assert_eq!(verification.anchor_seq, 0);
}

/// Replaces the stored anchor, on either engine.
async fn rewrite_anchor(vault: &mut TestVault, anchor: pii_vault::store::AuditHead) {
    if let Some(database) = &vault.database {
        let client = database.client().await;
        client
            .execute(
                "UPDATE audit_anchor SET seq = $1, hash = $2 WHERE id = 1",
                &[&(anchor.seq as i64), &&anchor.hash[..]],
            )
            .await
            .unwrap();
        return;
    }
    vault.stop().await;
    {
        let db = common::open_sled_when_released(&vault.paths.data_dir);
        db.insert(b"T", postcard::to_stdvec(&anchor).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    vault.start_again().await;
}

#[tokio::test]
async fn the_first_held_event_must_link_to_the_anchor() {
    let mut vault = vault_without_retention().await;
    calls(&vault, 8).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    trim(&mut audit, 4, &events[3].hash).await.unwrap();
    assert!(verify_audit_log(&mut audit).await.unwrap().intact);

    // An anchor that is not the hash the first held event links to.
    let forged = pii_vault::store::AuditHead {
        seq: 4,
        hash: [7; 32],
    };
    rewrite_anchor(&mut vault, forged).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert_eq!(
        (verification.intact, verification.first_bad_seq),
        (false, 5),
        "{verification:?}"
    );
    assert_eq!(verification.anchor_hash, "07".repeat(32));
    // Nor is more trimmed from a chain that does not verify.
    let status = expect_code(trim(&mut audit, 6, &events[5].hash).await, Code::DataLoss);
    assert!(status.message().contains("broken at event 5"), "{status:?}");
}

async fn audit_of(process: &common::VaultProcess) -> AuditClient {
    pb::audit_service_client::AuditServiceClient::with_interceptor(
        process.channel().await,
        common::Bearer::new(ADMIN_KEY),
    )
}

/// The real binary, with `extra` serve arguments, on this pass's store.
fn serve(
    paths: &pii_vault::app::VaultPaths,
    log: &Path,
    database: Option<&common::TestDatabase>,
    extra: &[&str],
) -> common::VaultProcess {
    let mut args: Vec<&str> = extra.to_vec();
    if let Some(database) = database {
        args.extend(database.serve_args());
    }
    common::VaultProcess::start_with(paths, log, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_flag_sets_the_minimum_retention_and_defaults_to_7_days() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &policy());
    let database = if common::on_postgres() {
        Some(common::TestDatabase::create().await.unwrap())
    } else {
        None
    };
    let log = dir.path().join("vault.log");
    let process = serve(&paths, &log, database.as_ref(), &[]);
    let mut admin = process.vault(ADMIN_KEY).await;
    for customer in ["flag-1", "flag-2", "flag-3"] {
        put(
            &mut admin,
            PutFields::of(customer).field("email", FieldKind::Email, "f@example.com"),
        )
        .await
        .unwrap();
    }
    let mut audit = audit_of(&process).await;
    let events = all_audit_events(&mut audit).await;
    let status = expect_code(
        trim(&mut audit, 1, &events[0].hash).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("7days"), "{status:?}");
    assert!(process.terminate().success());

    let process = serve(
        &paths,
        &log,
        database.as_ref(),
        &["--audit-min-retention", "0s"],
    );
    let mut audit = audit_of(&process).await;
    let trimmed = trim(&mut audit, 2, &events[1].hash).await.unwrap();
    assert_eq!((trimmed.events_trimmed, trimmed.anchor_seq), (2, 2));
    assert!(verify_audit_log(&mut audit).await.unwrap().intact);
    assert!(process.terminate().success());
}
