//! ExportCustomer and GetDeletionStatus through the real gRPC server: the JSON
//! export holds exactly one customer's data, consents and access history; the
//! text export explains it in plain English; deletion receipts can be fetched
//! again and point at the audit event of the erasure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    audit_events, delete_customer, detokenize, expect_code, export, field, get, put,
    set_consent_from, tokenize, TestVault, ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY,
};
use pii_vault::pb::{self, ExportFormat, FieldKind, TokenFormat};
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
async fn two_customers(vault: &TestVault) -> (Stored, Vec<String>) {
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let mut support = vault.vault(SUPPORT_KEY).await;

    let tokens = put(
        &mut admin,
        "cust-1",
        FIELDS
            .iter()
            .map(|(name, kind, _, value)| field(name, *kind, value))
            .collect(),
    )
    .await
    .unwrap()
    .tokens;
    let standalone_tokens = tokenize(
        &mut admin,
        "cust-1",
        STANDALONE
            .iter()
            .map(|(kind, _, value, format, _)| (*kind, *value, *format))
            .collect(),
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
        "cust-2",
        vec![
            field("email", FieldKind::Email, OTHER_VALUES[1]),
            field("ssn", FieldKind::Ssn, OTHER_VALUES[2]),
            field("full_name", FieldKind::Name, OTHER_VALUES[3]),
        ],
    )
    .await
    .unwrap()
    .tokens
    .into_values()
    .chain(
        tokenize(
            &mut admin,
            "cust-2",
            vec![(FieldKind::Generic, OTHER_VALUES[4], TokenFormat::Random)],
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
fn assert_rfc3339(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no string"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
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
    let vault = common::spawn_vault().await;
    let (stored, other_tokens) = two_customers(&vault).await;
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
        ])
    );
    assert_eq!(doc["format"], "pii-vault.customer-export");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["customer_id"], "cust-1");
    assert_rfc3339(&doc["exported_at"]);
    assert_rfc3339(&doc["customer_since"]);
    assert!(doc["customer_since"].as_str() <= doc["exported_at"].as_str());

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

    // The access history is the customer's audit trail up to the export.
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
    let from_audit: Vec<Value> = events_before
        .iter()
        .map(|e| {
            json!({
                "principal": e.principal,
                "action": e.action,
                "fields": e.fields,
                "purpose": e.purpose,
                "outcome": e.outcome,
            })
        })
        .collect();
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
    let vault = common::spawn_vault().await;
    let (_, other_tokens) = two_customers(&vault).await;
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
        "cust-1",
        vec![field("email", FieldKind::Email, "quiet@example.com")],
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
        "cust-1",
        vec![field("email", FieldKind::Email, "audited@example.com")],
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
            "PutFields",
            "ExportCustomer",
            "ExportCustomer",
            "ExportCustomer"
        ]
    );
}

#[tokio::test]
async fn export_needs_privacy_admin_and_a_customer_the_vault_holds() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        "cust-1",
        vec![field("email", FieldKind::Email, "held@example.com")],
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
    let vault = common::spawn_vault().await;
    let (stored, _) = two_customers(&vault).await;
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

    let status = privacy
        .get_deletion_status(pb::GetDeletionStatusRequest {
            receipt_id: receipt.receipt_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
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
        "cust-1",
        vec![field("email", FieldKind::Email, "gone@example.com")],
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
            "cust-1",
            vec![field("email", FieldKind::Email, "later@example.com")],
        )
        .await
        .unwrap();
        let mut privacy = vault.privacy(ADMIN_KEY).await;
        delete_customer(&mut privacy, "cust-1").await.unwrap()
    };
    vault.restart().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let status = privacy
        .get_deletion_status(pb::GetDeletionStatusRequest {
            receipt_id: receipt.receipt_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
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
        "again",
        vec![field("email", FieldKind::Email, "old@example.com")],
    )
    .await
    .unwrap();
    get(&mut checkout, "again", &[], "billing").await.unwrap();
    delete_customer(&mut privacy, "again").await.unwrap();
    put(
        &mut admin,
        "again",
        vec![field("email", FieldKind::Email, "new@example.com")],
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
