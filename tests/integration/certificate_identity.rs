//! Which principal a client certificate is: its subject compared as a
//! structured name with the policy's `cert_subject`, and its one URI SAN with
//! a `spiffe_id`. Regression tests of the security review's "mTLS principal
//! spoofing" finding (SECURITY.md, "Fixed findings").

use crate::common;

use common::tls::TlsVault;
use common::{Bearer, ADMIN_KEY};
use pii_vault::pb::{self, vault_service_client::VaultServiceClient, FieldKind};
use rcgen::DnType;
use tonic::transport::Channel;
use tonic::Code;

/// Principals matched by subject or SPIFFE id; only "payments" reads plaintext.
fn identity_policy() -> String {
    format!(
        r#"{}
[[principals]]
name = "payments"
cert_subject = "CN=payments,O=Example"
scopes = ["data:read"]
purposes = ["billing"]
[principals.disclosure]
"*" = "plaintext"

[[principals]]
name = "acme-spaced"
cert_subject = 'CN=acme,O=Acme\, Inc.'
scopes = ["data:read"]
purposes = ["billing"]

[[principals]]
name = "acme-tight"
cert_subject = 'CN=acme,O=Acme\,Inc.'
scopes = ["data:read"]
purposes = ["billing"]

[[principals]]
name = "mesh"
spiffe_id = "spiffe://example.org/mesh"
scopes = ["data:read"]
purposes = ["billing"]
[principals.disclosure]
"*" = "masked"
"#,
        common::test_policy()
    )
}

/// A vault holding one customer's email, written by the admin's API key.
async fn vault_with_a_customer() -> TlsVault {
    let vault = TlsVault::spawn(&identity_policy()).await;
    let courier = vault.pki.issue("courier", &[], &[]);
    let mut admin = VaultServiceClient::with_interceptor(
        vault.channel(Some(courier)).await.unwrap(),
        Bearer::new(ADMIN_KEY),
    );
    common::put(
        &mut admin,
        common::PutFields::of("cert-1").field("email", FieldKind::Email, "owner@example.com"),
    )
    .await
    .unwrap();
    vault
}

async fn read_as(
    vault: &TlsVault,
    identity: (String, String),
) -> Result<pb::GetFieldsResponse, tonic::Status> {
    let channel: Channel = vault.channel(Some(identity)).await.unwrap();
    common::get_plain(&mut VaultServiceClient::new(channel), "cert-1").await
}

/// The principal a certificate is served as, read from the refusal of a
/// write that none of these principals may make.
async fn principal_named_in_refusal(vault: &TlsVault, identity: (String, String)) -> String {
    let channel = vault.channel(Some(identity)).await.unwrap();
    let refused = VaultServiceClient::new(channel)
        .put_fields(
            common::PutFields::of("cert-1")
                .field("x", FieldKind::Generic, "y")
                .format(pb::TokenFormat::Unspecified)
                .build(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    refused.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_common_name_that_spells_out_another_subject_does_not_pass_for_it() {
    let vault = vault_with_a_customer().await;
    let real = vault.pki.issue_with_subject(
        &[
            (DnType::CommonName, "payments"),
            (DnType::OrganizationName, "Example"),
        ],
        &[],
        &[],
    );
    let read = read_as(&vault, real).await.unwrap();
    assert_eq!(read.fields[0].value, "owner@example.com");

    // One CN attribute whose value is "payments, O=Example", and no O.
    let spoof =
        vault
            .pki
            .issue_with_subject(&[(DnType::CommonName, "payments, O=Example")], &[], &[]);
    let refused = read_as(&vault, spoof).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        !refused.message().contains("owner@example.com"),
        "{refused:?}"
    );

    // Nor does a certificate with the same attributes in another order.
    let reordered = vault.pki.issue_with_subject(
        &[
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "payments"),
        ],
        &[],
        &[],
    );
    let refused = read_as(&vault, reordered).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    vault.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_differing_only_by_a_space_after_a_comma_are_different_principals() {
    let vault = vault_with_a_customer().await;
    let spaced = vault.pki.issue_with_subject(
        &[
            (DnType::CommonName, "acme"),
            (DnType::OrganizationName, "Acme, Inc."),
        ],
        &[],
        &[],
    );
    let message = principal_named_in_refusal(&vault, spaced).await;
    assert!(message.contains("\"acme-spaced\""), "{message}");

    let tight = vault.pki.issue_with_subject(
        &[
            (DnType::CommonName, "acme"),
            (DnType::OrganizationName, "Acme,Inc."),
        ],
        &[],
        &[],
    );
    let message = principal_named_in_refusal(&vault, tight).await;
    assert!(message.contains("\"acme-tight\""), "{message}");
    vault.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_two_uri_sans_matches_no_spiffe_principal() {
    let vault = vault_with_a_customer().await;
    let svid = vault
        .pki
        .issue("mesh-workload", &[], &["spiffe://example.org/mesh"]);
    let read = read_as(&vault, svid).await.unwrap();
    assert_eq!(read.fields[0].value, "o***@example.com");

    for uris in [
        ["spiffe://example.org/mesh", "spiffe://example.org/other"],
        ["spiffe://example.org/other", "spiffe://example.org/mesh"],
        ["https://example.org/", "spiffe://example.org/mesh"],
    ] {
        let two_names = vault.pki.issue("mesh-workload", &[], &uris);
        let refused = read_as(&vault, two_names).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{uris:?}: {refused:?}"
        );
    }
    vault.shutdown().await;
}
