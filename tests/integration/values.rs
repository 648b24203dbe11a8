//! PutFields and GetFields through the real gRPC server: normalization of every
//! kind, rejection of bad values (with nothing written), masking by principal,
//! and request limits.

use crate::common;

use common::{expect_code, field, get, put, value_of, PutFields, VaultClient};
use pii_vault::pb::{self, Disclosure, FieldKind};
use tonic::Code;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn raw_field(name: &str, kind: i32, value: &str) -> pb::Field {
    pb::Field {
        name: name.into(),
        kind,
        value: value.into(),
    }
}

/// A date two days from now (UTC), so that the server's "today" cannot catch up
/// with it while the test runs.
fn future_date() -> String {
    let date = time::OffsetDateTime::now_utc().date() + time::Duration::days(2);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

async fn all_fields(client: &mut VaultClient, customer: &str) -> pb::GetFieldsResponse {
    get(client, customer, &[], "billing").await.unwrap()
}

/// Asserts that the customer was never written: GetFields says NOT_FOUND.
async fn assert_customer_absent(client: &mut VaultClient, customer: &str) {
    let status = expect_code(get(client, customer, &[], "billing").await, Code::NotFound);
    assert!(
        status.message().contains("customer"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn every_kind_round_trips_through_put_and_get_in_its_normalized_form() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let before = now_secs();
    let tokens = put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "John.Doe@Example.COM")
            .field("phone", FieldKind::Phone, "(555) 123-4567")
            .field("phone_uk", FieldKind::Phone, "+44 20 7946 0958")
            .field("ssn", FieldKind::Ssn, "123456789")
            .field("card", FieldKind::CardNumber, "4242 4242 4242 4242")
            .field("full_name", FieldKind::Name, "  Jane   Q.   O'Neil-Smith  ")
            .field("address", FieldKind::Address, "1 Main St\nSpringfield")
            .field("birth_date", FieldKind::DateOfBirth, "1985-07-04")
            .field("note", FieldKind::Generic, "  likes\ttabs  "),
    )
    .await
    .unwrap()
    .tokens;
    assert_eq!(tokens.len(), 9, "one token per field: {tokens:?}");

    let response = all_fields(&mut admin, "cust-1").await;
    assert_eq!(response.customer_id, "cust-1");
    assert_eq!(response.fields.len(), 9);
    let expected = [
        ("email", FieldKind::Email, "John.Doe@example.com"),
        ("phone", FieldKind::Phone, "+15551234567"),
        ("phone_uk", FieldKind::Phone, "+442079460958"),
        ("ssn", FieldKind::Ssn, "123-45-6789"),
        ("card", FieldKind::CardNumber, "4242424242424242"),
        ("full_name", FieldKind::Name, "Jane Q. O'Neil-Smith"),
        ("address", FieldKind::Address, "1 Main St\nSpringfield"),
        ("birth_date", FieldKind::DateOfBirth, "1985-07-04"),
        ("note", FieldKind::Generic, "likes\ttabs"),
    ];
    let after = now_secs();
    for (name, kind, value) in expected {
        let got = value_of(&response, name);
        assert_eq!(got.kind, kind as i32, "{name}");
        assert_eq!(got.value, value, "{name}");
        assert_eq!(got.disclosure, Disclosure::Plaintext as i32, "{name}");
        assert_eq!(got.error, None, "{name}");
        assert_eq!(&got.token, &tokens[name], "{name}: GetFields token");
        let updated = got.updated_at.expect("updated_at is set");
        assert!(
            (before - 1..=after + 1).contains(&updated.seconds),
            "{name}: updated_at {} not within [{before}, {after}]",
            updated.seconds
        );
    }
}

#[tokio::test]
async fn replacing_a_value_keeps_the_field_token_and_updates_value_and_time() {
    let (vault, clock) = common::spawn_vault_on_a_manual_clock(&common::test_policy()).await;
    let mut admin = vault.admin().await;
    let first = put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "old@example.com")
            .field("phone", FieldKind::Phone, "(555) 123-4567"),
    )
    .await
    .unwrap()
    .tokens;
    let before = all_fields(&mut admin, "cust-1").await;
    clock.advance(std::time::Duration::from_secs(1));

    let second = put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "new@Example.org"),
    )
    .await
    .unwrap()
    .tokens;
    assert_eq!(second["email"], first["email"], "replace keeps the token");

    let after = all_fields(&mut admin, "cust-1").await;
    let email = value_of(&after, "email");
    assert_eq!(email.value, "new@example.org");
    assert_eq!(email.token, first["email"]);
    let old_time = value_of(&before, "email").updated_at.unwrap();
    let new_time = email.updated_at.unwrap();
    assert!(
        (new_time.seconds, new_time.nanos) > (old_time.seconds, old_time.nanos),
        "updated_at moves forward on replace"
    );
    // The field not named in the second request is untouched.
    assert_eq!(value_of(&after, "phone"), value_of(&before, "phone"));
}

/// One bad PutFields request: what it sends, a part of the message that names
/// the problem, and strings the message must not contain (the value, in the
/// forms a client might have sent it).
struct BadPut {
    what: &'static str,
    fields: Vec<pb::Field>,
    names_problem: &'static str,
    secrets: Vec<String>,
}

fn bad_puts() -> Vec<BadPut> {
    let ssn = |what, value: &str, problem| BadPut {
        what,
        fields: vec![field("ssn", FieldKind::Ssn, value)],
        names_problem: problem,
        secrets: vec![value.to_owned(), value.replace('-', "")],
    };
    let future = future_date();
    vec![
        ssn("SSN area 000", "000-12-3456", "area number"),
        ssn("SSN area 666", "666-12-3456", "area number"),
        ssn("SSN area 900", "900-12-3456", "area number"),
        ssn("SSN area 999", "999123456", "area number"),
        ssn("SSN too short", "12345678", "9 digits"),
        ssn("SSN too long", "1234567890", "9 digits"),
        BadPut {
            what: "card failing Luhn",
            fields: vec![field("card", FieldKind::CardNumber, "4242 4242 4242 4241")],
            names_problem: "Luhn",
            secrets: vec!["4242 4242 4242 4241".into(), "4242424242424241".into()],
        },
        BadPut {
            what: "impossible date",
            fields: vec![field("birth_date", FieldKind::DateOfBirth, "2023-02-30")],
            names_problem: "real calendar date",
            secrets: vec!["2023-02-30".into()],
        },
        BadPut {
            what: "future birth date",
            fields: vec![field("birth_date", FieldKind::DateOfBirth, &future)],
            names_problem: "future",
            secrets: vec![future.clone()],
        },
        BadPut {
            what: "upper-case field name",
            fields: vec![field("Upper", FieldKind::Generic, "zorblax")],
            names_problem: "field name",
            secrets: vec!["zorblax".into()],
        },
        BadPut {
            what: "field name starting with a digit",
            fields: vec![field("1abc", FieldKind::Generic, "zorblax")],
            names_problem: "field name",
            secrets: vec!["zorblax".into()],
        },
        BadPut {
            what: "field name of 65 chars",
            fields: vec![field(&"a".repeat(65), FieldKind::Generic, "zorblax")],
            names_problem: "field name",
            secrets: vec!["zorblax".into()],
        },
        BadPut {
            what: "duplicate field name",
            fields: vec![
                field("email", FieldKind::Email, "first@example.com"),
                field("email", FieldKind::Email, "second@example.com"),
            ],
            names_problem: "twice",
            secrets: vec!["first@example.com".into(), "second@example.com".into()],
        },
        BadPut {
            what: "unknown field kind",
            fields: vec![raw_field("note", 99, "zorblax")],
            names_problem: "kind",
            secrets: vec!["zorblax".into()],
        },
        BadPut {
            what: "one good and one bad field",
            fields: vec![
                field("email", FieldKind::Email, "good@example.com"),
                field("ssn", FieldKind::Ssn, "666-12-3456"),
            ],
            names_problem: "area number",
            secrets: vec!["666-12-3456".into(), "good@example.com".into()],
        },
    ]
}

#[tokio::test]
async fn a_rejected_put_fields_names_the_problem_hides_the_value_and_writes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("existing")
            .field("email", FieldKind::Email, "kept@example.com")
            .field("ssn", FieldKind::Ssn, "123-45-6789")
            .field("card", FieldKind::CardNumber, "4111 1111 1111 1111")
            .field("birth_date", FieldKind::DateOfBirth, "1970-01-01")
            .field("note", FieldKind::Generic, "kept note"),
    )
    .await
    .unwrap();
    let snapshot = all_fields(&mut admin, "existing").await;

    for (index, bad) in bad_puts().into_iter().enumerate() {
        let fresh = format!("fresh-{index}");
        for customer in [fresh.as_str(), "existing"] {
            let status = expect_code(
                put(
                    &mut admin,
                    PutFields::of(customer).fields(bad.fields.clone()),
                )
                .await,
                Code::InvalidArgument,
            );
            let message = status.message();
            assert!(
                message.contains(bad.names_problem),
                "{}: message {message:?} does not name the problem ({:?})",
                bad.what,
                bad.names_problem
            );
            for secret in &bad.secrets {
                assert!(
                    !message.contains(secret.as_str()),
                    "{}: message {message:?} contains the value",
                    bad.what
                );
            }
        }
        assert_customer_absent(&mut admin, &fresh).await;
        assert_eq!(
            all_fields(&mut admin, "existing").await,
            snapshot,
            "{}: the existing customer changed",
            bad.what
        );
    }
}

#[tokio::test]
async fn an_empty_customer_id_is_rejected() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let status = expect_code(
        put(
            &mut admin,
            PutFields::of("").field("email", FieldKind::Email, "a@example.com"),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("customer_id"), "{status:?}");
    assert!(!status.message().contains("a@example.com"));
    let status = expect_code(
        get(&mut admin, "", &[], "billing").await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("customer_id"), "{status:?}");
}

#[tokio::test]
async fn checkout_sees_each_kind_masked_cards_in_plaintext_ssn_as_token_and_no_secret_note() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let tokens = put(
        &mut admin,
        PutFields::of("cust-1")
            .field("ssn", FieldKind::Ssn, "123-45-6789")
            .field("card", FieldKind::CardNumber, "4242 4242 4242 4242")
            .field("email", FieldKind::Email, "john@Example.com")
            .field("phone", FieldKind::Phone, "(555) 123-4567")
            .field("birth_date", FieldKind::DateOfBirth, "1985-07-04")
            .field("full_name", FieldKind::Name, "John Doe")
            .field("address", FieldKind::Address, "1 Main St")
            .field("note", FieldKind::Generic, "secret-value")
            .field("secret_note", FieldKind::Generic, "the vault password"),
    )
    .await
    .unwrap()
    .tokens;

    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    let response = get(&mut checkout, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(response.fields.len(), 9);

    let ssn = value_of(&response, "ssn");
    assert_eq!(ssn.disclosure, Disclosure::Token as i32);
    assert_eq!(ssn.value, "");
    assert_eq!(ssn.token, tokens["ssn"]);
    assert_eq!(ssn.error, None);

    let shown = [
        ("card", Disclosure::Plaintext, "4242424242424242"),
        ("email", Disclosure::Masked, "j***@example.com"),
        ("phone", Disclosure::Masked, "+*******4567"),
        ("birth_date", Disclosure::Masked, "1985-**-**"),
        ("full_name", Disclosure::Masked, "J*** D***"),
        ("address", Disclosure::Masked, "* **** **"),
        ("note", Disclosure::Masked, "**********ue"),
    ];
    for (name, disclosure, value) in shown {
        let got = value_of(&response, name);
        assert_eq!(got.disclosure, disclosure as i32, "{name}");
        assert_eq!(got.value, value, "{name}");
        assert_eq!(got.token, tokens[name], "{name}");
        assert_eq!(got.error, None, "{name}");
    }

    let secret = value_of(&response, "secret_note");
    assert_eq!(secret.disclosure, Disclosure::Denied as i32);
    assert_eq!(secret.value, "");
    assert_eq!(
        secret.token, "",
        "a denied field shows nothing, not even its token"
    );
    let error = secret
        .error
        .as_ref()
        .expect("denied field has an item error");
    assert_eq!(error.code, Code::PermissionDenied as i32);
    assert!(error.message.contains("secret_note"), "{error:?}");
    assert!(!error.message.contains("vault password"));
}

#[tokio::test]
async fn support_sees_email_in_plaintext_phone_masked_and_nothing_else() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "john@example.com")
            .field("phone", FieldKind::Phone, "+44 20 7946 0958")
            .field("ssn", FieldKind::Ssn, "123-45-6789")
            .field("card", FieldKind::CardNumber, "4242424242424242")
            .field("birth_date", FieldKind::DateOfBirth, "1985-07-04")
            .field("full_name", FieldKind::Name, "John Doe")
            .field("address", FieldKind::Address, "1 Main St")
            .field("note", FieldKind::Generic, "secret-value"),
    )
    .await
    .unwrap();

    let mut support = vault.vault(common::SUPPORT_KEY).await;
    let response = get(&mut support, "cust-1", &[], "support").await.unwrap();
    assert_eq!(response.fields.len(), 8);

    let email = value_of(&response, "email");
    assert_eq!(email.disclosure, Disclosure::Plaintext as i32);
    assert_eq!(email.value, "john@example.com");
    let phone = value_of(&response, "phone");
    assert_eq!(phone.disclosure, Disclosure::Masked as i32);
    assert_eq!(phone.value, "+********0958");

    for name in ["ssn", "card", "birth_date", "full_name", "address", "note"] {
        let got = value_of(&response, name);
        assert_eq!(got.disclosure, Disclosure::Denied as i32, "{name}");
        assert_eq!(got.value, "", "{name}");
        assert_eq!(got.token, "", "{name}");
        let error = got.error.as_ref().expect("denied field has an item error");
        assert_eq!(error.code, Code::PermissionDenied as i32, "{name}");
    }
}

#[tokio::test]
async fn a_requested_field_that_does_not_exist_is_denied_as_not_found_and_the_others_come_back() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "john@example.com")
            .field("phone", FieldKind::Phone, "(555) 123-4567")
            .field("note", FieldKind::Generic, "not asked for"),
    )
    .await
    .unwrap();

    let response = get(
        &mut admin,
        "cust-1",
        &["phone", "missing", "email"],
        "billing",
    )
    .await
    .unwrap();
    let names: Vec<&str> = response.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["phone", "missing", "email"],
        "request order, only those asked"
    );
    assert_eq!(response.fields[0].value, "+15551234567");
    assert_eq!(response.fields[2].value, "john@example.com");
    let missing = &response.fields[1];
    assert_eq!(missing.disclosure, Disclosure::Denied as i32);
    assert_eq!(missing.value, "");
    assert_eq!(missing.token, "");
    let error = missing
        .error
        .as_ref()
        .expect("missing field has an item error");
    assert_eq!(error.code, Code::NotFound as i32);
    assert!(error.message.contains("missing"), "{error:?}");
}

#[tokio::test]
async fn more_than_100_fields_in_one_put_is_invalid_argument_and_100_are_fine() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let fields = |count: usize| -> Vec<pb::Field> {
        (0..count)
            .map(|i| field(&format!("f{i}"), FieldKind::Generic, "value"))
            .collect()
    };

    let status = expect_code(
        put(&mut admin, PutFields::of("too-many").fields(fields(101))).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("100"), "{status:?}");
    assert_customer_absent(&mut admin, "too-many").await;

    let tokens = put(&mut admin, PutFields::of("just-enough").fields(fields(100)))
        .await
        .unwrap();
    assert_eq!(tokens.tokens.len(), 100);
    assert_eq!(
        all_fields(&mut admin, "just-enough").await.fields.len(),
        100
    );
}

#[tokio::test]
async fn a_value_longer_than_its_kind_allows_is_invalid_and_not_echoed() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let long_generic = "z".repeat(5000);
    let long_name = "Zorblax ".repeat(40);
    let long_ssn = "1".repeat(40);
    for (kind, value) in [
        (FieldKind::Generic, long_generic.as_str()),
        (FieldKind::Name, long_name.as_str()),
        (FieldKind::Ssn, long_ssn.as_str()),
    ] {
        let status = expect_code(
            put(
                &mut admin,
                PutFields::of("cust-1").field("value", kind, value),
            )
            .await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("longer than"), "{status:?}");
        assert!(
            !status.message().contains(&value[..20]),
            "message echoes the value: {status:?}"
        );
    }
    assert_customer_absent(&mut admin, "cust-1").await;
    // Exactly the limit is accepted.
    put(
        &mut admin,
        PutFields::of("cust-1").field("value", FieldKind::Generic, &"z".repeat(4096)),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn get_fields_of_an_unknown_customer_is_not_found() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    assert_customer_absent(&mut admin, "nobody").await;
}

#[tokio::test]
async fn a_field_named_twice_in_get_fields_comes_back_both_times() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "john@example.com"),
    )
    .await
    .unwrap();
    let response = get(&mut admin, "cust-1", &["email", "email"], "billing")
        .await
        .unwrap();
    assert_eq!(response.fields.len(), 2);
    for got in &response.fields {
        assert_eq!(got.error, None, "{got:?}");
        assert_eq!(got.value, "john@example.com");
    }
}

#[tokio::test]
async fn a_format_preserving_put_of_a_value_without_shape_names_the_field_and_writes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let status = expect_code(
        common::put(
            &mut admin,
            common::PutFields::of("cust-1")
                .field("email", FieldKind::Email, "john@example.com")
                .field("note", FieldKind::Generic, "#!#!")
                .format(pb::TokenFormat::FormatPreserving),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("\"note\""), "{status:?}");
    assert!(!status.message().contains("#!#!"), "{status:?}");
    assert_customer_absent(&mut admin, "cust-1").await;

    // The same value with a random token is fine.
    put(
        &mut admin,
        PutFields::of("cust-1").field("note", FieldKind::Generic, "#!#!"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unknown_token_format_is_invalid_and_writes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let status = expect_code(
        admin
            .put_fields(
                common::PutFields::of("cust-1")
                    .field("email", FieldKind::Email, "john@example.com")
                    .unknown_format(99)
                    .build(),
            )
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("token format"), "{status:?}");
    assert_customer_absent(&mut admin, "cust-1").await;
}

/// A kind is never chosen or changed silently (issue #19, item 11): no kind
/// is refused rather than stored as generic, and PutFields does not re-kind a
/// stored field (which would drop its search index and change who reads it in
/// plaintext). Both change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kind_or_a_change_of_kind_is_refused_and_changes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let untyped = put(
        &mut admin,
        PutFields::of("kinds").field("untyped", FieldKind::Unspecified, "plain text"),
    )
    .await;
    let status = common::expect_code(untyped, tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("field kind is required"),
        "{}",
        status.message()
    );
    assert!(common::get(&mut admin, "kinds", &[], "billing")
        .await
        .is_err());

    put(
        &mut admin,
        PutFields::of("kinds").field("id", FieldKind::Ssn, "123-45-6789"),
    )
    .await
    .unwrap();
    let rekinded = put(
        &mut admin,
        PutFields::of("kinds").field("id", FieldKind::Generic, "123-45-6789"),
    )
    .await;
    let status = common::expect_code(rekinded, tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("stored as kind ssn, not generic"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("123-45-6789"));
    let read = all_fields(&mut admin, "kinds").await;
    assert_eq!(value_of(&read, "id").kind, FieldKind::Ssn as i32);
    let found = common::find_customers(&mut admin, "id", "123-45-6789", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["kinds"], "the search index is kept");
}

/// Optimistic concurrency (issue #19, item 9): GetFields and PutFields give
/// the customer's revision, and a PutFields naming an expected revision
/// writes only if the customer is still there (0: must not exist yet);
/// otherwise ABORTED, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_fields_with_an_expected_revision_writes_only_on_that_revision() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let put_at = |revision: Option<u64>, value: &str| {
        common::PutFields::of("etag")
            .field("note", FieldKind::Generic, value)
            .format(pb::TokenFormat::Unspecified)
            .expected_revision(revision)
            .build()
    };
    let created = admin.put_fields(put_at(Some(0), "first")).await.unwrap();
    assert_eq!(created.into_inner().revision, 1);
    let again = admin.put_fields(put_at(Some(0), "second")).await;
    let status = expect_code(again, Code::Aborted);
    assert!(
        status.message().contains("revision 1, not the expected 0"),
        "{}",
        status.message()
    );

    let read = all_fields(&mut admin, "etag").await;
    assert_eq!(read.revision, 1);
    assert_eq!(
        value_of(&read, "note").value,
        "first",
        "the refused write changed nothing"
    );

    // Someone else writes in between: the stale revision is refused.
    let other = admin.put_fields(put_at(None, "other")).await.unwrap();
    assert_eq!(other.into_inner().revision, 2);
    let stale = admin.put_fields(put_at(Some(read.revision), "mine")).await;
    expect_code(stale, Code::Aborted);
    let fresh = all_fields(&mut admin, "etag").await;
    assert_eq!(value_of(&fresh, "note").value, "other");
    let written = admin
        .put_fields(put_at(Some(fresh.revision), "mine"))
        .await
        .unwrap();
    assert_eq!(written.into_inner().revision, 3);
    assert_eq!(
        value_of(&all_fields(&mut admin, "etag").await, "note").value,
        "mine"
    );
}
