//! Hostile input through the real server: empty and giant batches, duplicate
//! names, unknown enum numbers, invalid UTF-8 on the wire, control characters
//! and look-alike characters in ids and names, 64 KiB strings, forged tokens,
//! tokens of one customer used for another, and policy files with mistakes.
//!
//! Every refusal must carry a clear status (the right code, a short ASCII
//! message that never echoes the hostile input) and leave everything a client
//! can see of the store as it was; the server must keep serving.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    delete_customer, detokenize, field, get, put, set_consent, tokenize, PutFields, TestVault,
    Tokenize, ADMIN_KEY,
};
use pii_vault::pb::{self, FieldKind, TokenFormat};
use prost::Message;
use tonic::{Code, Status};

/// 64 KiB, far past every limit on a string in a request.
const BIG: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// What a client can see, before and after each hostile request.
// ---------------------------------------------------------------------------

/// Customers and tokens planted before the hostile requests.
struct Seeded {
    customers: Vec<&'static str>,
    tokens: Vec<String>,
}

async fn seed(vault: &TestVault) -> Seeded {
    let mut client = vault.admin().await;
    let alice = put(
        &mut client,
        PutFields::of("alice")
            .field("ssn", FieldKind::Ssn, "123-45-6789")
            .field("email", FieldKind::Email, "alice@example.com")
            .field("note", FieldKind::Generic, "likes tea"),
    )
    .await
    .unwrap();
    let bob = put(
        &mut client,
        PutFields::of("bob")
            .field("ssn", FieldKind::Ssn, "123-45-6789")
            .field("phone", FieldKind::Phone, "(555) 123-4567")
            .format(TokenFormat::Deterministic),
    )
    .await
    .unwrap();
    let standalone = tokenize(
        &mut client,
        Tokenize::of("alice").item(
            FieldKind::CardNumber,
            "4242 4242 4242 4242",
            TokenFormat::FormatPreserving,
        ),
    )
    .await
    .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    set_consent(&mut privacy, "alice", "marketing", true)
        .await
        .unwrap();
    let mut tokens: Vec<String> = alice.tokens.into_values().collect();
    tokens.extend(bob.tokens.into_values());
    tokens.extend(standalone);
    Seeded {
        customers: vec!["alice", "bob"],
        tokens,
    }
}

/// Everything a client can read back, except the audit log (refusals are
/// audited, so it grows by design).
#[derive(Debug, PartialEq)]
struct Visible {
    customers: u64,
    master_versions: Vec<u32>,
    fields: BTreeMap<String, Vec<(String, i32, String, String)>>,
    tokens: Vec<(String, String, i32, String)>,
    consents: BTreeMap<String, Vec<(String, bool, String, String)>>,
    policy_versions: Vec<String>,
}

async fn visible(vault: &TestVault, seeded: &Seeded) -> Visible {
    let mut client = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut fields = BTreeMap::new();
    let mut consents = BTreeMap::new();
    for customer in &seeded.customers {
        let response = get(&mut client, customer, &[], "billing").await.unwrap();
        fields.insert(
            customer.to_string(),
            response
                .fields
                .into_iter()
                .map(|f| (f.name, f.kind, f.value, f.token))
                .collect(),
        );
        let history = common::list_consents(&mut privacy, customer, true)
            .await
            .unwrap();
        consents.insert(
            customer.to_string(),
            history
                .into_iter()
                .map(|c| (c.purpose, c.granted, c.policy_version, c.source))
                .collect(),
        );
    }
    let tokens = detokenize(&mut client, &seeded.tokens, "billing")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.token, r.customer_id, r.kind, r.value))
        .collect();
    let status = vault
        .key_admin(ADMIN_KEY)
        .await
        .get_key_status(pb::GetKeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let policy_versions = common::list_policy_versions(&mut privacy)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    Visible {
        customers: status.customers,
        master_versions: status.master_versions,
        fields,
        tokens,
        consents,
        policy_versions,
    }
}

/// A vault with alice and bob, and what a client sees of it.
async fn seeded_vault() -> (TestVault, Seeded, Visible) {
    let vault = common::spawn_vault().await;
    let seeded = seed(&vault).await;
    let before = visible(&vault, &seeded).await;
    assert_eq!(before.customers, 2);
    (vault, seeded, before)
}

/// The store looks as it did, and the server still answers a good request.
async fn assert_unchanged(vault: &TestVault, seeded: &Seeded, before: &Visible) {
    let after = visible(vault, seeded).await;
    assert_eq!(&after, before, "a refused request changed the store");
}

/// A clear refusal: the expected code, and a short, printable ASCII message
/// that repeats none of the hostile strings.
#[track_caller]
fn assert_clear(status: &Status, code: Code, hostile: &[&str]) {
    let message = status.message();
    assert_eq!(status.code(), code, "{message}");
    assert!(!message.is_empty(), "{code:?} without a message");
    assert!(
        message.len() <= 300,
        "a {}-byte message: {}...",
        message.len(),
        prefix(message, 120)
    );
    assert!(
        message.chars().all(|c| c.is_ascii() && !c.is_control()),
        "message is not plain ASCII: {message:?}"
    );
    for text in hostile {
        if text.chars().count() >= 4 {
            assert!(
                !message.contains(text),
                "message echoes {text:?}: {message}"
            );
        }
    }
}

/// At most the first `max` bytes of `text`, cut at a char boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, hostile: &[&str]) {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => assert_clear(&status, code, hostile),
    }
}

/// One item of a batch refused on its own, with a clear error.
#[track_caller]
fn item_refused(result: &pb::DetokenizeResult, code: Code) {
    let error = result
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("item {:?} was not refused", result.token));
    assert_eq!(error.code, code as i32, "{}", error.message);
    assert!(result.value.is_empty() && result.customer_id.is_empty());
    assert!(
        error.message.len() <= 300
            && error
                .message
                .chars()
                .all(|c| c.is_ascii() && !c.is_control()),
        "{:?}",
        error.message
    );
    if result.token.chars().count() >= 4 {
        assert!(!error.message.contains(&result.token), "{}", error.message);
    }
}

fn put_request(customer: &str, fields: Vec<pb::Field>, purpose: &str) -> pb::PutFieldsRequest {
    PutFields::of(customer)
        .fields(fields)
        .purpose(purpose)
        .build()
}

fn raw_field(name: &str, kind: i32, value: &str) -> pb::Field {
    pb::Field {
        name: name.into(),
        kind,
        value: value.into(),
    }
}

// ---------------------------------------------------------------------------
// Batches.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batches_are_invalid_and_change_nothing() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    refused(
        client
            .put_fields(put_request("carol", vec![], "billing"))
            .await,
        Code::InvalidArgument,
        &[],
    );
    refused(
        tokenize(&mut client, Tokenize::of("carol")).await,
        Code::InvalidArgument,
        &[],
    );
    refused(
        detokenize(&mut client, &[], "billing").await,
        Code::InvalidArgument,
        &[],
    );
    refused(
        common::delete_fields(&mut client, "alice", &[]).await,
        Code::InvalidArgument,
        &[],
    );
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giant_batches_are_refused_naming_the_limit_and_change_nothing() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;

    let fields: Vec<pb::Field> = (0..101)
        .map(|i| field(&format!("f{i}"), FieldKind::Generic, "x"))
        .collect();
    let status = client
        .put_fields(put_request("carol", fields, "billing"))
        .await
        .unwrap_err();
    assert_clear(&status, Code::InvalidArgument, &[]);
    assert!(status.message().contains("100"), "{}", status.message());

    let items: Vec<(FieldKind, &str, TokenFormat)> = (0..1001)
        .map(|_| (FieldKind::Generic, "x", TokenFormat::Random))
        .collect();
    let status = tokenize(&mut client, Tokenize::of("carol").items(items))
        .await
        .unwrap_err();
    assert_clear(&status, Code::InvalidArgument, &[]);
    assert!(status.message().contains("1000"), "{}", status.message());

    let tokens: Vec<String> = (0..1001).map(|i| format!("tok_{i}")).collect();
    let status = detokenize(&mut client, &tokens, "billing")
        .await
        .unwrap_err();
    assert_clear(&status, Code::InvalidArgument, &[]);

    let names: Vec<String> = (0..101).map(|i| format!("f{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    refused(
        get(&mut client, "alice", &names, "billing").await,
        Code::InvalidArgument,
        &[],
    );
    refused(
        common::delete_fields(&mut client, "alice", &names).await,
        Code::InvalidArgument,
        &[],
    );

    // Past the 4 MiB message limit the gRPC layer refuses before decoding.
    let huge = "y".repeat(5 * 1024 * 1024);
    let status = client
        .put_fields(put_request(
            "carol",
            vec![field("note", FieldKind::Generic, &huge)],
            "billing",
        ))
        .await
        .unwrap_err();
    assert_clear(&status, Code::OutOfRange, &[]);
    assert!(
        status
            .message()
            .contains(&pii_vault::server::MAX_MESSAGE_BYTES.to_string()),
        "{}",
        status.message()
    );
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_named_twice_in_one_put_rejects_the_whole_request() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    for customer in ["alice", "carol"] {
        let fields = vec![
            field("fresh", FieldKind::Generic, "would be new"),
            field("email", FieldKind::Email, "first@example.com"),
            field("email", FieldKind::Email, "second@example.com"),
        ];
        let status = client
            .put_fields(put_request(customer, fields, "billing"))
            .await
            .unwrap_err();
        assert_clear(
            &status,
            Code::InvalidArgument,
            &["first@example.com", "second@example.com"],
        );
        assert!(status.message().contains("twice"), "{}", status.message());
    }
    // The same name with different kinds, and in Tokenize a repeated value,
    // are no loophole either.
    let fields = vec![
        field("id", FieldKind::Ssn, "123-45-6789"),
        field("id", FieldKind::Generic, "123-45-6789"),
    ];
    refused(
        client
            .put_fields(put_request("alice", fields, "billing"))
            .await,
        Code::InvalidArgument,
        &["123-45-6789"],
    );
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_enum_numbers_are_invalid_and_change_nothing() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    for kind in [9, 99, -1, i32::MAX, i32::MIN] {
        let status = client
            .put_fields(put_request(
                "alice",
                vec![raw_field("note", kind, "changed")],
                "billing",
            ))
            .await
            .unwrap_err();
        assert_clear(&status, Code::InvalidArgument, &["changed"]);
        assert!(status.message().contains("kind"), "{}", status.message());
        let status = client
            .tokenize(Tokenize::of("alice").raw_item(kind, "changed", 0).build())
            .await
            .unwrap_err();
        assert_clear(&status, Code::InvalidArgument, &["changed"]);
    }
    for format in [4, 42, -7] {
        let mut request = put_request(
            "carol",
            vec![field("note", FieldKind::Generic, "new")],
            "billing",
        );
        request.token_format = format;
        refused(client.put_fields(request).await, Code::InvalidArgument, &[]);
        refused(
            client
                .tokenize(Tokenize::of("alice").raw_item(1, "x", format).build())
                .await,
            Code::InvalidArgument,
            &[],
        );
    }
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    refused(
        privacy
            .export_customer(pb::ExportCustomerRequest {
                customer_id: "alice".into(),
                format: 3,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &[],
    );
    assert_unchanged(&vault, &seeded, &before).await;
}

async fn raw_call(vault: &TestVault, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    common::raw_grpc::call_raw(vault.channel().await, path, ADMIN_KEY, body).await
}

/// `encoded` with the first occurrence of `marker` replaced by `bytes` (same length).
fn corrupt(encoded: &[u8], marker: &[u8], bytes: &[u8]) -> Vec<u8> {
    assert_eq!(marker.len(), bytes.len());
    let at = encoded
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("marker in the encoding");
    let mut out = encoded.to_vec();
    out[at..at + bytes.len()].copy_from_slice(bytes);
    out
}

const PUT_FIELDS: &str = "/piivault.v1.VaultService/PutFields";
const DETOKENIZE: &str = "/piivault.v1.VaultService/Detokenize";
const SET_CONSENT: &str = "/piivault.v1.PrivacyService/SetConsent";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_malformed_protobuf_on_the_wire_are_decode_errors() {
    let (vault, seeded, before) = seeded_vault().await;
    let put_bytes = put_request(
        "carol-QQQ",
        vec![field("note", FieldKind::Generic, "hello ZZZ there")],
        "billing",
    )
    .encode_to_vec();
    let detokenize_bytes = pb::DetokenizeRequest {
        tokens: vec![seeded.tokens[0].clone(), "tok_QQQ".into()],
        purpose: "billing".into(),
    }
    .encode_to_vec();
    let consent_bytes = pb::SetConsentRequest {
        customer_id: "alice".into(),
        purpose: "marketing".into(),
        granted: false,
        policy_version: String::new(),
        source: "web-QQQ".into(),
    }
    .encode_to_vec();
    // A lone 0xFF, an overlong '/', a UTF-16 surrogate half, a truncated sequence.
    let bad_sequences: [&[u8]; 4] = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"];
    let mut cases: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for bad in bad_sequences {
        let marker = &b"QQQ"[..bad.len()];
        cases.push((PUT_FIELDS, corrupt(&put_bytes, marker, bad)));
        cases.push((PUT_FIELDS, corrupt(&put_bytes, &b"ZZZ"[..bad.len()], bad)));
        cases.push((DETOKENIZE, corrupt(&detokenize_bytes, marker, bad)));
        cases.push((SET_CONSENT, corrupt(&consent_bytes, marker, bad)));
    }
    // Not protobuf at all, cut short, a length past the end, a wrong wire type.
    cases.push((PUT_FIELDS, vec![0xff; 32]));
    cases.push((PUT_FIELDS, put_bytes[..put_bytes.len() - 3].to_vec()));
    cases.push((PUT_FIELDS, vec![0x0a, 0x7f, b'a', b'b']));
    cases.push((PUT_FIELDS, vec![0x08, 0x01]));
    cases.push((DETOKENIZE, vec![0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    for (path, body) in cases {
        let status = raw_call(&vault, path, body.clone()).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::Internal | Code::InvalidArgument),
            "{path} {body:x?}: {status:?}"
        );
        assert_clear(&status, status.code(), &[]);
        assert!(
            status.message().contains("decode"),
            "{path}: {}",
            status.message()
        );
    }
    // The same bytes uncorrupted go through the raw path: the test's codec is
    // not what made the others fail.
    let response = raw_call(&vault, DETOKENIZE, {
        pb::DetokenizeRequest {
            tokens: vec![seeded.tokens[0].clone()],
            purpose: "billing".into(),
        }
        .encode_to_vec()
    })
    .await
    .unwrap();
    let decoded = pb::DetokenizeResponse::decode(&response[..]).unwrap();
    assert!(decoded.results[0].error.is_none());
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_protobuf_fields_are_ignored_not_stored() {
    let (vault, seeded, before) = seeded_vault().await;
    // GetFields for alice with an unknown field 99 carrying junk bytes.
    let mut body = common::GetFields::of("alice")
        .names(&["note"])
        .build()
        .encode_to_vec();
    body.extend_from_slice(&[0x9a, 0x06, 0x04, 0xff, 0x00, 0xfe, 0x01]);
    let response = raw_call(&vault, "/piivault.v1.VaultService/GetFields", body)
        .await
        .unwrap();
    let response = pb::GetFieldsResponse::decode(&response[..]).unwrap();
    assert_eq!(response.fields[0].value, "likes tea");
    assert_unchanged(&vault, &seeded, &before).await;
}

// ---------------------------------------------------------------------------
// Ids and names: control characters, look-alikes, 64 KiB.
// ---------------------------------------------------------------------------

/// Ids that look like "alice" (or are near it) but are not valid ids.
const HOSTILE_IDS: [&str; 12] = [
    "alice\0",
    "alice\n",
    "alice\r\nx-admin: yes",
    "\u{202e}ecila",
    "\u{0430}lice",
    "\u{ff41}lice",
    "alice\u{200b}",
    "al\u{0456}ce",
    "ali ce",
    "alice@example.com",
    "alice\u{7f}",
    "alice/../bob",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_look_alikes_in_customer_ids_are_refused() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    for id in HOSTILE_IDS {
        // A look-alike of alice must never read alice's data (nor NOT_FOUND it).
        refused(
            get(&mut client, id, &[], "billing").await,
            Code::InvalidArgument,
            &[id],
        );
        refused(
            put(
                &mut client,
                PutFields::of(id).field("note", FieldKind::Generic, "x"),
            )
            .await,
            Code::InvalidArgument,
            &[id],
        );
        refused(
            tokenize(
                &mut client,
                Tokenize::of(id).item(FieldKind::Generic, "x", TokenFormat::Random),
            )
            .await,
            Code::InvalidArgument,
            &[id],
        );
        refused(
            common::delete_fields(&mut client, id, &["note"]).await,
            Code::InvalidArgument,
            &[id],
        );
        refused(
            delete_customer(&mut privacy, id).await,
            Code::InvalidArgument,
            &[id],
        );
        refused(
            set_consent(&mut privacy, id, "marketing", false).await,
            Code::InvalidArgument,
            &[id],
        );
        refused(
            common::export(&mut privacy, id, pb::ExportFormat::Json).await,
            Code::InvalidArgument,
            &[id],
        );
    }
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_look_alikes_in_field_names_and_purposes_are_refused() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    let hostile_names = [
        "\u{0455}sn",
        "ssn\u{200b}",
        "SSN",
        "ssn\n",
        "ssn\0",
        "e\u{0301}mail",
        "n\u{043e}te",
        "note ",
    ];
    for name in hostile_names {
        refused(
            client
                .put_fields(put_request(
                    "alice",
                    vec![field(name, FieldKind::Generic, "overwritten")],
                    "billing",
                ))
                .await,
            Code::InvalidArgument,
            &[name, "overwritten"],
        );
        refused(
            get(&mut client, "alice", &[name], "billing").await,
            Code::InvalidArgument,
            &[name],
        );
        refused(
            common::delete_fields(&mut client, "alice", &[name]).await,
            Code::InvalidArgument,
            &[name],
        );
    }
    let hostile_purposes = [
        "b\u{0456}lling",
        "billing\0",
        "billing\u{200b}",
        " billing",
        "BILLING",
        "billing\r\ngrpc-status: 0",
        "\u{202e}gnillib",
    ];
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    for purpose in hostile_purposes {
        refused(
            client
                .put_fields(put_request(
                    "alice",
                    vec![field("note", FieldKind::Generic, "overwritten")],
                    purpose,
                ))
                .await,
            Code::InvalidArgument,
            &[purpose],
        );
        refused(
            get(&mut client, "alice", &[], purpose).await,
            Code::InvalidArgument,
            &[purpose],
        );
        refused(
            detokenize(&mut client, &seeded.tokens, purpose).await,
            Code::InvalidArgument,
            &[purpose],
        );
        refused(
            set_consent(&mut privacy, "alice", purpose, false).await,
            Code::InvalidArgument,
            &[purpose],
        );
    }
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_ids_of_64_kib_are_refused_by_every_call_without_echo() {
    let (vault, seeded, before) = seeded_vault().await;
    let long_ids = [
        "a".repeat(BIG),
        "alice".repeat(BIG / 5),
        format!("alice{}", "\u{200b}".repeat(BIG / 3)),
    ];
    let mut client = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    for id in &long_ids {
        let id = id.as_str();
        let fragment = prefix(id, 64);
        let hostile = [fragment];
        let code = Code::InvalidArgument;
        refused(get(&mut client, id, &[], "billing").await, code, &hostile);
        refused(
            put(
                &mut client,
                PutFields::of(id).field("note", FieldKind::Generic, "x"),
            )
            .await,
            code,
            &hostile,
        );
        refused(
            tokenize(
                &mut client,
                Tokenize::of(id).item(FieldKind::Generic, "x", TokenFormat::Random),
            )
            .await,
            code,
            &hostile,
        );
        refused(
            common::delete_fields(&mut client, id, &["note"]).await,
            code,
            &hostile,
        );
        refused(
            set_consent(&mut privacy, id, "marketing", true).await,
            code,
            &hostile,
        );
        refused(
            common::list_consents(&mut privacy, id, true).await,
            code,
            &hostile,
        );
        refused(
            common::export(&mut privacy, id, pb::ExportFormat::Text).await,
            code,
            &hostile,
        );
        refused(delete_customer(&mut privacy, id).await, code, &hostile);
        refused(common::list_notices(&mut privacy, id).await, code, &hostile);
        refused(
            common::acknowledge_notice(&mut privacy, id, "v1").await,
            code,
            &hostile,
        );
        refused(
            keys.rotate_customer_key(pb::RotateCustomerKeyRequest {
                customer_id: id.into(),
            })
            .await,
            code,
            &hostile,
        );
        refused(
            keys.get_key_status(pb::GetKeyStatusRequest {
                customer_id: id.into(),
            })
            .await,
            code,
            &hostile,
        );
        // As an audit filter it matches nothing: a search, not a write.
        let mut audit = vault.audit(ADMIN_KEY).await;
        let events = common::audit_events(
            &mut audit,
            pb::ListAuditEventsRequest {
                customer_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(events.is_empty());
    }
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_string_of_64_kib_is_refused_without_echo() {
    let (vault, seeded, before) = seeded_vault().await;
    let big = "q".repeat(BIG);
    let hostile = [&big[..64]];
    let invalid = Code::InvalidArgument;
    let mut client = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;

    // Purposes, field names and values.
    refused(
        client
            .put_fields(put_request(
                "alice",
                vec![field("note", FieldKind::Generic, "x")],
                &big,
            ))
            .await,
        invalid,
        &hostile,
    );
    refused(
        get(&mut client, "alice", &[], &big).await,
        invalid,
        &hostile,
    );
    refused(
        detokenize(&mut client, &seeded.tokens, &big).await,
        invalid,
        &hostile,
    );
    refused(
        common::find_customers(&mut client, "email", "alice@example.com", &big).await,
        invalid,
        &hostile,
    );
    refused(
        common::find_customers(&mut client, &big, "alice@example.com", "billing").await,
        invalid,
        &hostile,
    );
    refused(
        common::find_customers(&mut client, "email", &big, "billing").await,
        invalid,
        &hostile,
    );
    refused(
        put(
            &mut client,
            PutFields::of("alice").field(&big, FieldKind::Generic, "x"),
        )
        .await,
        invalid,
        &hostile,
    );
    refused(
        get(&mut client, "alice", &[&big], "billing").await,
        invalid,
        &hostile,
    );
    refused(
        common::delete_fields(&mut client, "alice", &[&big]).await,
        invalid,
        &hostile,
    );
    refused(
        put(
            &mut client,
            PutFields::of("alice").field("note", FieldKind::Generic, &big),
        )
        .await,
        invalid,
        &hostile,
    );

    // A 64 KiB token is refused as an item; the good token beside it resolves.
    let results = detokenize(
        &mut client,
        &[big.clone(), seeded.tokens[0].clone()],
        "billing",
    )
    .await
    .unwrap();
    item_refused(&results[0], invalid);
    assert!(results[1].error.is_none());

    // Consent, erasure, notices and policy versions.
    refused(
        common::set_consent_from(&mut privacy, "alice", "marketing", false, &big, "web").await,
        invalid,
        &hostile,
    );
    refused(
        common::set_consent_from(&mut privacy, "alice", "marketing", false, "", &big).await,
        invalid,
        &hostile,
    );
    refused(
        set_consent(&mut privacy, "alice", &big, false).await,
        invalid,
        &hostile,
    );
    refused(
        privacy
            .delete_customer(pb::DeleteCustomerRequest {
                customer_id: "alice".into(),
                reason: big.clone(),
            })
            .await,
        invalid,
        &hostile,
    );
    refused(
        privacy
            .get_deletion_status(pb::GetDeletionStatusRequest {
                receipt_id: big.clone(),
            })
            .await,
        invalid,
        &hostile,
    );
    refused(
        common::publish_policy(&mut privacy, &big, "summary", &["marketing"], false).await,
        invalid,
        &hostile,
    );
    refused(
        common::publish_policy(&mut privacy, "2030-01", &big, &["marketing"], false).await,
        invalid,
        &hostile,
    );
    refused(
        common::publish_policy(&mut privacy, "2030-01", "summary", &[&big], false).await,
        invalid,
        &hostile,
    );
    refused(
        common::acknowledge_notice(&mut privacy, "alice", &big).await,
        Code::NotFound,
        &hostile,
    );

    // Refusals are audited, with only well-formed names: no raw input.
    let mut audit = vault.audit(ADMIN_KEY).await;
    for event in common::all_audit_events(&mut audit).await {
        let recorded = [&event.customer_id, &event.purpose, &event.request_id]
            .into_iter()
            .chain(&event.fields);
        for text in recorded {
            assert!(
                text.len() <= 128,
                "{} records {} bytes",
                event.action,
                text.len()
            );
        }
    }

    // A 64 KiB principal filter finds nothing.
    let events = common::audit_events(
        &mut audit,
        pb::ListAuditEventsRequest {
            principal: big.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(events.is_empty());

    // An oversized request id is replaced by one the vault makes.
    let mut request = tonic::Request::new(common::GetFields::of("alice").build());
    request
        .metadata_mut()
        .insert("x-request-id", "r".repeat(4096).parse().unwrap());
    let response = client.get_fields(request).await.unwrap();
    let request_id = response.metadata().get("x-request-id").unwrap();
    assert!(request_id.len() <= 64, "{request_id:?}");
    assert_unchanged(&vault, &seeded, &before).await;
}

// ---------------------------------------------------------------------------
// Tokens.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_resolve_to_nothing_and_good_tokens_beside_them_still_do() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    let real = &seeded.tokens[0];
    let mut forged = vec![
        format!("tok_{}", "a".repeat(26)),
        format!("tok_{}", "7".repeat(26)),
        format!("dtk_{}", "b".repeat(26)),
        "rcpt_aaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
        "900-12-3456".to_owned(),
        "6842904831994242".to_owned(),
        "+99955512345".to_owned(),
        "abc123@token.invalid".to_owned(),
        "0123-01-01".to_owned(),
        real.to_uppercase(),
        format!("{real} "),
        format!(" {real}"),
        real[..real.len() - 1].to_owned(),
        format!("{real}a"),
        real.replacen("tok_", "dtk_", 1),
        "alice".to_owned(),
        "ssn".to_owned(),
        "tok_\u{0430}aaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
    ];
    // The real token with one character changed, at every position.
    for (index, c) in real.char_indices().skip(4) {
        let replacement = if c == 'a' { 'b' } else { 'a' };
        let mut changed = real.clone();
        changed.replace_range(index..index + 1, &replacement.to_string());
        forged.push(changed);
    }
    let mut batch = forged.clone();
    batch.push(real.clone());
    let results = detokenize(&mut client, &batch, "billing").await.unwrap();
    for (token, result) in forged.iter().zip(&results) {
        assert_eq!(&result.token, token);
        item_refused(result, Code::NotFound);
    }
    let last = results.last().unwrap();
    assert!(last.error.is_none(), "{last:?}");
    assert_eq!(last.customer_id, "alice");

    // Tokens with control characters are refused as invalid, not looked up.
    for token in ["tok_a\0", "tok_a\n", "tok_\u{1b}[31m"] {
        let results = detokenize(&mut client, &[token.to_owned()], "billing")
            .await
            .unwrap();
        item_refused(&results[0], Code::InvalidArgument);
    }
    assert_unchanged(&vault, &seeded, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_resolve_across_customers_or_incarnations() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut client = vault.admin().await;
    // The same SSN, deterministic tokens, two customers: different tokens,
    // each resolving to its own customer.
    let alice = tokenize(
        &mut client,
        Tokenize::of("alice").item(FieldKind::Ssn, "123-45-6789", TokenFormat::Deterministic),
    )
    .await
    .unwrap();
    let bob = tokenize(
        &mut client,
        Tokenize::of("bob").item(FieldKind::Ssn, "123-45-6789", TokenFormat::Deterministic),
    )
    .await
    .unwrap();
    assert_ne!(alice, bob);
    let results = detokenize(&mut client, &[alice[0].clone(), bob[0].clone()], "billing")
        .await
        .unwrap();
    assert_eq!(results[0].customer_id, "alice");
    assert_eq!(results[1].customer_id, "bob");

    // A token is not a customer id nor a field name of another customer.
    refused(
        get(&mut client, &alice[0], &[], "billing").await,
        Code::NotFound,
        &[],
    );
    // Tokens are shaped like field names: asked for as one, nothing is there.
    let response = get(&mut client, "bob", &[alice[0].as_str()], "billing")
        .await
        .unwrap();
    let item = &response.fields[0];
    assert!(item.value.is_empty() && item.token.is_empty(), "{item:?}");
    assert_eq!(item.error.as_ref().unwrap().code, Code::NotFound as i32);
    // Deleting a field of bob's by alice's field name touches only bob.
    let bob_fields = get(&mut client, "bob", &[], "billing").await.unwrap();
    assert!(bob_fields.fields.iter().all(|f| f.name != "note"));
    assert_eq!(
        common::delete_fields(&mut client, "bob", &["note"])
            .await
            .unwrap(),
        0
    );

    // Bob erased and back with the same SSN: his old tokens stay dead and the
    // new deterministic token is another one; alice's still resolve.
    let bob_old_tokens: Vec<String> = {
        let mut tokens: Vec<String> = bob_fields.fields.into_iter().map(|f| f.token).collect();
        tokens.push(bob[0].clone());
        tokens
    };
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    delete_customer(&mut privacy, "bob").await.unwrap();
    let bob_again = tokenize(
        &mut client,
        Tokenize::of("bob").item(FieldKind::Ssn, "123-45-6789", TokenFormat::Deterministic),
    )
    .await
    .unwrap();
    assert!(!bob_old_tokens.contains(&bob_again[0]));
    let results = detokenize(&mut client, &bob_old_tokens, "billing")
        .await
        .unwrap();
    for result in &results {
        item_refused(result, Code::NotFound);
    }
    let results = detokenize(&mut client, &alice, "billing").await.unwrap();
    assert_eq!(results[0].value, "123-45-6789");
    assert_eq!(results[0].customer_id, "alice");
    // Alice's planted data is untouched by all of this.
    let after = visible(&vault, &seeded).await;
    assert_eq!(after.fields["alice"], before.fields["alice"]);
    assert_eq!(after.consents["alice"], before.consents["alice"]);
}

// ---------------------------------------------------------------------------
// Every refusal above left a server that still serves; one more sweep of
// mixed garbage to be sure it does after many in a row.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_serving_after_a_burst_of_garbage() {
    let (vault, seeded, before) = seeded_vault().await;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift: reproducible garbage without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let paths = [PUT_FIELDS, DETOKENIZE, SET_CONSENT];
    for round in 0..200 {
        let len = (next() % 200) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let path = paths[round % paths.len()];
        match raw_call(&vault, path, body).await {
            // Random bytes can decode as a valid (if odd) request; any answer
            // is fine as long as it is a clear one.
            Ok(_) => {}
            Err(status) => {
                assert!(
                    !matches!(status.code(), Code::Unknown | Code::Unavailable),
                    "{status:?}"
                );
                if status.code() == Code::Internal {
                    assert!(status.message().contains("decode"), "{status:?}");
                }
            }
        }
    }
    // Garbage may have created customers with odd but valid ids; alice and
    // bob must be exactly as they were.
    let after = visible(&vault, &seeded).await;
    assert_eq!(after.fields, before.fields);
    assert_eq!(after.tokens, before.tokens);
    assert_eq!(after.consents, before.consents);
}

// ---------------------------------------------------------------------------
// A policy file with mistakes: the server refuses to start and names the line.
// ---------------------------------------------------------------------------

/// Runs `pii-vault serve` on `policy`; returns (exit success, stderr).
fn serve_with_policy(policy: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), policy);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&paths.data_dir)
        .arg("--keyring-file")
        .arg(&paths.keyring_file)
        .arg("--root-key-file")
        .arg(&paths.root_key_file)
        .arg("--policy")
        .arg(&paths.policy_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the vault started (or hung) on a broken policy");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The 1-based number of the first line of `text` that contains `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("{marker:?} not in the policy"))
        + 1
}

#[test]
fn a_policy_file_with_mistakes_stops_the_server_naming_the_line() {
    let good = common::test_policy();
    let pasted_key = "pv_live_0123456789abcdef0123456789abcdef";
    // (what is wrong, the broken policy, a marker on the line to blame, words
    // the message must hold)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "an unknown scope",
            good.replacen("\"audit:read\"]", "\"audit:reed\"]", 1),
            "audit:reed",
            &["audit:reed", "admin"],
        ),
        (
            "a misspelt key",
            good.replacen(
                "scopes = [\"data:read\", \"tokens:detokenize\"]",
                "scope = [\"data:read\", \"tokens:detokenize\"]",
                1,
            ),
            "scope = [\"data:read\"",
            &["scope"],
        ),
        (
            "a key given twice",
            good.replacen(
                "basis = \"contract\"",
                "basis = \"contract\"\nbasis = \"consent\" # twice",
                1,
            ),
            "# twice",
            &["basis"],
        ),
        (
            "an unknown legal basis",
            good.replacen("basis = \"contract\"", "basis = \"contrakt\"", 1),
            "contrakt",
            &["contrakt", "billing"],
        ),
        (
            "a TOML syntax error",
            good.replacen(
                "description = \"Helping you when you contact us.\"",
                "description = \"Helping you when you contact us.",
                1,
            ),
            "description = \"Helping you when you contact us.",
            &[],
        ),
        (
            "an undeclared purpose",
            good.replacen("purposes = [\"support\"]", "purposes = [\"suport\"]", 1),
            "suport",
            &["suport", "support"],
        ),
        (
            "a disclosure that does not exist",
            good.replacen("email = \"plaintext\"", "email = \"plain\"", 1),
            "email = \"plain\"",
            &["plain", "email"],
        ),
        (
            "the API key itself where its hash belongs",
            good.replacen(
                &pii_vault::policy::api_key_sha256_hex(common::SUPPORT_KEY),
                pasted_key,
                1,
            ),
            pasted_key,
            &["api_key_sha256", "support"],
        ),
        (
            "control characters in a purpose name",
            good.replacen("name = \"support\"", "name = \"sup\\u0000port\"", 1),
            "sup\\u0000port",
            &["purpose name"],
        ),
    ];
    for (what, policy, marker, words) in cases {
        assert_ne!(policy, good, "{what}: the mistake was not planted");
        let (started, stderr) = serve_with_policy(&policy);
        assert!(!started, "{what}: the vault exited successfully");
        let expected = format!("policy line {}", line_of(&policy, marker));
        assert!(
            stderr.contains(&expected),
            "{what}: stderr does not say {expected:?}:\n{stderr}"
        );
        for word in words {
            assert!(stderr.contains(word), "{what}: no {word:?} in:\n{stderr}");
        }
        assert!(
            !stderr.contains(pasted_key),
            "{what}: stderr repeats a pasted API key"
        );
    }
    // The unbroken policy does start (and is stopped here).
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &good);
    let process = common::VaultProcess::start(&paths, &dir.path().join("vault.log"));
    process.kill9();
}

/// A call refused because the edge could not parse it (an unknown field kind,
/// token format or export format) is audited like any other refusal: it
/// names its action, customer and outcome, and changes nothing else.
#[tokio::test]
async fn refusals_of_unknown_enum_numbers_are_audited() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let refused = [
        admin
            .put_fields(pb::PutFieldsRequest {
                customer_id: "kind-99".into(),
                fields: vec![pb::Field {
                    name: "email".into(),
                    kind: 99,
                    value: "someone@example.com".into(),
                }],
                purpose: "billing".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        admin
            .put_fields(pb::PutFieldsRequest {
                customer_id: "format-99".into(),
                fields: vec![field("email", FieldKind::Email, "someone@example.com")],
                purpose: "billing".into(),
                token_format: 99,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        admin
            .tokenize(pb::TokenizeRequest {
                customer_id: "tokenize-99".into(),
                items: vec![pb::TokenizeItem {
                    kind: FieldKind::Email.into(),
                    format: 99,
                    value: "someone@example.com".into(),
                }],
                purpose: "billing".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        privacy
            .export_customer(pb::ExportCustomerRequest {
                customer_id: "export-99".into(),
                format: 99,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ];
    for result in refused {
        common::expect_code(result, Code::InvalidArgument);
    }

    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = common::all_audit_events(&mut audit).await;
    let recorded: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.customer_id.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    for expected in [
        ("PutFields", "kind-99", "INVALID_ARGUMENT"),
        ("PutFields", "format-99", "INVALID_ARGUMENT"),
        ("Tokenize", "tokenize-99", "INVALID_ARGUMENT"),
        ("ExportCustomer", "export-99", "INVALID_ARGUMENT"),
    ] {
        assert!(
            recorded.contains(&expected),
            "{expected:?} not audited: {recorded:?}"
        );
    }
    let put_event = events.iter().find(|e| e.customer_id == "kind-99").unwrap();
    assert_eq!(put_event.fields, ["email"]);
    assert_eq!(put_event.purpose, "billing");
    for customer in ["kind-99", "format-99", "tokenize-99"] {
        common::expect_code(
            get(&mut admin, customer, &[], "billing").await,
            Code::NotFound,
        );
    }
}
