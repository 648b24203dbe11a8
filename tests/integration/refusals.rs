//! Refused calls through the real server: a principal that hammers calls it
//! may not make gets its refusals, but not one durable audit event each.
//! The first few identical refusals in a window are recorded one by one, the
//! rest are counted into one event when the window ends (or at shutdown), and
//! refusals past a principal's or an address's budget are counted without
//! their customer, so nobody can flood the log or a victim's access history.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    audit_events, spawn_vault_with, test_policy, verify_audit_log, TestVault, VaultClient,
    ADMIN_KEY, CHECKOUT_KEY,
};
use pii_vault::app::VaultOptions;
use pii_vault::pb::{self, FieldKind};
use pii_vault::policy::api_key_sha256_hex;
use pii_vault::vault::{Limits, RefusalBudget, RefusalLimits};
use tonic::Code;

const NOBODY_KEY: &str = "pv_test_nobody_key";
const NOBODY_TOO_KEY: &str = "pv_test_nobody_too_key";
const VICTIM: &str = "cust-victim";
/// Refused calls in a flood: a few thousand, over loopback only.
const FLOOD: usize = 3000;
/// Tasks the flood is spread over.
const FLOODERS: usize = 8;

/// The test policy and two principals with no scope at all.
fn policy() -> String {
    format!(
        r#"{}
[[principals]]
name = "nobody"
api_key_sha256 = "{}"
scopes = []
purposes = ["billing"]

[[principals]]
name = "nobody-too"
api_key_sha256 = "{}"
scopes = []
purposes = ["billing"]
"#,
        test_policy(),
        api_key_sha256_hex(NOBODY_KEY),
        api_key_sha256_hex(NOBODY_TOO_KEY),
    )
}

fn options(refusals: RefusalLimits) -> VaultOptions {
    VaultOptions {
        limits: Limits {
            refusals,
            ..Limits::default()
        },
        ..VaultOptions::default()
    }
}

/// A vault with a victim customer who holds an email address.
async fn vault_with_victim(options: VaultOptions) -> TestVault {
    let vault = spawn_vault_with(&policy(), options).await;
    let mut admin = vault.admin().await;
    common::put(
        &mut admin,
        common::PutFields::of(VICTIM).field("email", FieldKind::Email, "victim@example.com"),
    )
    .await
    .unwrap();
    vault
}

/// `calls` GetFields calls from `client`'s principal, spread over a few
/// tasks, each naming the customer `customer(i)`; every one must be refused
/// with PERMISSION_DENIED naming the missing scope.
async fn flood(client: &VaultClient, calls: usize, customer: fn(usize) -> String) {
    let tasks: Vec<_> = (0..FLOODERS)
        .map(|task| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for i in (task..calls).step_by(FLOODERS) {
                    let status =
                        common::get(&mut client, &customer(i), &["email"], "billing").await;
                    let status = status.expect_err("a principal without scopes reads nothing");
                    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                    assert!(status.message().contains("data:read"), "{status:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

fn victim(_: usize) -> String {
    VICTIM.to_owned()
}

fn customer_number(i: usize) -> String {
    format!("cust-{i}")
}

/// Every audit event that matches `request`, page after page.
async fn events(vault: &TestVault, request: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    let mut audit = vault.audit(ADMIN_KEY).await;
    audit_events(
        &mut audit,
        pb::ListAuditEventsRequest {
            limit: 10_000,
            ..request
        },
    )
    .await
    .unwrap()
}

async fn events_of_principal(vault: &TestVault, principal: &str) -> Vec<pb::AuditEvent> {
    events(
        vault,
        pb::ListAuditEventsRequest {
            principal: principal.into(),
            ..Default::default()
        },
    )
    .await
}

async fn events_of_customer(vault: &TestVault, customer: &str) -> Vec<pb::AuditEvent> {
    events(
        vault,
        pb::ListAuditEventsRequest {
            customer_id: customer.into(),
            ..Default::default()
        },
    )
    .await
}

/// The refused calls the events stand for.
fn calls_counted(events: &[pb::AuditEvent]) -> u64 {
    events.iter().map(|event| event.count).sum()
}

async fn assert_chain_intact(vault: &TestVault) {
    let mut audit = vault.audit(ADMIN_KEY).await;
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert!(verification.complete, "{verification:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_scopes_hammering_a_refused_call_writes_a_few_events() {
    let mut vault = vault_with_victim(VaultOptions::default()).await;
    let nobody = vault.vault(NOBODY_KEY).await;
    flood(&nobody, FLOOD, victim).await;

    // Three recorded one by one, the rest counted in memory (more only if
    // the flood outlasted a 60 s window).
    let recorded = events_of_principal(&vault, "nobody").await;
    assert!(
        (1..=8).contains(&recorded.len()),
        "{} events for {FLOOD} refusals",
        recorded.len()
    );
    assert!(recorded.iter().all(|event| event.count == 1));

    // At shutdown the counted refusals are written: all of them are there,
    // in a few events.
    vault.restart().await;
    let recorded = events_of_principal(&vault, "nobody").await;
    assert!(recorded.len() <= 8, "{recorded:?}");
    assert_eq!(calls_counted(&recorded), FLOOD as u64, "{recorded:?}");
    for event in &recorded {
        assert_eq!(
            (
                event.action.as_str(),
                event.customer_id.as_str(),
                event.outcome.as_str(),
                event.purpose.as_str()
            ),
            ("GetFields", VICTIM, "PERMISSION_DENIED", "billing"),
            "{event:?}"
        );
    }
    let counted = recorded.iter().find(|event| event.count > 1).unwrap();
    let first_at = counted.first_at.expect("a counted event says since when");
    let at = counted.at.unwrap();
    assert!(
        (first_at.seconds, first_at.nanos) <= (at.seconds, at.nanos),
        "{counted:?}"
    );
    assert!(!counted.request_id.is_empty());
    assert_chain_intact(&vault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_victims_access_history_does_not_grow_by_one_event_per_refusal() {
    let mut vault = vault_with_victim(VaultOptions::default()).await;
    let before = events_of_customer(&vault, VICTIM).await;
    assert_eq!(before.len(), 1, "{before:?}");

    let nobody = vault.vault(NOBODY_KEY).await;
    flood(&nobody, FLOOD, victim).await;
    vault.restart().await;

    let after = events_of_customer(&vault, VICTIM).await;
    assert!(
        after.len() <= before.len() + 8,
        "{} events about the victim after {FLOOD} refusals",
        after.len()
    );
    assert_eq!(after[..before.len()], before[..]);
    // The customer's own copy of their access history says the same.
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let export = common::export(&mut privacy, VICTIM, pb::ExportFormat::Json)
        .await
        .unwrap();
    let document: serde_json::Value = serde_json::from_slice(&export.document).unwrap();
    let history = document["access_history"].as_array().unwrap();
    assert!(history.len() <= after.len() + 1, "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counted_refusals_are_written_when_their_window_ends() {
    let vault = vault_with_victim(options(RefusalLimits {
        window: Duration::from_secs(1),
        ..RefusalLimits::default()
    }))
    .await;
    let nobody = vault.vault(NOBODY_KEY).await;
    let calls = 300;
    flood(&nobody, calls, victim).await;

    // No restart: the window's end alone writes the counted event.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recorded = loop {
        let recorded = events_of_principal(&vault, "nobody").await;
        if calls_counted(&recorded) == calls as u64 || Instant::now() > deadline {
            break recorded;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(calls_counted(&recorded), calls as u64, "{recorded:?}");
    assert!(recorded.len() < 40, "{} events", recorded.len());
    assert!(recorded.iter().any(|event| event.count > 1), "{recorded:?}");
    assert_chain_intact(&vault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_naming_a_new_customer_in_each_refusal_is_held_to_its_budget() {
    let mut vault = vault_with_victim(VaultOptions::default()).await;
    let budget = RefusalLimits::default().per_principal;
    let nobody = vault.vault(NOBODY_KEY).await;
    let started = Instant::now();
    let calls = 1000;
    flood(&nobody, calls, customer_number).await;
    let elapsed = started.elapsed().as_secs_f64();

    let recorded = events_of_principal(&vault, "nobody").await;
    let allowed = budget.burst + budget.per_second * (elapsed + 1.0);
    assert!(
        (recorded.len() as f64) <= allowed,
        "{} events for {calls} refusals in {elapsed:.1} s",
        recorded.len()
    );
    vault.restart().await;
    let recorded = events_of_principal(&vault, "nobody").await;
    assert!((recorded.len() as f64) <= allowed + 2.0, "{recorded:?}");
    assert_eq!(calls_counted(&recorded), calls as u64);
    // The calls past the budget are counted without the customers they named.
    let past_budget: Vec<_> = recorded.iter().filter(|event| event.count > 1).collect();
    assert!(!past_budget.is_empty());
    assert!(past_budget.iter().all(|event| event.customer_id.is_empty()
        && event.outcome == "PERMISSION_DENIED"
        && event.action == "GetFields"));
    assert_chain_intact(&vault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_sharing_an_address_share_its_budget() {
    let address = RefusalBudget {
        per_second: 1.0,
        burst: 10.0,
    };
    let mut vault = vault_with_victim(options(RefusalLimits {
        per_principal: RefusalBudget {
            per_second: 1000.0,
            burst: 1000.0,
        },
        per_address: address,
        ..RefusalLimits::default()
    }))
    .await;
    let nobody = vault.vault(NOBODY_KEY).await;
    let nobody_too = vault.vault(NOBODY_TOO_KEY).await;
    let started = Instant::now();
    let calls = 300;
    tokio::join!(
        flood(&nobody, calls, customer_number),
        flood(&nobody_too, calls, customer_number)
    );
    let elapsed = started.elapsed().as_secs_f64();
    let recorded = [
        events_of_principal(&vault, "nobody").await,
        events_of_principal(&vault, "nobody-too").await,
    ]
    .concat();
    let allowed = address.burst + address.per_second * (elapsed + 1.0);
    assert!(
        (recorded.len() as f64) <= allowed,
        "{} events for {} refusals from one address in {elapsed:.1} s",
        recorded.len(),
        2 * calls
    );
    vault.restart().await;
    let recorded = [
        events_of_principal(&vault, "nobody").await,
        events_of_principal(&vault, "nobody-too").await,
    ]
    .concat();
    assert_eq!(calls_counted(&recorded), 2 * calls as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_detokenized_again_and_again_write_a_few_events() {
    let mut vault = vault_with_victim(VaultOptions::default()).await;
    let checkout = vault.vault(CHECKOUT_KEY).await;
    let calls = 1000;
    let tasks: Vec<_> = (0..FLOODERS)
        .map(|task| {
            let mut client = checkout.clone();
            tokio::spawn(async move {
                for _ in (task..calls).step_by(FLOODERS) {
                    let results = common::detokenize(
                        &mut client,
                        &["tok_aaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()],
                        "billing",
                    )
                    .await
                    .unwrap();
                    assert!(results[0].error.is_some(), "{results:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    vault.restart().await;
    let recorded = events_of_principal(&vault, "checkout").await;
    assert!(recorded.len() <= 8, "{} events", recorded.len());
    assert_eq!(calls_counted(&recorded), calls as u64, "{recorded:?}");
    assert_chain_intact(&vault).await;
}
