//! Consent through the real gRPC server: purposes whose legal basis is consent
//! work for collection and use only while the customer's current consent is
//! granted; other bases need none. And SetConsent, ListConsents, ListPurposes.

use crate::common;

use common::{
    delete_customer, detokenize, expect_code, field, find_customers, get, list_consents, put,
    refused_collection, set_consent, set_consent_from, tokenize, value_of, PutFields, Tokenize,
    ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY,
};
use pii_vault::pb::{self, Disclosure, FieldKind, LegalBasis, TokenFormat};
use tonic::Code;

/// Asserts a refusal for want of consent to `purpose`, and whether the message
/// says the consent is missing (never given) or withdrawn.
#[track_caller]
fn assert_consent_refusal(status: &tonic::Status, purpose: &str, withdrawn: bool) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let message = status.message();
    assert!(message.contains("consent"), "{message}");
    assert!(message.contains(&format!("\"{purpose}\"")), "{message}");
    if withdrawn {
        assert!(message.contains("withdrawn"), "{message}");
        assert!(!message.contains("missing"), "{message}");
    } else {
        assert!(message.contains("missing"), "{message}");
        assert!(!message.contains("withdrawn"), "{message}");
    }
}

/// Asserts that a Detokenize item was refused for want of consent.
#[track_caller]
fn assert_item_refused_for_consent(result: &pb::DetokenizeResult, withdrawn: bool) {
    assert_eq!(result.disclosure, Disclosure::Denied as i32, "{result:?}");
    assert!(result.value.is_empty(), "{result:?}");
    let error = result.error.as_ref().expect("a refused item has an error");
    let status = tonic::Status::new(Code::from_i32(error.code), error.message.clone());
    assert_consent_refusal(&status, "marketing", withdrawn);
}

#[track_caller]
fn assert_item_resolved(result: &pb::DetokenizeResult, customer: &str, value: &str) {
    assert_eq!(result.error, None, "{result:?}");
    assert_eq!(result.disclosure, Disclosure::Plaintext as i32);
    assert_eq!(result.customer_id, customer);
    assert_eq!(result.value, value);
}

#[tokio::test]
async fn collection_for_marketing_is_refused_before_opt_in_allowed_after_and_refused_after_withdrawal(
) {
    let vault = common::spawn_vault().await;
    let mut writer = vault.vault(WRITER_KEY).await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let email = || vec![field("email", FieldKind::Email, "ann@example.com")];

    // Never asked: neither PutFields nor Tokenize stores anything.
    for status in refused_collection(&mut writer, "cust-1", "marketing").await {
        assert_consent_refusal(&status, "marketing", false);
    }
    expect_code(
        get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );

    // Opted in: both work.
    set_consent(&mut privacy, "cust-1", "marketing", true)
        .await
        .unwrap();
    let tokens = put(
        &mut writer,
        PutFields::of("cust-1").fields(email()).purpose("marketing"),
    )
    .await
    .unwrap()
    .tokens;
    let standalone = tokenize(
        &mut writer,
        Tokenize::of("cust-1").card().purpose("marketing"),
    )
    .await
    .unwrap();
    let stored = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(value_of(&stored, "email").value, "ann@example.com");
    assert_eq!(value_of(&stored, "email").token, tokens["email"]);
    let resolved = detokenize(&mut admin, &standalone, "billing")
        .await
        .unwrap();
    assert_item_resolved(&resolved[0], "cust-1", "4242424242424242");

    // Withdrawn: the very next call is refused, and changes nothing.
    set_consent(&mut privacy, "cust-1", "marketing", false)
        .await
        .unwrap();
    for status in refused_collection(&mut writer, "cust-1", "marketing").await {
        assert_consent_refusal(&status, "marketing", true);
    }
    let after = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    // Field by field: the withdrawal itself moved the customer's revision on.
    assert_eq!(
        after.fields, stored.fields,
        "a refused write changed the customer"
    );

    // Opted in again: collection works again.
    set_consent(&mut privacy, "cust-1", "marketing", true)
        .await
        .unwrap();
    put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "ann.new@example.com")
            .purpose("marketing"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_contract_purpose_never_needs_consent_even_after_marketing_was_withdrawn() {
    let vault = common::spawn_vault().await;
    let mut writer = vault.vault(WRITER_KEY).await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;

    // No consent at all: billing collects and uses.
    put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "bob@example.com")
            .purpose("billing"),
    )
    .await
    .unwrap();
    let tokens = tokenize(
        &mut writer,
        Tokenize::of("cust-1")
            .item(FieldKind::Generic, "order-77", TokenFormat::Random)
            .purpose("billing"),
    )
    .await
    .unwrap();
    let read = get(&mut admin, "cust-1", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(value_of(&read, "email").value, "bob@example.com");

    // A withdrawn marketing consent changes nothing for billing or support.
    set_consent(&mut privacy, "cust-1", "marketing", false)
        .await
        .unwrap();
    put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "bob2@example.com")
            .purpose("billing"),
    )
    .await
    .unwrap();
    let read = get(&mut admin, "cust-1", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(value_of(&read, "email").value, "bob2@example.com");
    let resolved = detokenize(&mut admin, &tokens, "billing").await.unwrap();
    assert_item_resolved(&resolved[0], "cust-1", "order-77");
    assert_eq!(
        find_customers(&mut admin, "email", "bob2@example.com", "billing")
            .await
            .unwrap(),
        ["cust-1"]
    );
    // support (legitimate interest) needs no consent either.
    let mut support = vault.vault(SUPPORT_KEY).await;
    let read = get(&mut support, "cust-1", &["email"], "support")
        .await
        .unwrap();
    assert_eq!(value_of(&read, "email").value, "bob2@example.com");
}

#[tokio::test]
async fn reading_fields_for_marketing_works_only_while_consent_is_granted() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "cat@example.com")
            .field("phone", FieldKind::Phone, "+15551234567"),
    )
    .await
    .unwrap();

    for names in [&["email"][..], &[]] {
        let status = expect_code(
            get(&mut admin, "cust-1", names, "marketing").await,
            Code::PermissionDenied,
        );
        assert_consent_refusal(&status, "marketing", false);
    }

    set_consent(&mut privacy, "cust-1", "marketing", true)
        .await
        .unwrap();
    let read = get(&mut admin, "cust-1", &[], "marketing").await.unwrap();
    assert_eq!(value_of(&read, "email").value, "cat@example.com");
    assert_eq!(value_of(&read, "phone").value, "+15551234567");

    set_consent(&mut privacy, "cust-1", "marketing", false)
        .await
        .unwrap();
    for names in [&["email"][..], &[]] {
        let status = expect_code(
            get(&mut admin, "cust-1", names, "marketing").await,
            Code::PermissionDenied,
        );
        assert_consent_refusal(&status, "marketing", true);
    }
    // Billing reads on regardless.
    let read = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(value_of(&read, "email").value, "cat@example.com");
}

#[tokio::test]
async fn detokenize_for_marketing_decides_per_item_by_each_customers_consent() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let tokens_of = |customer: &'static str, email: &'static str| {
        let mut admin = admin.clone();
        async move {
            let field_token = put(
                &mut admin,
                PutFields::of(customer).field("email", FieldKind::Email, email),
            )
            .await
            .unwrap()
            .tokens["email"]
                .clone();
            let standalone = tokenize(
                &mut admin,
                Tokenize::of(customer).item(FieldKind::Phone, "+15550001111", TokenFormat::Random),
            )
            .await
            .unwrap();
            (field_token, standalone[0].clone())
        }
    };
    let (yes_field, yes_value) = tokens_of("cust-yes", "yes@example.com").await;
    let (no_field, no_value) = tokens_of("cust-no", "no@example.com").await;
    set_consent(&mut privacy, "cust-yes", "marketing", true)
        .await
        .unwrap();
    let batch = vec![
        yes_field.clone(),
        no_field.clone(),
        yes_value.clone(),
        no_value.clone(),
    ];

    let results = detokenize(&mut admin, &batch, "marketing").await.unwrap();
    assert_eq!(results.len(), 4);
    for (result, token) in results.iter().zip(&batch) {
        assert_eq!(&result.token, token);
    }
    assert_item_resolved(&results[0], "cust-yes", "yes@example.com");
    assert_item_refused_for_consent(&results[1], false);
    assert_item_resolved(&results[2], "cust-yes", "+15550001111");
    assert_item_refused_for_consent(&results[3], false);

    // cust-yes withdraws, cust-no opts in: the next batch turns around.
    set_consent(&mut privacy, "cust-yes", "marketing", false)
        .await
        .unwrap();
    set_consent(&mut privacy, "cust-no", "marketing", true)
        .await
        .unwrap();
    let results = detokenize(&mut admin, &batch, "marketing").await.unwrap();
    assert_item_refused_for_consent(&results[0], true);
    assert_item_resolved(&results[1], "cust-no", "no@example.com");
    assert_item_refused_for_consent(&results[2], true);
    assert_item_resolved(&results[3], "cust-no", "+15550001111");

    // Billing resolves every item whatever the consents say.
    let results = detokenize(&mut admin, &batch, "billing").await.unwrap();
    assert_item_resolved(&results[0], "cust-yes", "yes@example.com");
    assert_item_resolved(&results[1], "cust-no", "no@example.com");

    // Each batch left one event per customer, with that customer's outcome.
    let mut audit = vault.audit(ADMIN_KEY).await;
    let outcomes: Vec<(String, String, String)> = common::all_audit_events(&mut audit)
        .await
        .into_iter()
        .filter(|e| e.action == "Detokenize")
        .map(|e| (e.customer_id, e.purpose, e.outcome))
        .collect();
    let event = |customer: &str, purpose: &str, outcome: &str| {
        (customer.to_owned(), purpose.to_owned(), outcome.to_owned())
    };
    assert_eq!(
        outcomes,
        [
            event("cust-no", "marketing", "PERMISSION_DENIED"),
            event("cust-yes", "marketing", "ok"),
            event("cust-no", "marketing", "ok"),
            event("cust-yes", "marketing", "PERMISSION_DENIED"),
            event("cust-no", "billing", "ok"),
            event("cust-yes", "billing", "ok"),
        ]
    );
}

#[tokio::test]
async fn find_customers_for_marketing_leaves_out_customers_without_a_granted_consent() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    for customer in ["cust-a", "cust-b", "cust-c"] {
        put(
            &mut admin,
            PutFields::of(customer).field("email", FieldKind::Email, "shared@example.com"),
        )
        .await
        .unwrap();
    }
    set_consent(&mut privacy, "cust-a", "marketing", true)
        .await
        .unwrap();
    set_consent(&mut privacy, "cust-c", "marketing", true)
        .await
        .unwrap();
    set_consent(&mut privacy, "cust-c", "marketing", false)
        .await
        .unwrap();

    let search = |purpose: &'static str| {
        let mut admin = admin.clone();
        async move {
            let mut found = find_customers(&mut admin, "email", "shared@example.com", purpose)
                .await
                .unwrap();
            found.sort();
            found
        }
    };
    assert_eq!(search("marketing").await, ["cust-a"]);
    assert_eq!(search("billing").await, ["cust-a", "cust-b", "cust-c"]);

    set_consent(&mut privacy, "cust-b", "marketing", true)
        .await
        .unwrap();
    assert_eq!(search("marketing").await, ["cust-a", "cust-b"]);
    set_consent(&mut privacy, "cust-a", "marketing", false)
        .await
        .unwrap();
    assert_eq!(search("marketing").await, ["cust-b"]);
}

#[tokio::test]
async fn list_consents_shows_the_current_choice_or_the_whole_history() {
    let vault = common::spawn_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    for version in ["2025-01", "2025-06"] {
        common::publish_policy(&mut privacy, version, "Our privacy policy.", &[], false)
            .await
            .unwrap();
    }
    let mut recorded = Vec::new();
    for (granted, version, source) in [
        (true, "2025-01", "web-signup"),
        (false, "2025-01", "settings-page"),
        (true, "2025-06", "email-link"),
    ] {
        let record = set_consent_from(
            &mut privacy,
            "cust-1",
            "marketing",
            granted,
            version,
            source,
        )
        .await
        .unwrap();
        assert_eq!(record.customer_id, "cust-1");
        assert_eq!(record.purpose, "marketing");
        assert_eq!(record.granted, granted);
        assert_eq!(record.policy_version, version);
        assert_eq!(record.source, source);
        assert!(record.recorded_at.is_some(), "{record:?}");
        recorded.push(record);
    }

    let history = list_consents(&mut privacy, "cust-1", true).await.unwrap();
    assert_eq!(history, recorded, "history is every event, oldest first");
    let times: Vec<_> = history
        .iter()
        .map(|r| {
            let at = r.recorded_at.unwrap();
            (at.seconds, at.nanos)
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let current = list_consents(&mut privacy, "cust-1", false).await.unwrap();
    assert_eq!(current, [recorded[2].clone()]);
}

#[tokio::test]
async fn the_current_consents_hold_one_record_per_consent_purpose() {
    let policy = format!(
        "{}\n[[purposes]]\nname = \"newsletter\"\ndescription = \"Sending you our newsletter.\"\nbasis = \"consent\"\n",
        common::test_policy()
    );
    let vault = common::spawn_vault_with_policy(&policy).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let first = set_consent(&mut privacy, "cust-1", "marketing", true)
        .await
        .unwrap();
    let news = set_consent(&mut privacy, "cust-1", "newsletter", true)
        .await
        .unwrap();
    let last = set_consent(&mut privacy, "cust-1", "marketing", false)
        .await
        .unwrap();

    let history = list_consents(&mut privacy, "cust-1", true).await.unwrap();
    assert_eq!(history, [first, news.clone(), last.clone()]);
    let mut current = list_consents(&mut privacy, "cust-1", false).await.unwrap();
    current.sort_by(|a, b| a.purpose.cmp(&b.purpose));
    assert_eq!(current, [last, news]);
}

#[tokio::test]
async fn set_consent_accepts_only_known_consent_purposes() {
    let vault = common::spawn_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;

    for purpose in ["billing", "support"] {
        let status = expect_code(
            set_consent(&mut privacy, "cust-1", purpose, true).await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains(purpose), "{status:?}");
        assert!(status.message().contains("not consent"), "{status:?}");
    }
    let status = expect_code(
        set_consent(&mut privacy, "cust-1", "profiling", true).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("unknown purpose"), "{status:?}");
    expect_code(
        set_consent(&mut privacy, "cust-1", "", true).await,
        Code::InvalidArgument,
    );
    expect_code(
        set_consent(&mut privacy, "", "marketing", true).await,
        Code::InvalidArgument,
    );

    // None of that created the customer.
    expect_code(
        list_consents(&mut privacy, "cust-1", true).await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn consent_calls_need_the_consent_write_scope() {
    let vault = common::spawn_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    set_consent(&mut privacy, "cust-1", "marketing", true)
        .await
        .unwrap();

    for key in [CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY] {
        let mut client = vault.privacy(key).await;
        let status = expect_code(
            set_consent(&mut client, "cust-1", "marketing", false).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("consent:write"), "{status:?}");
        let status = expect_code(
            list_consents(&mut client, "cust-1", true).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("consent:write"), "{status:?}");
    }

    // The refused withdrawals were not recorded.
    let history = list_consents(&mut privacy, "cust-1", true).await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].granted);
}

#[tokio::test]
async fn any_authenticated_principal_may_list_the_purposes_with_descriptions_and_bases() {
    let vault = common::spawn_vault().await;
    let expected = vec![
        pb::Purpose {
            name: "billing".into(),
            description: "Charging you for the orders you place.".into(),
            basis: LegalBasis::Contract as i32,
        },
        pb::Purpose {
            name: "marketing".into(),
            description: "Sending you offers picked for you.".into(),
            basis: LegalBasis::Consent as i32,
        },
        pb::Purpose {
            name: "support".into(),
            description: "Helping you when you contact us.".into(),
            basis: LegalBasis::LegitimateInterest as i32,
        },
    ];
    for key in [ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY] {
        let mut client = vault.privacy(key).await;
        let mut purposes = client
            .list_purposes(pb::ListPurposesRequest {})
            .await
            .unwrap()
            .into_inner()
            .purposes;
        purposes.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(purposes, expected, "as {key}");
    }
    let mut anonymous = vault.privacy("").await;
    expect_code(
        anonymous
            .list_purposes(pb::ListPurposesRequest {})
            .await
            .map(|r| r.into_inner()),
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn list_consents_of_an_unknown_customer_is_not_found_and_of_a_silent_one_is_empty() {
    let vault = common::spawn_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let status = expect_code(
        list_consents(&mut privacy, "cust-nobody", false).await,
        Code::NotFound,
    );
    assert!(status.message().contains("customer"), "{status:?}");

    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "dan@example.com"),
    )
    .await
    .unwrap();
    assert!(list_consents(&mut privacy, "cust-1", false)
        .await
        .unwrap()
        .is_empty());
    assert!(list_consents(&mut privacy, "cust-1", true)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn delete_customer_erases_the_consents_so_a_new_customer_with_the_same_id_must_opt_in_again()
{
    let vault = common::spawn_vault().await;
    let mut writer = vault.vault(WRITER_KEY).await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    set_consent(&mut privacy, "cust-1", "marketing", true)
        .await
        .unwrap();
    put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "eve@example.com")
            .purpose("marketing"),
    )
    .await
    .unwrap();

    delete_customer(&mut privacy, "cust-1").await.unwrap();

    for include_history in [false, true] {
        expect_code(
            list_consents(&mut privacy, "cust-1", include_history).await,
            Code::NotFound,
        );
    }
    let status = expect_code(
        put(
            &mut writer,
            PutFields::of("cust-1")
                .field("email", FieldKind::Email, "eve@example.com")
                .purpose("marketing"),
        )
        .await,
        Code::PermissionDenied,
    );
    assert_consent_refusal(&status, "marketing", false);
    expect_code(
        get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );
}
