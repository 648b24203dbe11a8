//! The error model through the real server (docs/errors.md): every refusal a
//! client can act on carries `google.rpc.ErrorInfo` with a stable reason in
//! the domain "piivault.v1", a field at fault is a `BadRequest` violation,
//! retryable failures carry `RetryInfo`, and every answer, refusals of the
//! authentication, shedding and deadline layers included, has `x-request-id`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{field, Bearer, ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY};
use pii_vault::app::{self, VaultOptions};
use pii_vault::pb::{self, vault_service_client::VaultServiceClient, FieldKind, TokenFormat};
use pii_vault::policy::api_key_sha256_hex;
use pii_vault::server::{RunningServer, ServerLimits, ServerOptions};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const LIMITED_KEY: &str = "pv_test_limited_key";

/// Asserts `status` is `code` with ErrorInfo `reason` in our domain and the
/// vault's request id; returns its details for further checks.
#[track_caller]
fn assert_reason(status: &Status, code: Code, reason: &str) -> ErrorDetails {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "piivault.v1");
    let request_id = status
        .metadata()
        .get("x-request-id")
        .expect("an x-request-id on the refusal");
    assert!(
        request_id.to_str().unwrap().starts_with("req_"),
        "{request_id:?}"
    );
    details
}

#[track_caller]
fn assert_metadata(details: &ErrorDetails, key: &str, value: &str) {
    let info = details.error_info().unwrap();
    assert_eq!(
        info.metadata.get(key).map(String::as_str),
        Some(value),
        "{info:?}"
    );
}

#[track_caller]
fn assert_field_violation(details: &ErrorDetails, field: &str) {
    let bad_request = details.bad_request().expect("a BadRequest");
    let violation = &bad_request.field_violations[0];
    assert_eq!(violation.field, field, "{bad_request:?}");
    assert!(!violation.description.is_empty());
}

#[track_caller]
fn assert_retry_after(details: &ErrorDetails) -> Duration {
    let retry = details.retry_info().expect("a RetryInfo");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(60),
        "{delay:?}"
    );
    delay
}

#[track_caller]
fn assert_not_retryable(details: &ErrorDetails) {
    assert!(details.retry_info().is_none(), "{details:?}");
}

fn one_field() -> Vec<pb::Field> {
    vec![field("email", FieldKind::Email, "ann@example.com")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_say_what_was_wrong_with_the_credentials() {
    let vault = common::spawn_vault().await;

    let mut anonymous = vault.vault("").await;
    let status = common::get(&mut anonymous, "cust-1", &[], "billing")
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::Unauthenticated, "CREDENTIALS_MISSING");
    assert_not_retryable(&details);

    let mut stranger = vault.vault("pv_not_a_key").await;
    let status = common::get(&mut stranger, "cust-1", &[], "billing")
        .await
        .unwrap_err();
    assert_reason(&status, Code::Unauthenticated, "API_KEY_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_refusals_name_the_scope_purpose_or_consent_missing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap();

    let mut support = vault.vault(SUPPORT_KEY).await;
    let status = common::put(
        &mut support,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap_err();
    let details = assert_reason(&status, Code::PermissionDenied, "SCOPE_MISSING");
    assert_metadata(&details, "scope", "data:write");
    assert_not_retryable(&details);

    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let status = common::get(&mut checkout, "cust-1", &[], "support")
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::PermissionDenied, "PURPOSE_NOT_ALLOWED");
    assert_metadata(&details, "purpose", "support");

    let mut writer = vault.vault(WRITER_KEY).await;
    let status = common::put(
        &mut writer,
        common::PutFields::of("cust-2")
            .fields(one_field())
            .purpose("marketing"),
    )
    .await
    .unwrap_err();
    let details = assert_reason(&status, Code::PermissionDenied, "CONSENT_MISSING");
    assert_metadata(&details, "purpose", "marketing");

    let mut privacy = vault.privacy(ADMIN_KEY).await;
    common::set_consent(&mut privacy, "cust-2", "marketing", false)
        .await
        .unwrap();
    let status = common::put(
        &mut writer,
        common::PutFields::of("cust-2")
            .fields(one_field())
            .purpose("marketing"),
    )
    .await
    .unwrap_err();
    assert_reason(&status, Code::PermissionDenied, "CONSENT_WITHDRAWN");

    // The audit log still records the refusal by its status code.
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = common::audit_events(
        &mut audit,
        pb::ListAuditEventsRequest {
            principal: "writer".into(),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        events.iter().any(|e| e.outcome == "PERMISSION_DENIED"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_name_the_request_field_at_fault() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;

    let status = common::get(&mut admin, "", &[], "billing")
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_field_violation(&details, "customer_id");
    assert_not_retryable(&details);

    let status = common::get(&mut admin, "cust-1", &[], "no_such_purpose")
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::InvalidArgument, "PURPOSE_UNKNOWN");
    assert_field_violation(&details, "purpose");

    let status = common::tokenize(&mut admin, common::Tokenize::of("cust-1"))
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_field_violation(&details, "items");

    // Too many in one request: retrying the same request cannot help, so it
    // is INVALID_ARGUMENT, not RESOURCE_EXHAUSTED.
    let fields = (0..101)
        .map(|i| field(&format!("f{i}"), FieldKind::Generic, "v"))
        .collect();
    let status = common::put(&mut admin, common::PutFields::of("cust-1").fields(fields))
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::InvalidArgument, "REQUEST_TOO_LARGE");
    assert_field_violation(&details, "fields");
    assert_metadata(&details, "limit", "100");
    assert_not_retryable(&details);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_customer_and_a_stale_revision_have_reasons_of_their_own() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;

    let status = common::get(&mut admin, "nobody", &[], "billing")
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "CUSTOMER_NOT_FOUND");

    let written = common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap();
    let stale = admin
        .put_fields(
            common::PutFields::of("cust-1")
                .fields(one_field())
                .expected_revision(Some(written.revision + 7))
                .build(),
        )
        .await
        .unwrap_err();
    let details = assert_reason(&stale, Code::Aborted, "REVISION_MISMATCH");
    // Sending the same request again fails again: read first, then retry.
    assert_not_retryable(&details);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_consent_renewal_and_receipt_refusals_have_reasons_of_their_own() {
    let vault = common::spawn_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut writer = vault.vault(WRITER_KEY).await;

    common::publish_policy(&mut privacy, "2026-01", "Plainer words.", &[], false)
        .await
        .unwrap();
    let status =
        common::set_consent_from(&mut privacy, "cust-1", "marketing", true, "2099-01", "web")
            .await
            .unwrap_err();
    let details = assert_reason(&status, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_field_violation(&details, "policy_version");
    let status = privacy
        .acknowledge_notice(pb::AcknowledgeNoticeRequest {
            customer_id: "cust-1".into(),
            policy_version: "2099-01".into(),
        })
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "POLICY_VERSION_NOT_FOUND");
    common::set_consent_from(&mut privacy, "cust-1", "marketing", true, "2026-01", "web")
        .await
        .unwrap();
    common::publish_policy(
        &mut privacy,
        "2026-02",
        "Offers by text.",
        &["marketing"],
        true,
    )
    .await
    .unwrap();
    let status = common::put(
        &mut writer,
        common::PutFields::of("cust-1")
            .fields(one_field())
            .purpose("marketing"),
    )
    .await
    .unwrap_err();
    let details = assert_reason(&status, Code::PermissionDenied, "CONSENT_OUTDATED");
    assert_metadata(&details, "purpose", "marketing");
    assert_metadata(&details, "policy_version", "2026-02");

    let status = common::publish_policy(&mut privacy, "2026-02", "Again.", &[], false)
        .await
        .unwrap_err();
    assert_reason(&status, Code::AlreadyExists, "POLICY_VERSION_EXISTS");

    let status = common::deletion_status(&mut privacy, "rcpt_unknown")
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "RECEIPT_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_change_and_a_value_the_caller_may_not_see_are_refused_with_reasons() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap();
    let as_generic = vec![field("email", FieldKind::Generic, "ann@example.com")];
    let status = common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(as_generic),
    )
    .await
    .unwrap_err();
    let details = assert_reason(&status, Code::FailedPrecondition, "FIELD_KIND_MISMATCH");
    assert_not_retryable(&details);

    // checkout sees e-mail addresses masked: a deterministic token would
    // confirm its guesses.
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let guess = vec![(
        FieldKind::Email,
        "ann@example.com",
        TokenFormat::Deterministic,
    )];
    let status = common::tokenize(&mut checkout, common::Tokenize::of("cust-1").items(guess))
        .await
        .unwrap_err();
    assert_reason(&status, Code::PermissionDenied, "FIELD_NOT_VISIBLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_customer_caps_are_failed_precondition_not_retryable() {
    let mut options = VaultOptions::default();
    options.limits.max_fields_per_customer = 1;
    options.limits.max_tokens_per_customer = 1;
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    let mut admin = vault.admin().await;

    let two = vec![
        field("a", FieldKind::Generic, "v"),
        field("b", FieldKind::Generic, "v"),
    ];
    let status = common::put(&mut admin, common::PutFields::of("cust-1").fields(two))
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::FailedPrecondition, "CUSTOMER_FIELD_LIMIT");
    assert_not_retryable(&details);

    let random = (FieldKind::Generic, "v", TokenFormat::Random);
    let status = common::tokenize(
        &mut admin,
        common::Tokenize::of("cust-1").items(vec![random; 2]),
    )
    .await
    .unwrap_err();
    let details = assert_reason(&status, Code::FailedPrecondition, "CUSTOMER_TOKEN_LIMIT");
    assert_metadata(&details, "limit", "1");
    assert_not_retryable(&details);
}

fn rate_limited_policy() -> String {
    format!(
        r#"{}
[[principals]]
name = "limited"
api_key_sha256 = "{}"
scopes = ["data:read"]
purposes = ["billing"]
[principals.disclosure]
"*" = "plaintext"
[principals.rate_limits]
reads_per_second = 1.0
"#,
        common::test_policy(),
        api_key_sha256_hex(LIMITED_KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_is_told_when_to_retry() {
    let vault = common::spawn_vault_with_policy(&rate_limited_policy()).await;
    let mut admin = vault.admin().await;
    common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap();
    let mut limited = vault.vault(LIMITED_KEY).await;
    common::get(&mut limited, "cust-1", &[], "billing")
        .await
        .unwrap();
    let status = common::get(&mut limited, "cust-1", &[], "billing")
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::ResourceExhausted, "RATE_LIMITED");
    let delay = assert_retry_after(&details);
    // Waiting as told is enough: the bucket holds a read again.
    tokio::time::sleep(delay).await;
    common::get(&mut limited, "cust-1", &[], "billing")
        .await
        .unwrap();
}

/// A server with `limits` on the store the suite runs on.
async fn serve(
    limits: ServerLimits,
) -> (
    RunningServer,
    tempfile::TempDir,
    Option<common::TestDatabase>,
) {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let mut options = VaultOptions::default();
    let database = if common::on_postgres() {
        let database = common::TestDatabase::create().await.unwrap();
        options.storage = database.storage();
        Some(database)
    } else {
        None
    };
    let vault = app::open_vault(&paths, &options).await.unwrap();
    let server_options = ServerOptions {
        limits,
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), server_options)
        .await
        .unwrap();
    (server, dir, database)
}

async fn admin_of(server: &RunningServer) -> common::VaultClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    VaultServiceClient::with_interceptor(channel, Bearer::new(ADMIN_KEY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_call_is_overloaded_retryable_and_carries_the_request_id() {
    let limits = ServerLimits {
        max_concurrent_calls: 0,
        ..ServerLimits::default()
    };
    let (server, _dir, _database) = serve(limits).await;
    let mut admin = admin_of(&server).await;
    let status = common::put(
        &mut admin,
        common::PutFields::of("shed").fields(one_field()),
    )
    .await
    .unwrap_err();
    let details = assert_reason(&status, Code::ResourceExhausted, "OVERLOADED");
    assert_retry_after(&details);
    assert_metadata(&details, "limit", "0");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_says_so_and_carries_the_request_id() {
    let limits = ServerLimits {
        call_timeout: Duration::from_millis(1),
        ..ServerLimits::default()
    };
    let (server, _dir, _database) = serve(limits).await;
    let mut admin = admin_of(&server).await;
    let bulky = (0..100)
        .map(|i| field(&format!("f{i}"), FieldKind::Generic, &"v".repeat(4000)))
        .collect();
    let status = common::put(&mut admin, common::PutFields::of("late").fields(bulky))
        .await
        .unwrap_err();
    assert_reason(&status, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_carry_the_request_id_too() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let response = admin
        .put_fields(common::PutFields::of("cust-1").fields(one_field()).build())
        .await
        .unwrap();
    let request_id = response.metadata().get("x-request-id").unwrap();
    assert!(request_id.to_str().unwrap().starts_with("req_"));
}

/// docs/errors.md documents every reason the vault sends, and only those.
#[test]
fn the_documented_reasons_are_the_ones_the_vault_sends() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md")).unwrap();
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let sent: std::collections::BTreeSet<&str> = pii_vault::vault::Reason::ALL
        .iter()
        .map(|reason| reason.name())
        .collect();
    assert_eq!(documented, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_fields_token_as_a_standalone_one_is_refused_and_keeps_the_field() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let written = common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap();
    let field_token = written.tokens["email"].clone();
    let standalone = common::tokenize(
        &mut admin,
        common::Tokenize::of("cust-1").item(FieldKind::Generic, "v", TokenFormat::Random),
    )
    .await
    .unwrap();
    let status = admin
        .delete_tokens(pb::DeleteTokensRequest {
            customer_id: "cust-1".into(),
            // The standalone token first: the refusal deletes it neither.
            tokens: vec![standalone[0].clone(), field_token.clone()],
        })
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::FailedPrecondition, "TOKEN_BOUND_TO_FIELD");
    assert_not_retryable(&details);
    // Nothing changed: the field and both tokens still open.
    let read = common::get(&mut admin, "cust-1", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(
        common::value_of(&read, "email").value,
        "ann@example.com",
        "{read:?}"
    );
    let tokens = [field_token, standalone[0].clone()];
    let results = common::detokenize(&mut admin, &tokens, "billing")
        .await
        .unwrap();
    let values: Vec<&str> = results.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values, ["ann@example.com", "v"], "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_whose_format_preserving_tokens_are_all_taken_is_refused_and_writes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    // A one-digit value has nine format-preserving tokens (any other digit).
    let one_digit = (FieldKind::Generic, "7", TokenFormat::FormatPreserving);
    let mut issued = Vec::new();
    let status = loop {
        match common::tokenize(
            &mut admin,
            common::Tokenize::of("cust-1").items(vec![one_digit]),
        )
        .await
        {
            Ok(tokens) => issued.extend(tokens),
            Err(status) => break status,
        }
        assert!(issued.len() <= 9, "more tokens than digits: {issued:?}");
    };
    assert!(!issued.is_empty());
    let details = assert_reason(&status, Code::FailedPrecondition, "TOKEN_SPACE_EXHAUSTED");
    assert_not_retryable(&details);
    // A refused batch writes none of its items: its request id stays unused,
    // so a different request may take it.
    const REQUEST_ID: &str = "5f0c6d1e-0000-4000-8000-00000000000a";
    let random = (FieldKind::Generic, "x", TokenFormat::Random);
    let refused = common::tokenize(
        &mut admin,
        common::Tokenize::of("cust-1")
            .items(vec![
                random, one_digit, one_digit, one_digit, one_digit, one_digit,
            ])
            .purpose("billing")
            .request_id(REQUEST_ID),
    )
    .await;
    // Nine taken (or more than one of them in the batch): refused whatever
    // the count left.
    assert_reason(
        &refused.expect_err("a batch of six one-digit tokens fitted"),
        Code::FailedPrecondition,
        "TOKEN_SPACE_EXHAUSTED",
    );
    common::tokenize(
        &mut admin,
        common::Tokenize::of("cust-1")
            .item(FieldKind::Generic, "y", TokenFormat::Random)
            .purpose("billing")
            .request_id(REQUEST_ID),
    )
    .await
    .unwrap();
    // The tokens issued before still open.
    let results = common::detokenize(&mut admin, &issued, "billing")
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.value == "7"), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_no_principal_names_is_refused_and_changes_nothing() {
    let vault = common::tls::TlsVault::spawn(&common::test_policy()).await;
    // The admin's API key over mutual TLS (its certificate names no principal).
    let courier = vault.pki.issue("courier", &[], &[]);
    let mut admin = VaultServiceClient::with_interceptor(
        vault.channel(Some(courier)).await.unwrap(),
        Bearer::new(ADMIN_KEY),
    );
    common::put(
        &mut admin,
        common::PutFields::of("cust-1").fields(one_field()),
    )
    .await
    .unwrap();

    // A certificate the vault's client CA signed, but no principal's
    // cert_subject or spiffe_id, and no API key.
    let stranger = vault
        .pki
        .issue("stranger", &[], &["spiffe://example.org/stranger"]);
    let mut stranger = VaultServiceClient::new(vault.channel(Some(stranger)).await.unwrap());
    let status = stranger
        .put_fields(
            common::PutFields::of("cust-1")
                .field("email", FieldKind::Email, "eve@example.com")
                .build(),
        )
        .await
        .unwrap_err();
    let details = assert_reason(&status, Code::Unauthenticated, "CERTIFICATE_UNKNOWN");
    assert_not_retryable(&details);
    let read = common::get(&mut admin, "cust-1", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(read.revision, 1, "{read:?}");
    assert_eq!(common::value_of(&read, "email").value, "ann@example.com");
    vault.shutdown().await;
}
