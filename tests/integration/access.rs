//! Authentication and authorization through the real gRPC server: who may call
//! what, for which purpose; refused calls change nothing. And the standard
//! health service.

use crate::common;

use common::{delete_customer, expect_code, get, put, PutFields, TestVault, VaultClient};
use pii_vault::pb::vault_service_client::VaultServiceClient;
use pii_vault::pb::{self, FieldKind};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A vault holding one customer, and a snapshot of what the admin sees of them.
async fn vault_with_customer() -> (TestVault, pb::GetFieldsResponse) {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "john@example.com")
            .field("card", FieldKind::CardNumber, "4242424242424242"),
    )
    .await
    .unwrap();
    let snapshot = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    (vault, snapshot)
}

/// Asserts that the refused calls left cust-1 as it was and created nobody else.
async fn assert_unchanged(vault: &TestVault, snapshot: &pb::GetFieldsResponse) {
    let mut admin = vault.admin().await;
    let now = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(&now, snapshot, "a refused call changed the customer");
    expect_code(
        get(&mut admin, "cust-new", &[], "billing").await,
        Code::NotFound,
    );
}

/// Data-plane calls that would each write something if they got through.
async fn try_writes(client: &mut VaultClient) -> Vec<Result<(), tonic::Status>> {
    vec![
        put(
            client,
            PutFields::of("cust-1").field("email", FieldKind::Email, "evil@example.com"),
        )
        .await
        .map(drop),
        put(
            client,
            PutFields::of("cust-new").field("email", FieldKind::Email, "evil@example.com"),
        )
        .await
        .map(drop),
        common::tokenize(
            client,
            common::Tokenize::of("cust-new").item(
                FieldKind::Generic,
                "evil",
                pb::TokenFormat::Random,
            ),
        )
        .await
        .map(drop),
        common::delete_fields(client, "cust-1", &["email"])
            .await
            .map(drop),
    ]
}

async fn client_with_authorization(
    vault: &TestVault,
    header: &'static str,
) -> VaultServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor,
    >,
> {
    VaultServiceClient::with_interceptor(
        vault.channel().await,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
            Ok(request)
        },
    )
}

#[tokio::test]
async fn a_call_without_authorization_metadata_is_unauthenticated_and_changes_nothing() {
    let (vault, snapshot) = vault_with_customer().await;
    let mut anonymous = vault.vault("").await;
    let status = expect_code(
        get(&mut anonymous, "cust-1", &[], "billing").await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("authorization"), "{status:?}");
    for result in try_writes(&mut anonymous).await {
        expect_code(result, Code::Unauthenticated);
    }
    let mut privacy = vault.privacy("").await;
    expect_code(
        delete_customer(&mut privacy, "cust-1").await,
        Code::Unauthenticated,
    );
    assert_unchanged(&vault, &snapshot).await;
}

#[tokio::test]
async fn an_unknown_api_key_is_unauthenticated_and_changes_nothing() {
    let (vault, snapshot) = vault_with_customer().await;
    let mut stranger = vault.vault("pv_not_a_key_anyone_has").await;
    let status = expect_code(
        get(&mut stranger, "cust-1", &[], "billing").await,
        Code::Unauthenticated,
    );
    assert!(!status.message().contains("pv_not_a_key"), "{status:?}");
    for result in try_writes(&mut stranger).await {
        expect_code(result, Code::Unauthenticated);
    }
    let mut privacy = vault.privacy("pv_not_a_key_anyone_has").await;
    expect_code(
        delete_customer(&mut privacy, "cust-1").await,
        Code::Unauthenticated,
    );
    assert_unchanged(&vault, &snapshot).await;
}

#[tokio::test]
async fn a_malformed_authorization_header_is_unauthenticated() {
    let (vault, snapshot) = vault_with_customer().await;
    for header in [
        "Basic x",
        "Bearer",
        "pv_test_admin_key",
        "Token pv_test_admin_key",
    ] {
        let mut client = client_with_authorization(&vault, header).await;
        let status = expect_code(
            client
                .get_fields(common::GetFields::of("cust-1").build())
                .await,
            Code::Unauthenticated,
        );
        assert!(!status.message().is_empty(), "{header}");
        expect_code(
            client
                .put_fields(
                    common::PutFields::of("cust-new")
                        .field("email", FieldKind::Email, "evil@example.com")
                        .format(pb::TokenFormat::Unspecified)
                        .build(),
                )
                .await,
            Code::Unauthenticated,
        );
    }
    assert_unchanged(&vault, &snapshot).await;
}

#[tokio::test]
async fn a_principal_without_data_read_may_not_get_fields_and_is_told_the_scope() {
    let (vault, snapshot) = vault_with_customer().await;
    let mut writer = vault.vault(common::WRITER_KEY).await;
    let status = expect_code(
        get(&mut writer, "cust-1", &[], "billing").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("data:read"), "{status:?}");
    let status = expect_code(
        common::find_customers(&mut writer, "email", "john@example.com", "billing").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("data:read"), "{status:?}");

    // Support may read but not write.
    let mut support = vault.vault(common::SUPPORT_KEY).await;
    for result in try_writes(&mut support).await {
        let status = expect_code(result, Code::PermissionDenied);
        assert!(status.message().contains("data:write"), "{status:?}");
    }
    assert_unchanged(&vault, &snapshot).await;
}

#[tokio::test]
async fn a_purpose_the_principal_may_not_use_is_permission_denied_and_named() {
    let (vault, snapshot) = vault_with_customer().await;
    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    let status = expect_code(
        get(&mut checkout, "cust-1", &[], "marketing").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("marketing"), "{status:?}");

    let status = expect_code(
        checkout
            .put_fields(
                common::PutFields::of("cust-1")
                    .field("email", FieldKind::Email, "evil@example.com")
                    .purpose("marketing")
                    .format(pb::TokenFormat::Unspecified)
                    .build(),
            )
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("marketing"), "{status:?}");
    assert!(!status.message().contains("evil@example.com"));
    assert_unchanged(&vault, &snapshot).await;
}

#[tokio::test]
async fn an_unknown_or_empty_purpose_is_invalid() {
    let (vault, snapshot) = vault_with_customer().await;
    let mut admin = vault.admin().await;
    let status = expect_code(
        get(&mut admin, "cust-1", &[], "astrology").await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("astrology"), "{status:?}");
    let status = expect_code(
        get(&mut admin, "cust-1", &[], "").await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("purpose"), "{status:?}");

    for purpose in ["astrology", ""] {
        expect_code(
            admin
                .put_fields(
                    common::PutFields::of("cust-new")
                        .field("email", FieldKind::Email, "a@example.com")
                        .purpose(purpose)
                        .format(pb::TokenFormat::Unspecified)
                        .build(),
                )
                .await,
            Code::InvalidArgument,
        );
        expect_code(
            admin
                .detokenize(pb::DetokenizeRequest {
                    tokens: vec![snapshot.fields[0].token.clone()],
                    purpose: purpose.into(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
    assert_unchanged(&vault, &snapshot).await;
}

#[tokio::test]
async fn delete_customer_needs_privacy_admin() {
    let (vault, snapshot) = vault_with_customer().await;
    for key in [
        common::CHECKOUT_KEY,
        common::SUPPORT_KEY,
        common::WRITER_KEY,
    ] {
        let mut privacy = vault.privacy(key).await;
        let status = expect_code(
            delete_customer(&mut privacy, "cust-1").await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("privacy:admin"), "{status:?}");
    }
    assert_unchanged(&vault, &snapshot).await;
    // Tokens still resolve.
    let mut admin = vault.admin().await;
    let tokens: Vec<String> = snapshot.fields.iter().map(|f| f.token.clone()).collect();
    let results = common::detokenize(&mut admin, &tokens, "billing")
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
}

#[tokio::test]
async fn the_standard_health_service_answers_serving() {
    let vault = common::spawn_vault().await;
    let mut health = HealthClient::new(vault.channel().await);
    for service in ["", "piivault.v1.VaultService", "piivault.v1.PrivacyService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    // Health needs no credentials, and an unknown service is NOT_FOUND.
    expect_code(
        health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_named_like_a_kind_that_loosens_another_kind_is_warned_of_at_start() {
    // checkout: "*" = "masked", card_number = "plaintext". The rule is keyed
    // by a kind name, and field names share the namespace: a field named
    // card_number holding an SSN would be shown in plaintext.
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log = dir.path().join("vault.log");
    let process = common::VaultProcess::start(&paths, &log);
    let mut admin = process.vault(common::ADMIN_KEY).await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("card_number", FieldKind::Ssn, "219-09-9999"),
    )
    .await
    .unwrap();
    let mut checkout = process.vault(common::CHECKOUT_KEY).await;
    let shown = get(&mut checkout, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(shown.fields[0].value, "219-09-9999", "the hazard warned of");
    process.kill9();

    let logged = std::fs::read_to_string(&log).unwrap();
    let warning = logged
        .lines()
        .find(|line| line.contains("WARN") && line.contains("disclosure rule"))
        .unwrap_or_else(|| panic!("no warning in:\n{logged}"));
    for expected in ["checkout", "card_number", "ssn", "plaintext", "masked"] {
        assert!(warning.contains(expected), "{expected} missing: {warning}");
    }
}
