//! ExportCustomer and GetDeletionStatus through the real gRPC server: the JSON
//! export holds exactly one customer's data, consents and access history; the
//! text export explains it in plain English; deletion receipts can be fetched
//! again and point at the audit event of the erasure.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    audit_events, delete_customer, detokenize, expect_code, export, field, find_customers, get,
    put, set_consent_from, tokenize, PutFields, TestVault, Tokenize, ADMIN_KEY, CHECKOUT_KEY,
    DPO_KEY, EXPORTER_KEY, SUPPORT_KEY, WRITER_KEY,
};
use pii_vault::pb::{self, ExportFormat, FieldKind, TokenFormat};
use pii_vault::vault::ManualClock;
use serde_json::{json, Value};
use tonic::Code;

/// What was stored for the exported customer.
struct Stored {
    /// name -> (kind, value, token)
    fields: BTreeMap<String, (String, String, String)>,
    /// token -> (kind, format, value)
    standalone: BTreeMap<String, (String, String, String)>,
}

const FIELDS: [(&str, FieldKind, &str, &str); 5] = [
    ("email", FieldKind::Email, "email", "ann.export@example.com"),
    ("ssn", FieldKind::Ssn, "ssn", "123-45-6789"),
    ("phone", FieldKind::Phone, "phone", "+15551230001"),
    ("full_name", FieldKind::Name, "name", "Ann Exporter"),
    (
        "card",
        FieldKind::CardNumber,
        "card_number",
        "4111111111111111",
    ),
];

const STANDALONE: [(FieldKind, &str, &str, TokenFormat, &str); 3] = [
    (
        FieldKind::CardNumber,
        "card_number",
        "5555555555554444",
        TokenFormat::Random,
        "random",
    ),
    (
        FieldKind::Ssn,
        "ssn",
        "123-45-6780",
        TokenFormat::FormatPreserving,
        "format_preserving",
    ),
    (
        FieldKind::Generic,
        "generic",
        "order note 42",
        TokenFormat::Deterministic,
        "deterministic",
    ),
];

/// The other customer's values: none may appear in cust-1's export.
const OTHER_VALUES: [&str; 5] = [
    "cust-2",
    "zed.other@elsewhere.example",
    "321-54-9876",
    "Zedediah Otherperson",
    "secret-of-cust-two",
];

/// cust-1 with fields, standalone tokens, a withdrawn consent and reads by
/// checkout (billing), support (support) and admin; and cust-2, whose data and
/// tokens are returned for the leak checks.
async fn two_customers(vault: &TestVault, clock: &ManualClock) -> (Stored, Vec<String>) {
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let mut support = vault.vault(SUPPORT_KEY).await;

    // The versions the consents name, published before either customer
    // joined: no notice is pending for them.
    for version in ["2025-01", "2025-06"] {
        common::publish_policy(&mut privacy, version, "Our privacy policy.", &[], false)
            .await
            .unwrap();
    }
    clock.advance(std::time::Duration::from_secs(1));

    let tokens = put(
        &mut admin,
        PutFields::of("cust-1").fields(
            FIELDS
                .iter()
                .map(|(name, kind, _, value)| field(name, *kind, value))
                .collect(),
        ),
    )
    .await
    .unwrap()
    .tokens;
    let standalone_tokens = tokenize(
        &mut admin,
        Tokenize::of("cust-1").items(
            STANDALONE
                .iter()
                .map(|(kind, _, value, format, _)| (*kind, *value, *format))
                .collect(),
        ),
    )
    .await
    .unwrap();
    let stored = Stored {
        fields: FIELDS
            .iter()
            .map(|(name, _, kind, value)| {
                (
                    name.to_string(),
                    (kind.to_string(), value.to_string(), tokens[*name].clone()),
                )
            })
            .collect(),
        standalone: STANDALONE
            .iter()
            .zip(&standalone_tokens)
            .map(|((_, kind, value, _, format), token)| {
                (
                    token.clone(),
                    (kind.to_string(), format.to_string(), value.to_string()),
                )
            })
            .collect(),
    };
    set_consent_from(
        &mut privacy,
        "cust-1",
        "marketing",
        true,
        "2025-01",
        "web-signup",
    )
    .await
    .unwrap();
    set_consent_from(
        &mut privacy,
        "cust-1",
        "marketing",
        false,
        "2025-06",
        "settings-page",
    )
    .await
    .unwrap();

    let other_tokens: Vec<String> = put(
        &mut admin,
        PutFields::of("cust-2")
            .field("email", FieldKind::Email, OTHER_VALUES[1])
            .field("ssn", FieldKind::Ssn, OTHER_VALUES[2])
            .field("full_name", FieldKind::Name, OTHER_VALUES[3]),
    )
    .await
    .unwrap()
    .tokens
    .into_values()
    .chain(
        tokenize(
            &mut admin,
            Tokenize::of("cust-2").item(FieldKind::Generic, OTHER_VALUES[4], TokenFormat::Random),
        )
        .await
        .unwrap(),
    )
    .collect();

    // Reads: checkout 3 times for billing, support once, admin once (a batch
    // that also touches cust-2); a refused read counts as none.
    for _ in 0..2 {
        get(&mut checkout, "cust-1", &["card"], "billing")
            .await
            .unwrap();
    }
    detokenize(&mut checkout, &[tokens["card"].clone()], "billing")
        .await
        .unwrap();
    get(&mut support, "cust-1", &["email"], "support")
        .await
        .unwrap();
    let batch = [tokens["email"].clone(), other_tokens[0].clone()];
    let resolved = detokenize(&mut admin, &batch, "billing").await.unwrap();
    assert!(resolved.iter().all(|r| r.error.is_none()), "{resolved:?}");
    expect_code(
        get(&mut checkout, "cust-1", &["card"], "marketing").await,
        Code::PermissionDenied,
    );
    (stored, other_tokens)
}

fn json_export(response: &pb::ExportCustomerResponse) -> Value {
    assert_eq!(response.content_type, "application/json");
    serde_json::from_slice(&response.document).unwrap()
}

#[track_caller]
/// The RFC 3339 time `value` holds (RFC 3339 leaves out a zero fraction, so
/// such strings do not compare as times).
fn assert_rfc3339(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no string"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[track_caller]
fn assert_nothing_of_the_other_customer(document: &[u8], other_tokens: &[String]) {
    let text = String::from_utf8_lossy(document);
    for value in OTHER_VALUES
        .iter()
        .copied()
        .chain(other_tokens.iter().map(String::as_str))
    {
        assert!(
            !common::contains(document, value.as_bytes()),
            "{value} in the export:\n{text}"
        );
    }
}

async fn customer_events(vault: &TestVault, customer: &str) -> Vec<pb::AuditEvent> {
    let mut audit = vault.audit(ADMIN_KEY).await;
    audit_events(
        &mut audit,
        pb::ListAuditEventsRequest {
            customer_id: customer.into(),
            limit: 10_000,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_json_export_holds_exactly_what_was_stored_for_the_customer_and_nothing_else() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    let (stored, other_tokens) = two_customers(&vault, &clock).await;
    let events_before = customer_events(&vault, "cust-1").await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let response = export(&mut privacy, "cust-1", ExportFormat::Json)
        .await
        .unwrap();
    assert_nothing_of_the_other_customer(&response.document, &other_tokens);
    let doc = json_export(&response);

    let keys: BTreeSet<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "format",
            "version",
            "customer_id",
            "exported_at",
            "customer_since",
            "fields",
            "tokens",
            "consents",
            "policy_acknowledgements",
            "pending_notices",
            "purposes",
            "access_history",
            "access_history_page",
        ])
    );
    assert_eq!(doc["format"], "pii-vault.customer-export");
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["customer_id"], "cust-1");
    let exported_at = assert_rfc3339(&doc["exported_at"]);
    let customer_since = assert_rfc3339(&doc["customer_since"]);
    assert!(customer_since <= exported_at, "{doc}");

    // Every field, with its plaintext value, kind and token.
    let fields: BTreeMap<String, (String, String, String)> = doc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_rfc3339(&f["updated_at"]);
            let text = |key: &str| f[key].as_str().unwrap().to_owned();
            (text("name"), (text("kind"), text("value"), text("token")))
        })
        .collect();
    assert_eq!(fields, stored.fields);

    // Every token: the fields' with their field name, the standalone ones with none.
    let mut field_tokens = BTreeMap::new();
    let mut standalone = BTreeMap::new();
    for token in doc["tokens"].as_array().unwrap() {
        let text = |key: &str| token[key].as_str().unwrap().to_owned();
        match &token["field"] {
            Value::Null => {
                standalone.insert(text("token"), (text("kind"), text("format"), text("value")));
            }
            Value::String(name) => {
                assert_eq!(text("format"), "random");
                field_tokens.insert(name.clone(), (text("kind"), text("value"), text("token")));
            }
            other => panic!("field is {other}"),
        }
    }
    assert_eq!(doc["tokens"].as_array().unwrap().len(), 8);
    assert_eq!(field_tokens, stored.fields);
    assert_eq!(standalone, stored.standalone);

    // Consents: the current choice and the history.
    let withdrawn = json!({
        "purpose": "marketing",
        "granted": false,
        "policy_version": "2025-06",
        "source": "settings-page",
    });
    let granted = json!({
        "purpose": "marketing",
        "granted": true,
        "policy_version": "2025-01",
        "source": "web-signup",
    });
    let without_time = |records: &Value| -> Vec<Value> {
        records
            .as_array()
            .unwrap()
            .iter()
            .map(|record| {
                assert_rfc3339(&record["recorded_at"]);
                let mut record = record.clone();
                record.as_object_mut().unwrap().remove("recorded_at");
                record
            })
            .collect()
    };
    assert_eq!(
        without_time(&doc["consents"]["history"]),
        [granted, withdrawn.clone()]
    );
    assert_eq!(without_time(&doc["consents"]["current"]), [withdrawn]);
    assert_eq!(doc["policy_acknowledgements"], json!([]));

    let mut purposes = doc["purposes"].as_array().unwrap().clone();
    purposes.sort_by_key(|p| p["name"].as_str().unwrap().to_owned());
    assert_eq!(
        purposes,
        [
            json!({"name": "billing", "description": "Charging you for the orders you place.", "basis": "contract"}),
            json!({"name": "marketing", "description": "Sending you offers picked for you.", "basis": "consent"}),
            json!({"name": "support", "description": "Helping you when you contact us.", "basis": "legitimate_interest"}),
        ]
    );

    // The access history is the customer's audit trail up to the export,
    // newest first, all of it in one page.
    assert_eq!(
        doc["access_history_page"],
        json!({"order": "newest_first", "first_page": true, "last_page": true, "next_page_token": null, "audit_trimmed_through_seq": 0})
    );
    assert!(response.next_access_history_page_token.is_empty());
    let history = doc["access_history"].as_array().unwrap();
    let described: Vec<Value> = history
        .iter()
        .map(|access| {
            assert_rfc3339(&access["at"]);
            let mut access = access.clone();
            access.as_object_mut().unwrap().remove("at");
            access
        })
        .collect();
    let from_audit: Vec<Value> = events_before.iter().rev().map(access_of).collect();
    assert_eq!(described, from_audit);
    for wanted in [
        json!({"principal": "checkout", "action": "GetFields", "fields": ["card"], "purpose": "billing", "outcome": "ok"}),
        json!({"principal": "checkout", "action": "Detokenize", "fields": ["card"], "purpose": "billing", "outcome": "ok"}),
        json!({"principal": "support", "action": "GetFields", "fields": ["email"], "purpose": "support", "outcome": "ok"}),
        json!({"principal": "admin", "action": "Detokenize", "fields": ["email"], "purpose": "billing", "outcome": "ok"}),
        json!({"principal": "checkout", "action": "GetFields", "fields": ["card"], "purpose": "marketing", "outcome": "PERMISSION_DENIED"}),
        json!({"principal": "admin", "action": "SetConsent", "fields": [], "purpose": "marketing", "outcome": "ok"}),
    ] {
        assert!(
            described.contains(&wanted),
            "{wanted} not in {described:#?}"
        );
    }
}

#[tokio::test]
async fn the_text_export_explains_purposes_holdings_and_reads_in_plain_english() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    let (_, other_tokens) = two_customers(&vault, &clock).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let response = export(&mut privacy, "cust-1", ExportFormat::Text)
        .await
        .unwrap();
    assert_eq!(response.content_type, "text/plain; charset=utf-8");
    assert_nothing_of_the_other_customer(&response.document, &other_tokens);
    let text = String::from_utf8(response.document).unwrap();

    for expected in [
        "cust-1",
        // The purposes, by their descriptions, with the customer's choice.
        "Charging you for the orders you place.",
        "Sending you offers picked for you.",
        "Helping you when you contact us.",
        "you said no on",
        // What is held.
        "We hold 5 pieces of information about you:",
        "your email address",
        "your social security number",
        "We also keep 3 value(s)",
        // Who read it, why, how often (the refused read does not count).
        "In the last 90 days your information was read 5 times:",
        "- 3 times by checkout, for charging you for the orders you place.",
        "- once by support, for helping you when you contact us.",
        "- once by admin, for charging you for the orders you place.",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // A report for the customer names purposes, not internal machinery.
    for internal in [
        "legitimate_interest",
        "PERMISSION_DENIED",
        "GetFields",
        "tok_",
    ] {
        assert!(!text.contains(internal), "{internal:?} in:\n{text}");
    }
}

#[tokio::test]
async fn the_text_export_of_a_customer_nobody_read_says_so() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "quiet@example.com"),
    )
    .await
    .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let text = String::from_utf8(
        export(&mut privacy, "cust-1", ExportFormat::Text)
            .await
            .unwrap()
            .document,
    )
    .unwrap();
    for expected in [
        "We hold 1 piece of information about you: your email address.",
        "In the last 90 days nobody read your information.",
        "you have not agreed",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[tokio::test]
async fn exporting_is_audited_whether_allowed_or_refused() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "audited@example.com"),
    )
    .await
    .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    export(&mut privacy, "cust-1", ExportFormat::Json)
        .await
        .unwrap();
    export(&mut privacy, "cust-1", ExportFormat::Text)
        .await
        .unwrap();
    let mut checkout = vault.privacy(CHECKOUT_KEY).await;
    expect_code(
        export(&mut checkout, "cust-1", ExportFormat::Json).await,
        Code::PermissionDenied,
    );

    let exports: Vec<(String, String)> = customer_events(&vault, "cust-1")
        .await
        .into_iter()
        .filter(|e| e.action == "ExportCustomer")
        .map(|e| (e.principal, e.outcome))
        .collect();
    assert_eq!(
        exports,
        [
            ("admin".to_owned(), "ok".to_owned()),
            ("admin".to_owned(), "ok".to_owned()),
            ("checkout".to_owned(), "PERMISSION_DENIED".to_owned()),
        ]
    );
    // The second export lists the first among the accesses.
    let doc = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let actions: Vec<&str> = doc["access_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "ExportCustomer",
            "ExportCustomer",
            "ExportCustomer",
            "PutFields"
        ]
    );
}

#[tokio::test]
async fn export_needs_privacy_admin_and_a_customer_the_vault_holds() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "held@example.com"),
    )
    .await
    .unwrap();
    for key in [CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY] {
        let mut client = vault.privacy(key).await;
        let status = expect_code(
            export(&mut client, "cust-1", ExportFormat::Json).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("privacy:admin"), "{status:?}");
        assert!(!status.message().contains("held@"), "{status:?}");
    }
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    for format in [ExportFormat::Json, ExportFormat::Text] {
        expect_code(
            export(&mut privacy, "cust-nobody", format).await,
            Code::NotFound,
        );
    }
    expect_code(
        export(&mut privacy, "", ExportFormat::Json).await,
        Code::InvalidArgument,
    );
    expect_code(
        privacy
            .export_customer(pb::ExportCustomerRequest {
                customer_id: "cust-1".into(),
                format: 99,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );

    delete_customer(&mut privacy, "cust-1").await.unwrap();
    expect_code(
        export(&mut privacy, "cust-1", ExportFormat::Json).await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn a_deletion_receipt_can_be_fetched_again_and_names_the_audit_event_of_the_erasure() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    let (stored, _) = two_customers(&vault, &clock).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let receipt = delete_customer(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(receipt.customer_id, "cust-1");
    assert_eq!(receipt.fields_erased as usize, stored.fields.len());
    assert_eq!(
        receipt.tokens_erased as usize,
        stored.fields.len() + stored.standalone.len()
    );
    assert_eq!(receipt.audit_hash.len(), 64, "{receipt:?}");
    assert!(receipt
        .audit_hash
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    let status = common::deletion_status(&mut privacy, &receipt.receipt_id)
        .await
        .unwrap();
    assert_eq!(status, receipt);

    let erasures: Vec<pb::AuditEvent> = customer_events(&vault, "cust-1")
        .await
        .into_iter()
        .filter(|e| e.action == "DeleteCustomer")
        .collect();
    assert_eq!(erasures.len(), 1, "{erasures:?}");
    assert_eq!(erasures[0].hash, receipt.audit_hash);
    assert_eq!(erasures[0].outcome, "ok");

    // Erasing again returns the same receipt, and still names the first erasure.
    let again = delete_customer(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(again, receipt);
}

#[tokio::test]
async fn get_deletion_status_refuses_unknown_and_empty_receipt_ids_and_other_principals() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "gone@example.com"),
    )
    .await
    .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let receipt = delete_customer(&mut privacy, "cust-1").await.unwrap();
    let status_of = |receipt_id: &str| pb::GetDeletionStatusRequest {
        receipt_id: receipt_id.into(),
    };

    expect_code(
        privacy
            .get_deletion_status(status_of("rcpt_doesnotexist"))
            .await,
        Code::NotFound,
    );
    expect_code(
        privacy.get_deletion_status(status_of("")).await,
        Code::InvalidArgument,
    );
    let mut checkout = vault.privacy(CHECKOUT_KEY).await;
    let status = expect_code(
        checkout
            .get_deletion_status(status_of(&receipt.receipt_id))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("privacy:admin"), "{status:?}");
}

#[tokio::test]
async fn a_deletion_receipt_survives_a_restart() {
    let mut vault = common::spawn_vault().await;
    let receipt = {
        let mut admin = vault.admin().await;
        put(
            &mut admin,
            PutFields::of("cust-1").field("email", FieldKind::Email, "later@example.com"),
        )
        .await
        .unwrap();
        let mut privacy = vault.privacy(ADMIN_KEY).await;
        delete_customer(&mut privacy, "cust-1").await.unwrap()
    };
    vault.restart().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let status = common::deletion_status(&mut privacy, &receipt.receipt_id)
        .await
        .unwrap();
    assert_eq!(status, receipt);
}

#[tokio::test]
async fn a_customer_recreated_after_erasure_exports_only_their_own_history() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    put(
        &mut admin,
        PutFields::of("again").field("email", FieldKind::Email, "old@example.com"),
    )
    .await
    .unwrap();
    get(&mut checkout, "again", &[], "billing").await.unwrap();
    delete_customer(&mut privacy, "again").await.unwrap();
    put(
        &mut admin,
        PutFields::of("again").field("email", FieldKind::Email, "new@example.com"),
    )
    .await
    .unwrap();

    let document = export(&mut privacy, "again", ExportFormat::Json)
        .await
        .unwrap();
    let export: Value = serde_json::from_slice(&document.document).unwrap();
    let history = export["access_history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "only the new PutFields: {history:?}");
    assert_eq!(history[0]["action"], "PutFields");
    let text = export_text(&mut privacy, "again").await;
    assert!(text.contains("nobody read your information"), "{text}");
}

async fn export_text(privacy: &mut common::PrivacyClient, customer: &str) -> String {
    let document = export(privacy, customer, ExportFormat::Text).await.unwrap();
    String::from_utf8(document.document).unwrap()
}

// ---------------------------------------------------------------------------
// Who may export what (security review #15, item 3).
// ---------------------------------------------------------------------------

/// cust-1's values that the dpo's rules deny or keep to a token.
const WITHHELD_FROM_DPO: [&str; 6] = [
    "123-45-6789",
    "4111111111111111",
    "Ann Exporter",
    "5555555555554444",
    "123-45-6780",
    "order note 42",
];

/// name (or token, for standalone values) -> (disclosure, value, token).
fn disclosed(items: &Value, key: &str) -> BTreeMap<String, (String, Value, Value)> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item[key].as_str().unwrap().to_owned(),
                (
                    item["disclosure"].as_str().unwrap().to_owned(),
                    item["value"].clone(),
                    item["token"].clone(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn privacy_admin_without_privacy_export_exports_only_what_its_disclosure_rules_allow() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    let (stored, other_tokens) = two_customers(&vault, &clock).await;
    let mut dpo = vault.privacy(DPO_KEY).await;
    for format in [ExportFormat::Json, ExportFormat::Text] {
        let response = export(&mut dpo, "cust-1", format).await.unwrap();
        assert_nothing_of_the_other_customer(&response.document, &other_tokens);
        for value in WITHHELD_FROM_DPO {
            assert!(
                !common::contains(&response.document, value.as_bytes()),
                "{value} in the dpo's export:\n{}",
                String::from_utf8_lossy(&response.document)
            );
        }
    }
    let doc = json_export(
        &export(&mut dpo, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let token_of = |name: &str| json!(stored.fields[name].2);
    // "*" = "none", email = "plaintext", phone = "masked", card_number = "token".
    assert_eq!(
        disclosed(&doc["fields"], "name"),
        BTreeMap::from([
            (
                "email".to_owned(),
                (
                    "plaintext".to_owned(),
                    json!("ann.export@example.com"),
                    token_of("email")
                )
            ),
            (
                "phone".to_owned(),
                (
                    "masked".to_owned(),
                    json!("+*******0001"),
                    token_of("phone")
                )
            ),
            (
                "card".to_owned(),
                ("token".to_owned(), Value::Null, token_of("card"))
            ),
            (
                "ssn".to_owned(),
                ("denied".to_owned(), Value::Null, Value::Null)
            ),
            (
                "full_name".to_owned(),
                ("denied".to_owned(), Value::Null, Value::Null)
            ),
        ])
    );
    // Tokens follow the same rules: a denied one is listed without its token.
    let tokens = doc["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 8);
    let mut standalone: Vec<(String, String, Value, bool)> = tokens
        .iter()
        .filter(|token| token["field"].is_null())
        .map(|token| {
            (
                token["kind"].as_str().unwrap().to_owned(),
                token["disclosure"].as_str().unwrap().to_owned(),
                token["value"].clone(),
                token["token"].is_string(),
            )
        })
        .collect();
    standalone.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        standalone,
        [
            ("card_number".into(), "token".into(), Value::Null, true),
            ("generic".into(), "denied".into(), Value::Null, false),
            ("ssn".into(), "denied".into(), Value::Null, false),
        ]
    );
    for token in tokens.iter().filter(|token| token["field"].is_string()) {
        let name = token["field"].as_str().unwrap();
        let field = &disclosed(&doc["fields"], "name")[name];
        assert_eq!(
            (
                token["disclosure"].as_str().unwrap(),
                &token["value"],
                &token["token"]
            ),
            (field.0.as_str(), &field.1, &field.2),
            "{token}"
        );
    }
}

#[tokio::test]
async fn privacy_export_exports_every_value_in_plaintext_whatever_the_disclosure_rules() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    let (stored, other_tokens) = two_customers(&vault, &clock).await;
    // The exporter's rules say "*" = "none"; the scope is what grants plaintext.
    let mut exporter = vault.privacy(EXPORTER_KEY).await;
    let response = export(&mut exporter, "cust-1", ExportFormat::Json)
        .await
        .unwrap();
    assert_nothing_of_the_other_customer(&response.document, &other_tokens);
    let doc = json_export(&response);
    let fields: BTreeMap<String, (String, String, String)> = doc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["disclosure"], "plaintext");
            let text = |key: &str| f[key].as_str().unwrap().to_owned();
            (text("name"), (text("kind"), text("value"), text("token")))
        })
        .collect();
    assert_eq!(fields, stored.fields);
    let standalone: BTreeMap<String, (String, String, String)> = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|token| token["field"].is_null())
        .map(|token| {
            assert_eq!(token["disclosure"], "plaintext");
            let text = |key: &str| token[key].as_str().unwrap().to_owned();
            (text("token"), (text("kind"), text("format"), text("value")))
        })
        .collect();
    assert_eq!(standalone, stored.standalone);
    // The scope exports, and nothing else: no erasure, no data read.
    let status = expect_code(
        delete_customer(&mut exporter, "cust-1").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("privacy:admin"), "{status:?}");
}

#[tokio::test]
async fn an_export_is_recorded_as_an_access_of_every_value_it_disclosed() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    two_customers(&vault, &clock).await;
    let mut admin = vault.privacy(ADMIN_KEY).await;
    export(&mut admin, "cust-1", ExportFormat::Json)
        .await
        .unwrap();
    let mut dpo = vault.privacy(DPO_KEY).await;
    export(&mut dpo, "cust-1", ExportFormat::Text)
        .await
        .unwrap();

    let exports: Vec<(String, BTreeSet<String>)> = customer_events(&vault, "cust-1")
        .await
        .into_iter()
        .filter(|e| e.action == "ExportCustomer")
        .map(|e| (e.principal, e.fields.into_iter().collect()))
        .collect();
    let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        exports,
        [
            // Every field, and the kinds of the standalone values.
            (
                "admin".to_owned(),
                names(&[
                    "email",
                    "ssn",
                    "phone",
                    "full_name",
                    "card",
                    "card_number",
                    "generic"
                ])
            ),
            // Only what the dpo's rules let through, as a value or a token.
            (
                "dpo".to_owned(),
                names(&["email", "phone", "card", "card_number"])
            ),
        ]
    );
    // The customer's own export lists both.
    let doc = json_export(
        &export(&mut admin, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let listed = doc["access_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|access| access["action"] == "ExportCustomer")
        .count();
    assert_eq!(listed, 2);
}

#[tokio::test]
async fn exports_spend_the_principals_read_rate_limit() {
    const LIMITED_DPO_KEY: &str = "pv_test_limited_dpo_key";
    let policy = format!(
        r#"{}
[[principals]]
name = "limited_dpo"
api_key_sha256 = "{}"
scopes = ["privacy:admin"]
[principals.disclosure]
"*" = "masked"
[principals.rate_limits]
reads_per_second = 2.0
"#,
        common::test_policy(),
        pii_vault::policy::api_key_sha256_hex(LIMITED_DPO_KEY)
    );
    let vault = common::spawn_vault_with_policy(&policy).await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "rated@example.com"),
    )
    .await
    .unwrap();
    let mut limited = vault.privacy(LIMITED_DPO_KEY).await;
    for _ in 0..2 {
        export(&mut limited, "cust-1", ExportFormat::Json)
            .await
            .unwrap();
    }
    let status = expect_code(
        export(&mut limited, "cust-1", ExportFormat::Json).await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains("rate limit"), "{status:?}");
    assert!(!status.message().contains("rated@"), "{status:?}");
    let outcomes: Vec<String> = customer_events(&vault, "cust-1")
        .await
        .into_iter()
        .filter(|e| e.action == "ExportCustomer")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "RESOURCE_EXHAUSTED"]);
}
// ---------------------------------------------------------------------------
// Searches in the found customers' access history (security review #15, item 5).
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_search_that_finds_a_customer_is_in_their_access_history_without_the_value() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    for (customer, email) in [
        ("cust-1", "found.me@example.com"),
        ("cust-2", "not.me@example.com"),
    ] {
        put(
            &mut admin,
            PutFields::of(customer).field("email", FieldKind::Email, email),
        )
        .await
        .unwrap();
    }
    // checkout sees emails masked, and may search them.
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let searched = "found.me@EXAMPLE.com";
    assert_eq!(
        find_customers(&mut checkout, "email", searched, "billing")
            .await
            .unwrap(),
        ["cust-1"]
    );
    assert!(
        find_customers(&mut checkout, "email", "nobody@example.com", "billing")
            .await
            .unwrap()
            .is_empty()
    );

    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let doc = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let history = &doc["access_history"];
    let searches: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|access| access["action"] == "FindCustomers")
        .collect();
    assert_eq!(searches.len(), 1, "{history:#}");
    let mut search = searches[0].clone();
    search.as_object_mut().unwrap().remove("at");
    assert_eq!(
        search,
        json!({"principal": "checkout", "action": "FindCustomers", "fields": ["email"], "purpose": "billing", "outcome": "ok"})
    );
    let history_text = history.to_string().to_lowercase();
    for value in ["found.me", "nobody@"] {
        assert!(!history_text.contains(value), "{value} in {history_text}");
    }
    // Nobody else's history has it; the search that found nobody is audited
    // without a customer.
    let other = json_export(
        &export(&mut privacy, "cust-2", ExportFormat::Json)
            .await
            .unwrap(),
    );
    assert!(
        !other["access_history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|access| access["action"] == "FindCustomers"),
        "{other:#}"
    );
    let mut audit = vault.audit(ADMIN_KEY).await;
    let searches: Vec<String> = common::all_audit_events(&mut audit)
        .await
        .into_iter()
        .filter(|e| e.action == "FindCustomers")
        .map(|e| e.customer_id)
        .collect();
    assert_eq!(searches, ["cust-1", ""]);
}

// ---------------------------------------------------------------------------
// Exports complete at any size (security review #15, item 4).
// ---------------------------------------------------------------------------

/// A vault whose exports hold at most `page` access events and `max_bytes`.
async fn paging_vault(page: usize, max_bytes: Option<usize>) -> TestVault {
    let mut options = pii_vault::app::VaultOptions::default();
    options.limits.export_access_page = page;
    // These tests read refusals back one by one: none is counted into another.
    options.limits.refusals.recorded_per_window = 100;
    if let Some(max_bytes) = max_bytes {
        options.limits.max_export_bytes = max_bytes;
    }
    common::spawn_vault_with(&common::test_policy(), options).await
}

/// cust-1 with `reads` GetFields after its PutFields, each naming a field of
/// its own (so every event differs), `name_len` characters long; cust-2 read
/// in between. Returns cust-1's events, oldest first.
async fn long_history(vault: &TestVault, reads: usize, name_len: usize) -> Vec<pb::AuditEvent> {
    let mut admin = vault.admin().await;
    for customer in ["cust-1", "cust-2"] {
        put(
            &mut admin,
            PutFields::of(customer).field("email", FieldKind::Email, "paged@example.com"),
        )
        .await
        .unwrap();
    }
    for read in 0..reads {
        let name = format!("f{read:0>width$}", width = name_len - 1);
        get(&mut admin, "cust-1", &["email", &name], "billing")
            .await
            .unwrap();
        if read % 3 == 0 {
            get(&mut admin, "cust-2", &[], "billing").await.unwrap();
        }
    }
    let events = customer_events(vault, "cust-1").await;
    assert_eq!(events.len(), reads + 1);
    events
}

/// An access event as the export describes it, without its time.
fn access_of(event: &pb::AuditEvent) -> Value {
    json!({
        "principal": event.principal,
        "action": event.action,
        "fields": event.fields,
        "purpose": event.purpose,
        "outcome": event.outcome,
    })
}

/// Every page of cust-1's JSON export, following the page tokens.
async fn all_pages(privacy: &mut common::PrivacyClient, page_size: u32) -> Vec<(usize, Value)> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let response =
            common::export_page(privacy, "cust-1", ExportFormat::Json, &token, page_size)
                .await
                .unwrap();
        let doc = json_export(&response);
        let page = &doc["access_history_page"];
        assert_eq!(page["order"], "newest_first", "{page}");
        assert_eq!(page["first_page"], token.is_empty(), "{page}");
        let next = response.next_access_history_page_token.clone();
        // The document says what the response says.
        if next.is_empty() {
            assert_eq!(page["last_page"], true, "{page}");
            assert_eq!(page["next_page_token"], Value::Null, "{page}");
        } else {
            assert_eq!(page["last_page"], false, "{page}");
            assert_eq!(page["next_page_token"], next.as_str(), "{page}");
        }
        pages.push((response.document.len(), doc));
        if next.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "the pages never end");
        token = next;
    }
}

fn without_time(history: &Value) -> Vec<Value> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|access| {
            let mut access = access.clone();
            access.as_object_mut().unwrap().remove("at");
            access
        })
        .collect()
}

#[tokio::test]
async fn an_access_history_longer_than_a_page_is_exported_in_pages_newest_first() {
    let vault = paging_vault(5, None).await;
    assert_eq!(long_history(&vault, 11, 4).await.len(), 12);
    let mut privacy = vault.privacy(ADMIN_KEY).await;

    // The text report says when it could not count every read of the
    // period: the newest 5 events, all reads, are all it looked at.
    let response = export(&mut privacy, "cust-1", ExportFormat::Text)
        .await
        .unwrap();
    assert!(!response.next_access_history_page_token.is_empty());
    let text = String::from_utf8(response.document).unwrap();
    for expected in [
        "your information was read at least 5 times",
        "This report looked only at the 5 most recent records of how your information was used",
        "older ones were left out of it",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    // The server's page size, then a smaller one asked for, then a larger one
    // (capped at the server's). Each round's exports (and the text one) join
    // the history of the next, so every round pages through more events.
    for (page_size, sizes) in [
        (0, vec![5, 5, 3]),
        (4, vec![4, 4, 4, 4]),
        (50, vec![5, 5, 5, 5]),
    ] {
        let events = customer_events(&vault, "cust-1").await;
        let pages = all_pages(&mut privacy, page_size).await;
        let lengths: Vec<usize> = pages
            .iter()
            .map(|(_, doc)| doc["access_history"].as_array().unwrap().len())
            .collect();
        assert_eq!(lengths, sizes, "page size {page_size}");
        // Together, every event once, newest first: the exports made while
        // paging are newer than the first page and not in the later ones.
        let joined: Vec<Value> = pages
            .iter()
            .flat_map(|(_, doc)| without_time(&doc["access_history"]))
            .collect();
        let newest_first: Vec<Value> = events.iter().rev().map(access_of).collect();
        assert_eq!(joined, newest_first, "page size {page_size}");
    }
}

#[tokio::test]
async fn an_export_page_stays_within_the_size_limit_and_says_what_it_left_out() {
    const MAX_BYTES: usize = 8 * 1024;
    let vault = paging_vault(1000, Some(MAX_BYTES)).await;
    // Each event names a 60-character field: about 300 bytes in the document.
    let events = long_history(&vault, 40, 60).await;
    let newest_first: Vec<Value> = events.iter().rev().map(access_of).collect();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let pages = all_pages(&mut privacy, 0).await;
    assert!(pages.len() > 1, "{} page(s)", pages.len());
    for (bytes, _) in &pages {
        assert!(*bytes <= MAX_BYTES, "{bytes} bytes");
    }
    let joined: Vec<Value> = pages
        .iter()
        .flat_map(|(_, doc)| without_time(&doc["access_history"]))
        .collect();
    assert_eq!(joined, newest_first);
}

#[tokio::test]
async fn an_export_too_large_without_its_history_is_refused_not_cut() {
    let vault = paging_vault(1000, Some(600)).await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "big@example.com"),
    )
    .await
    .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let status = expect_code(
        export(&mut privacy, "cust-1", ExportFormat::Json).await,
        Code::FailedPrecondition,
    );
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(details.error_info().unwrap().reason, "EXPORT_TOO_LARGE");
    assert!(details.retry_info().is_none(), "{status:?}");
    assert!(status.message().contains("600 bytes"), "{status:?}");
    assert!(!status.message().contains("big@"), "{status:?}");
}

#[tokio::test]
async fn a_page_token_is_refused_for_another_customer_a_later_incarnation_or_when_forged() {
    let vault = paging_vault(2, None).await;
    long_history(&vault, 4, 4).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let first = export(&mut privacy, "cust-1", ExportFormat::Json)
        .await
        .unwrap();
    let token = first.next_access_history_page_token;
    assert!(!token.is_empty());

    let huge = format!("aht_{}", "0".repeat(64 * 1024));
    for forged in [
        "garbage",
        "0",
        &format!("{token}0"),
        &token[..token.len() - 1],
        &huge,
    ] {
        let status = expect_code(
            common::export_page(&mut privacy, "cust-1", ExportFormat::Json, forged, 0).await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().contains("access_history_page_token"),
            "{status:?}"
        );
        assert!(!status.message().contains(forged), "{status:?}");
    }
    expect_code(
        common::export_page(&mut privacy, "cust-2", ExportFormat::Json, &token, 0).await,
        Code::InvalidArgument,
    );

    // Erased and stored again: the same id is a new person, and the old
    // token does not reach into the history of the one before.
    delete_customer(&mut privacy, "cust-1").await.unwrap();
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "new.person@example.com"),
    )
    .await
    .unwrap();
    expect_code(
        common::export_page(&mut privacy, "cust-1", ExportFormat::Json, &token, 0).await,
        Code::InvalidArgument,
    );
    let pages = all_pages(&mut privacy, 0).await;
    let joined: Vec<Value> = pages
        .iter()
        .flat_map(|(_, doc)| without_time(&doc["access_history"]))
        .collect();
    // The refused export with the old token is the new customer's first access.
    assert_eq!(
        joined
            .iter()
            .map(|access| (
                access["action"].as_str().unwrap(),
                access["outcome"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("ExportCustomer", "INVALID_ARGUMENT"), ("PutFields", "ok")]
    );
}
