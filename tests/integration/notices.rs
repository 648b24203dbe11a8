//! Privacy-policy versions and notices through the real gRPC server (and the
//! real binary for the CLI): PublishPolicy, ListPolicyVersions, ListNotices and
//! AcknowledgeNotice, the re-consent a changed purpose asks for, and how
//! acknowledgements show up in the export, the audit log and erasure.

use crate::common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    acknowledge_notice, all_audit_events, delete_customer, detokenize, expect_code, export, get,
    list_consents, list_notices, list_policy_versions, publish_policy, put, refused_collection,
    set_consent_from, tokenize, value_of, PrivacyClient, PutFields, TestVault, Tokenize,
    VaultClient, ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY,
};
use pii_vault::pb::{self, Disclosure, ExportFormat, FieldKind, TokenFormat};
use pii_vault::policy::api_key_sha256_hex;
use pii_vault::vault::ManualClock;
use serde_json::{json, Value};
use tonic::Code;

const V1: &str = "2026-01";
const V2: &str = "2026-02";
const V3: &str = "2026-03";
const V4: &str = "2026-04";
const V5: &str = "2026-05";

const V1_SUMMARY: &str = "We now explain each purpose in plainer words.";
const V2_SUMMARY: &str =
    "We will now send you offers by text message as well as by email, so we ask you again.";
const V3_SUMMARY: &str = "Our support team may now call you back about an open question.";

/// A principal with privacy:admin and nothing else (it implies consent:write).
const OFFICER_KEY: &str = "pv_test_privacy_officer_key";
/// A principal with consent:write and nothing else.
const DESK_KEY: &str = "pv_test_consent_desk_key";

/// The test policy, plus a second consent purpose ("newsletter") and two
/// principals that hold only privacy:admin or only consent:write.
fn notices_policy() -> String {
    format!(
        r#"{base}
[[purposes]]
name = "newsletter"
description = "Sending you our monthly newsletter."
basis = "consent"

[[principals]]
name = "officer"
api_key_sha256 = "{officer}"
scopes = ["privacy:admin"]

[[principals]]
name = "desk"
api_key_sha256 = "{desk}"
scopes = ["consent:write"]
"#,
        base = common::test_policy(),
        officer = api_key_sha256_hex(OFFICER_KEY),
        desk = api_key_sha256_hex(DESK_KEY),
    )
}

async fn notices_vault() -> TestVault {
    common::spawn_vault_with_policy(&notices_policy()).await
}

/// `notices_vault`, on a clock the test moves past a publication.
async fn notices_vault_on_a_manual_clock() -> (TestVault, Arc<ManualClock>) {
    common::spawn_vault_on_a_manual_clock(&notices_policy()).await
}

async fn grant(privacy: &mut PrivacyClient, customer: &str, purpose: &str, version: &str) {
    set_consent_from(privacy, customer, purpose, true, version, "web")
        .await
        .unwrap();
}

/// Asserts a refusal because the consent to `purpose` predates `version`,
/// which changed the purpose and asked for consent again.
#[track_caller]
fn assert_renewal_refusal(status: &tonic::Status, purpose: &str, version: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let message = status.message();
    assert!(message.contains(&format!("\"{purpose}\"")), "{message}");
    assert!(message.contains("renewed"), "{message}");
    assert!(message.contains(&format!("\"{version}\"")), "{message}");
    assert!(!message.contains("missing"), "{message}");
    assert!(!message.contains("withdrawn"), "{message}");
}

/// Asserts that a Detokenize item was refused for want of renewed consent.
#[track_caller]
fn assert_item_needs_renewal(result: &pb::DetokenizeResult, purpose: &str, version: &str) {
    assert_eq!(result.disclosure, Disclosure::Denied as i32, "{result:?}");
    assert!(result.value.is_empty(), "{result:?}");
    let error = result.error.as_ref().expect("a refused item has an error");
    let status = tonic::Status::new(Code::from_i32(error.code), error.message.clone());
    assert_renewal_refusal(&status, purpose, version);
}

#[track_caller]
fn assert_item_resolved(result: &pb::DetokenizeResult, value: &str) {
    assert_eq!(result.error, None, "{result:?}");
    assert_eq!(result.value, value, "{result:?}");
}

/// Each notice as (version, summary, purposes needing consent).
fn notice_list(notices: &[pb::Notice]) -> Vec<(&str, &str, Vec<&str>)> {
    notices
        .iter()
        .map(|n| {
            (
                n.policy_version.as_str(),
                n.summary.as_str(),
                n.purposes_needing_consent
                    .iter()
                    .map(String::as_str)
                    .collect(),
            )
        })
        .collect()
}

fn version_names(versions: &[pb::PolicyVersion]) -> Vec<&str> {
    versions.iter().map(|v| v.version.as_str()).collect()
}

/// Stores an email for billing (contract), which makes `customer` a customer.
async fn billing_data(vault: &mut VaultClient, customer: &str) {
    put(
        vault,
        PutFields::of(customer)
            .field(
                "email",
                FieldKind::Email,
                &format!("{customer}@example.com"),
            )
            .purpose("billing"),
    )
    .await
    .unwrap();
}

fn json_export(response: &pb::ExportCustomerResponse) -> Value {
    assert_eq!(response.content_type, "application/json");
    serde_json::from_slice(&response.document).unwrap()
}

fn text_export(response: &pb::ExportCustomerResponse) -> String {
    assert!(response.content_type.starts_with("text/plain"));
    String::from_utf8(response.document.clone()).unwrap()
}

#[tokio::test]
async fn consent_given_before_a_reconsent_version_stops_counting_for_the_changed_purpose_until_renewed_under_it(
) {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut writer = vault.vault(WRITER_KEY).await;
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;

    publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
        .await
        .unwrap();
    grant(&mut privacy, "cust-1", "marketing", V1).await;
    grant(&mut privacy, "cust-1", "newsletter", V1).await;

    // Under v1 both consent purposes collect and use; billing needs no consent.
    let marketing_tokens = put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "ann@example.com")
            .purpose("marketing"),
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
    put(
        &mut admin,
        PutFields::of("cust-1")
            .field("phone", FieldKind::Phone, "+15551234567")
            .purpose("newsletter"),
    )
    .await
    .unwrap();
    put(
        &mut checkout,
        PutFields::of("cust-1")
            .field("name", FieldKind::Name, "Ann Example")
            .purpose("billing"),
    )
    .await
    .unwrap();
    let email_token = vec![marketing_tokens["email"].clone()];
    let before = get(&mut admin, "cust-1", &[], "marketing").await.unwrap();
    assert_eq!(value_of(&before, "email").value, "ann@example.com");
    let resolved = detokenize(&mut admin, &email_token, "marketing")
        .await
        .unwrap();
    assert_item_resolved(&resolved[0], "ann@example.com");

    // v2 changes marketing and asks for consent again.
    publish_policy(&mut privacy, V2, V2_SUMMARY, &["marketing"], true)
        .await
        .unwrap();

    // Use for marketing is refused: GetFields, and each Detokenize item.
    let status = expect_code(
        get(&mut admin, "cust-1", &["email"], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V2);
    let both = [email_token[0].clone(), standalone[0].clone()];
    let resolved = detokenize(&mut admin, &both, "marketing").await.unwrap();
    assert_eq!(resolved.len(), 2);
    for item in &resolved {
        assert_item_needs_renewal(item, "marketing", V2);
    }
    // Collection for marketing is refused too, and changes nothing.
    for status in refused_collection(&mut writer, "cust-1", "marketing").await {
        assert_renewal_refusal(&status, "marketing", V2);
    }
    let unchanged = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(value_of(&unchanged, "email").value, "ann@example.com");

    // The newsletter, a consent purpose v2 did not change, keeps working ...
    let newsletter = get(&mut admin, "cust-1", &["phone"], "newsletter")
        .await
        .unwrap();
    assert_eq!(value_of(&newsletter, "phone").value, "+15551234567");
    put(
        &mut admin,
        PutFields::of("cust-1")
            .field("phone", FieldKind::Phone, "+15557654321")
            .purpose("newsletter"),
    )
    .await
    .unwrap();
    let newsletter_tokens = tokenize(
        &mut admin,
        Tokenize::of("cust-1").card().purpose("newsletter"),
    )
    .await
    .unwrap();
    let resolved = detokenize(&mut admin, &newsletter_tokens, "newsletter")
        .await
        .unwrap();
    assert_item_resolved(&resolved[0], "4242424242424242");
    // ... and so does billing, a contract purpose.
    let billing = get(&mut checkout, "cust-1", &["name"], "billing")
        .await
        .unwrap();
    assert_eq!(value_of(&billing, "name").value, "A*** E***");
    put(
        &mut checkout,
        PutFields::of("cust-1")
            .field("name", FieldKind::Name, "Ann Other")
            .purpose("billing"),
    )
    .await
    .unwrap();
    tokenize(
        &mut checkout,
        Tokenize::of("cust-1").card().purpose("billing"),
    )
    .await
    .unwrap();

    // The old consent is still on record, as it was given.
    let consents = list_consents(&mut privacy, "cust-1", false).await.unwrap();
    let marketing = consents.iter().find(|c| c.purpose == "marketing").unwrap();
    assert!(marketing.granted);
    assert_eq!(marketing.policy_version, V1);

    // Granting again under v1, or under no version, does not renew it ...
    grant(&mut privacy, "cust-1", "marketing", V1).await;
    let status = expect_code(
        get(&mut admin, "cust-1", &["email"], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V2);
    grant(&mut privacy, "cust-1", "marketing", "").await;
    let status = expect_code(
        tokenize(
            &mut writer,
            Tokenize::of("cust-1").card().purpose("marketing"),
        )
        .await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V2);
    // ... and a version that was never published cannot be named.
    let status = expect_code(
        set_consent_from(&mut privacy, "cust-1", "marketing", true, "2099-01", "web").await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("2099-01"), "{status:?}");

    // Granted under v2: collection and use for marketing work again.
    grant(&mut privacy, "cust-1", "marketing", V2).await;
    let renewed = get(&mut admin, "cust-1", &["email"], "marketing")
        .await
        .unwrap();
    assert_eq!(value_of(&renewed, "email").value, "ann@example.com");
    let resolved = detokenize(&mut admin, &both, "marketing").await.unwrap();
    assert_item_resolved(&resolved[0], "ann@example.com");
    assert_item_resolved(&resolved[1], "4242424242424242");
    put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "ann.new@example.com")
            .purpose("marketing"),
    )
    .await
    .unwrap();
    tokenize(
        &mut writer,
        Tokenize::of("cust-1").card().purpose("marketing"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn only_the_latest_reconsent_version_of_a_purpose_counts_and_consent_under_a_later_version_renews_it(
) {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;

    publish_policy(&mut privacy, V1, V1_SUMMARY, &["marketing"], true)
        .await
        .unwrap();
    grant(&mut privacy, "cust-1", "marketing", V1).await;
    grant(&mut privacy, "cust-1", "newsletter", V1).await;
    // v2 changes marketing without asking again: nothing is refused.
    publish_policy(&mut privacy, V2, V2_SUMMARY, &["marketing"], false)
        .await
        .unwrap();
    get(&mut admin, "cust-1", &[], "marketing").await.unwrap();
    // v3 asks again for the newsletter, v4 for marketing; v5 changes nothing.
    publish_policy(&mut privacy, V3, V3_SUMMARY, &["newsletter"], true)
        .await
        .unwrap();
    publish_policy(
        &mut privacy,
        V4,
        "Marketing changed again.",
        &["marketing"],
        true,
    )
    .await
    .unwrap();
    publish_policy(
        &mut privacy,
        V5,
        "A new address for our office.",
        &[],
        false,
    )
    .await
    .unwrap();

    let status = expect_code(
        get(&mut admin, "cust-1", &[], "newsletter").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "newsletter", V3);
    let status = expect_code(
        get(&mut admin, "cust-1", &[], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V4);

    // Renewing marketing under v3 (before v4) is not enough; under v5 (after) is.
    grant(&mut privacy, "cust-1", "marketing", V3).await;
    let status = expect_code(
        get(&mut admin, "cust-1", &[], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V4);
    grant(&mut privacy, "cust-1", "marketing", V5).await;
    get(&mut admin, "cust-1", &[], "marketing").await.unwrap();
    // The newsletter, renewed under v4 (a later version than v3), works again.
    grant(&mut privacy, "cust-1", "newsletter", V4).await;
    get(&mut admin, "cust-1", &[], "newsletter").await.unwrap();

    // A withdrawal under a new version is still a withdrawal.
    set_consent_from(&mut privacy, "cust-1", "newsletter", false, V5, "web")
        .await
        .unwrap();
    let status = expect_code(
        get(&mut admin, "cust-1", &[], "newsletter").await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("withdrawn"), "{status:?}");
}

#[tokio::test]
async fn a_version_that_does_not_require_reconsent_gives_a_notice_but_refuses_nothing() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut writer = vault.vault(WRITER_KEY).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    grant(&mut privacy, "cust-1", "marketing", "").await;
    let tokens = put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "cid@example.com")
            .purpose("marketing"),
    )
    .await
    .unwrap()
    .tokens;

    publish_policy(&mut privacy, V1, V1_SUMMARY, &["marketing"], false)
        .await
        .unwrap();

    let notices = list_notices(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(notice_list(&notices), vec![(V1, V1_SUMMARY, vec![])]);
    get(&mut admin, "cust-1", &["email"], "marketing")
        .await
        .unwrap();
    let resolved = detokenize(&mut admin, &[tokens["email"].clone()], "marketing")
        .await
        .unwrap();
    assert_item_resolved(&resolved[0], "cid@example.com");
    put(
        &mut writer,
        PutFields::of("cust-1")
            .field("email", FieldKind::Email, "cid.new@example.com")
            .purpose("marketing"),
    )
    .await
    .unwrap();
    tokenize(
        &mut writer,
        Tokenize::of("cust-1")
            .item(FieldKind::Generic, "x", TokenFormat::Random)
            .purpose("marketing"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn notices_reach_every_customer_with_data_oldest_first_and_go_once_acknowledged() {
    let (vault, clock) = notices_vault_on_a_manual_clock().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;

    // ann agreed to marketing, bob never did, cat agreed and withdrew; all
    // three hold billing data. dan only ever agreed to the newsletter.
    for customer in ["ann", "bob", "cat"] {
        billing_data(&mut admin, customer).await;
    }
    grant(&mut privacy, "ann", "marketing", "").await;
    grant(&mut privacy, "cat", "marketing", "").await;
    set_consent_from(&mut privacy, "cat", "marketing", false, "", "web")
        .await
        .unwrap();
    grant(&mut privacy, "dan", "newsletter", "").await;
    for customer in ["ann", "bob", "cat", "dan"] {
        assert!(list_notices(&mut privacy, customer)
            .await
            .unwrap()
            .is_empty());
    }

    publish_policy(&mut privacy, V1, V1_SUMMARY, &["marketing"], false)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    // eve joins after v1: it is no news to her.
    billing_data(&mut admin, "eve").await;
    grant(&mut privacy, "eve", "marketing", V1).await;
    // v2 asks again for marketing (and changes support, which is no consent).
    publish_policy(
        &mut privacy,
        V2,
        V2_SUMMARY,
        &["marketing", "support"],
        true,
    )
    .await
    .unwrap();

    let versions = list_policy_versions(&mut privacy).await.unwrap();
    let ann = list_notices(&mut privacy, "ann").await.unwrap();
    assert_eq!(
        notice_list(&ann),
        vec![
            (V1, V1_SUMMARY, vec![]),
            (V2, V2_SUMMARY, vec!["marketing"])
        ]
    );
    for (notice, version) in ann.iter().zip(&versions) {
        assert_eq!(notice.published_at, version.published_at);
    }
    for customer in ["bob", "cat", "dan"] {
        let notices = list_notices(&mut privacy, customer).await.unwrap();
        assert_eq!(
            notice_list(&notices),
            vec![(V1, V1_SUMMARY, vec![]), (V2, V2_SUMMARY, vec![])],
            "{customer}"
        );
    }
    let eve = list_notices(&mut privacy, "eve").await.unwrap();
    assert_eq!(notice_list(&eve), vec![(V2, V2_SUMMARY, vec!["marketing"])]);

    // Acknowledging v2 clears v1 as well; acknowledging v1 leaves v2.
    acknowledge_notice(&mut privacy, "ann", V2).await.unwrap();
    assert!(list_notices(&mut privacy, "ann").await.unwrap().is_empty());
    acknowledge_notice(&mut privacy, "bob", V1).await.unwrap();
    let bob = list_notices(&mut privacy, "bob").await.unwrap();
    assert_eq!(notice_list(&bob), vec![(V2, V2_SUMMARY, vec![])]);
    // Acknowledging an earlier version afterwards brings nothing back.
    acknowledge_notice(&mut privacy, "ann", V1).await.unwrap();
    assert!(list_notices(&mut privacy, "ann").await.unwrap().is_empty());
    // Acknowledging is not renewing: marketing stays refused for ann.
    let status = expect_code(
        get(&mut admin, "ann", &[], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V2);

    // v3 brings notices back, to ann too.
    publish_policy(&mut privacy, V3, V3_SUMMARY, &["support"], false)
        .await
        .unwrap();
    let ann = list_notices(&mut privacy, "ann").await.unwrap();
    assert_eq!(notice_list(&ann), vec![(V3, V3_SUMMARY, vec![])]);
    let bob = list_notices(&mut privacy, "bob").await.unwrap();
    assert_eq!(
        notice_list(&bob),
        vec![(V2, V2_SUMMARY, vec![]), (V3, V3_SUMMARY, vec![])]
    );
    // Once eve renews marketing under v2, her v2 notice no longer asks for it.
    grant(&mut privacy, "eve", "marketing", V2).await;
    let eve = list_notices(&mut privacy, "eve").await.unwrap();
    assert_eq!(
        notice_list(&eve),
        vec![(V2, V2_SUMMARY, vec![]), (V3, V3_SUMMARY, vec![])]
    );

    // Erased customers have no notices, and cannot acknowledge any.
    let mut erasure = vault.privacy(ADMIN_KEY).await;
    delete_customer(&mut erasure, "bob").await.unwrap();
    expect_code(list_notices(&mut privacy, "bob").await, Code::NotFound);
    expect_code(
        acknowledge_notice(&mut privacy, "bob", V3).await,
        Code::NotFound,
    );
    // The others are untouched.
    let cat = list_notices(&mut privacy, "cat").await.unwrap();
    assert_eq!(cat.len(), 3);
}

#[tokio::test]
async fn unknown_customers_and_unpublished_versions_are_not_found_and_bad_ids_are_invalid() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;

    // Nothing published yet: no notices, and nothing to acknowledge.
    assert!(list_notices(&mut privacy, "cust-1")
        .await
        .unwrap()
        .is_empty());
    expect_code(
        acknowledge_notice(&mut privacy, "cust-1", V1).await,
        Code::NotFound,
    );
    publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
        .await
        .unwrap();

    expect_code(list_notices(&mut privacy, "nobody").await, Code::NotFound);
    expect_code(
        acknowledge_notice(&mut privacy, "nobody", V1).await,
        Code::NotFound,
    );
    let status = expect_code(
        acknowledge_notice(&mut privacy, "cust-1", "2099-01").await,
        Code::NotFound,
    );
    assert!(status.message().contains("version"), "{status:?}");
    expect_code(
        acknowledge_notice(&mut privacy, "cust-1", "").await,
        Code::NotFound,
    );
    // None of these made "nobody" a customer, nor acknowledged anything.
    expect_code(list_notices(&mut privacy, "nobody").await, Code::NotFound);
    assert_eq!(list_notices(&mut privacy, "cust-1").await.unwrap().len(), 1);
    expect_code(list_notices(&mut privacy, "").await, Code::InvalidArgument);
}

#[tokio::test]
async fn notices_and_acknowledgements_need_consent_write_which_privacy_admin_implies() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;
    publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
        .await
        .unwrap();
    publish_policy(&mut privacy, V2, V2_SUMMARY, &[], false)
        .await
        .unwrap();

    for key in [CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY] {
        let mut client = vault.privacy(key).await;
        expect_code(
            list_notices(&mut client, "cust-1").await,
            Code::PermissionDenied,
        );
        expect_code(
            acknowledge_notice(&mut client, "cust-1", V1).await,
            Code::PermissionDenied,
        );
    }
    let mut anonymous = vault.privacy("").await;
    expect_code(
        list_notices(&mut anonymous, "cust-1").await,
        Code::Unauthenticated,
    );
    assert_eq!(list_notices(&mut privacy, "cust-1").await.unwrap().len(), 2);

    // consent:write alone lists and acknowledges notices, but publishes nothing.
    let mut desk = vault.privacy(DESK_KEY).await;
    assert_eq!(list_notices(&mut desk, "cust-1").await.unwrap().len(), 2);
    acknowledge_notice(&mut desk, "cust-1", V1).await.unwrap();
    assert_eq!(list_notices(&mut desk, "cust-1").await.unwrap().len(), 1);
    expect_code(
        publish_policy(&mut desk, V3, V3_SUMMARY, &[], false).await,
        Code::PermissionDenied,
    );
    // privacy:admin alone does all of it.
    let mut officer = vault.privacy(OFFICER_KEY).await;
    assert_eq!(list_notices(&mut officer, "cust-1").await.unwrap().len(), 1);
    acknowledge_notice(&mut officer, "cust-1", V2)
        .await
        .unwrap();
    assert!(list_notices(&mut officer, "cust-1")
        .await
        .unwrap()
        .is_empty());
    publish_policy(&mut officer, V3, V3_SUMMARY, &[], false)
        .await
        .unwrap();
    assert_eq!(
        version_names(&list_policy_versions(&mut officer).await.unwrap()),
        vec![V1, V2, V3]
    );
}

#[tokio::test]
async fn republishing_a_version_or_naming_an_unknown_purpose_is_refused_and_changes_nothing() {
    let vault = notices_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    publish_policy(&mut privacy, V1, V1_SUMMARY, &["marketing"], false)
        .await
        .unwrap();
    let before = list_policy_versions(&mut privacy).await.unwrap();

    // The same version again, with another summary or the very same one.
    let status = expect_code(
        publish_policy(&mut privacy, V1, "Something else entirely.", &[], true).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains(V1), "{status:?}");
    expect_code(
        publish_policy(&mut privacy, V1, V1_SUMMARY, &["marketing"], false).await,
        Code::AlreadyExists,
    );
    // A purpose the policy file does not have is named in the refusal.
    let status = expect_code(
        publish_policy(
            &mut privacy,
            V2,
            V2_SUMMARY,
            &["marketing", "advertising"],
            true,
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("\"advertising\""), "{status:?}");
    assert_eq!(list_policy_versions(&mut privacy).await.unwrap(), before);

    // Versions must be 1-64 letters, digits, '.', '_' or '-'.
    let too_long = "v".repeat(65);
    for version in [
        "",
        "2026 02",
        "2026/02",
        "v2\n",
        "versión-2",
        "<script>",
        too_long.as_str(),
    ] {
        expect_code(
            publish_policy(&mut privacy, version, V2_SUMMARY, &[], false).await,
            Code::InvalidArgument,
        );
    }
    // The summary must be plain text that says something.
    for summary in ["", "   \n ", "bell \u{7} here", &"x".repeat(4097)] {
        expect_code(
            publish_policy(&mut privacy, V2, summary, &[], false).await,
            Code::InvalidArgument,
        );
    }
    assert_eq!(list_policy_versions(&mut privacy).await.unwrap(), before);

    // The refused version was never taken: it can still be published.
    let longest = "v".repeat(64);
    publish_policy(
        &mut privacy,
        &longest,
        "Several\nlines are fine.",
        &[],
        false,
    )
    .await
    .unwrap();
    publish_policy(&mut privacy, "1.2_rc-3", V3_SUMMARY, &[], false)
        .await
        .unwrap();
    publish_policy(&mut privacy, V2, V2_SUMMARY, &["marketing"], true)
        .await
        .unwrap();
    assert_eq!(
        version_names(&list_policy_versions(&mut privacy).await.unwrap()),
        vec![V1, longest.as_str(), "1.2_rc-3", V2]
    );
}

#[tokio::test]
async fn concurrent_publications_of_one_version_admit_exactly_one() {
    let vault = notices_vault().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut privacy = vault.privacy(ADMIN_KEY).await;
        tasks.push(tokio::spawn(async move {
            let summary = format!("Summary number {i}.");
            publish_policy(&mut privacy, V1, &summary, &[], false).await
        }));
        let mut privacy = vault.privacy(ADMIN_KEY).await;
        tasks.push(tokio::spawn(async move {
            let version = format!("other-{i}");
            publish_policy(&mut privacy, &version, "Another version.", &[], false).await
        }));
    }
    let mut published_v1 = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(version) => published_v1.extend((version.version == V1).then_some(version)),
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
    }
    assert_eq!(published_v1.len(), 1);
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let versions = list_policy_versions(&mut privacy).await.unwrap();
    assert_eq!(versions.len(), 9, "{versions:?}");
    let mut names = version_names(&versions);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 9);
    let v1 = versions.iter().find(|v| v.version == V1).unwrap();
    assert_eq!(v1, &published_v1[0]);
    // Oldest first.
    let times: Vec<i64> = versions
        .iter()
        .map(|v| common::timestamp_ms(v.published_at.as_ref()))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[tokio::test]
async fn only_a_privacy_admin_publishes_and_versions_are_listed_oldest_first_with_every_field() {
    let vault = notices_vault().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    assert!(list_policy_versions(&mut privacy).await.unwrap().is_empty());

    for key in [CHECKOUT_KEY, WRITER_KEY, SUPPORT_KEY, DESK_KEY] {
        let mut client = vault.privacy(key).await;
        let status = expect_code(
            publish_policy(&mut client, V1, V1_SUMMARY, &["marketing"], true).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("privacy:admin"), "{status:?}");
    }
    let mut anonymous = vault.privacy("").await;
    expect_code(
        publish_policy(&mut anonymous, V1, V1_SUMMARY, &[], false).await,
        Code::Unauthenticated,
    );
    assert!(list_policy_versions(&mut privacy).await.unwrap().is_empty());

    let v1 = publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
        .await
        .unwrap();
    let v2 = publish_policy(
        &mut privacy,
        V2,
        V2_SUMMARY,
        &["newsletter", "marketing", "marketing"],
        true,
    )
    .await
    .unwrap();
    let v3 = publish_policy(&mut privacy, V3, V3_SUMMARY, &["support"], false)
        .await
        .unwrap();
    assert_eq!(v1.version, V1);
    assert_eq!(v1.summary, V1_SUMMARY);
    assert!(v1.changed_purposes.is_empty());
    assert!(!v1.requires_reconsent);
    assert_eq!(v2.version, V2);
    assert_eq!(v2.summary, V2_SUMMARY);
    // Each changed purpose once.
    let mut changed = v2.changed_purposes.clone();
    changed.sort();
    assert_eq!(changed, vec!["marketing", "newsletter"]);
    assert!(v2.requires_reconsent);
    assert_eq!(v3.changed_purposes, vec!["support"]);
    assert!(!v3.requires_reconsent);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for version in [&v1, &v2, &v3] {
        let at = common::timestamp_ms(version.published_at.as_ref());
        assert!(at <= now_ms && at > now_ms - 60_000, "{version:?}");
    }
    assert!(
        common::timestamp_ms(v1.published_at.as_ref())
            <= common::timestamp_ms(v2.published_at.as_ref())
    );
    assert!(
        common::timestamp_ms(v2.published_at.as_ref())
            <= common::timestamp_ms(v3.published_at.as_ref())
    );

    let listed = list_policy_versions(&mut privacy).await.unwrap();
    assert_eq!(listed, vec![v1.clone(), v2, v3]);
    // The officer (privacy:admin only) sees the same list.
    let mut officer = vault.privacy(OFFICER_KEY).await;
    assert_eq!(list_policy_versions(&mut officer).await.unwrap(), listed);
}

#[tokio::test]
async fn published_versions_acknowledgements_and_renewal_survive_a_restart() {
    let mut vault = notices_vault().await;
    {
        let mut admin = vault.admin().await;
        let mut privacy = vault.privacy(ADMIN_KEY).await;
        billing_data(&mut admin, "cust-1").await;
        grant(&mut privacy, "cust-1", "marketing", "").await;
        publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
            .await
            .unwrap();
        publish_policy(&mut privacy, V2, V2_SUMMARY, &["marketing"], true)
            .await
            .unwrap();
        acknowledge_notice(&mut privacy, "cust-1", V1)
            .await
            .unwrap();
    }
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let versions = list_policy_versions(&mut privacy).await.unwrap();
    vault.restart().await;

    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    assert_eq!(list_policy_versions(&mut privacy).await.unwrap(), versions);
    let notices = list_notices(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(
        notice_list(&notices),
        vec![(V2, V2_SUMMARY, vec!["marketing"])]
    );
    let status = expect_code(
        get(&mut admin, "cust-1", &[], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V2);
    expect_code(
        publish_policy(&mut privacy, V2, V2_SUMMARY, &[], false).await,
        Code::AlreadyExists,
    );
    publish_policy(&mut privacy, V3, V3_SUMMARY, &[], false)
        .await
        .unwrap();
    assert_eq!(
        version_names(&list_policy_versions(&mut privacy).await.unwrap()),
        vec![V1, V2, V3]
    );
}

#[tokio::test]
async fn the_export_holds_acknowledged_versions_and_pending_notices_in_json_and_plain_english() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;
    grant(&mut privacy, "cust-1", "marketing", "").await;

    // Before any version: empty lists, and no policy part in the report.
    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    assert_eq!(document["policy_acknowledgements"], json!([]));
    assert_eq!(document["pending_notices"], json!([]));
    let report = text_export(
        &export(&mut privacy, "cust-1", ExportFormat::Text)
            .await
            .unwrap(),
    );
    assert!(
        !report.contains("Changes to our privacy policy"),
        "{report}"
    );

    publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
        .await
        .unwrap();
    let v2 = publish_policy(&mut privacy, V2, V2_SUMMARY, &["marketing"], true)
        .await
        .unwrap();
    acknowledge_notice(&mut privacy, "cust-1", V1)
        .await
        .unwrap();

    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let acks = document["policy_acknowledgements"].as_array().unwrap();
    assert_eq!(acks.len(), 1, "{document:#}");
    assert_eq!(acks[0]["policy_version"], V1);
    let acknowledged_at = acks[0]["acknowledged_at"].as_str().unwrap();
    time::OffsetDateTime::parse(
        acknowledged_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let pending = document["pending_notices"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{document:#}");
    assert_eq!(pending[0]["policy_version"], V2);
    assert_eq!(pending[0]["summary"], V2_SUMMARY);
    assert_eq!(pending[0]["purposes_needing_consent"], json!(["marketing"]));
    let published_at = pending[0]["published_at"].as_str().unwrap();
    let published_at =
        time::OffsetDateTime::parse(published_at, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(
        (published_at.unix_timestamp_nanos() / 1_000_000) as i64,
        common::timestamp_ms(v2.published_at.as_ref())
    );

    let report = text_export(
        &export(&mut privacy, "cust-1", ExportFormat::Text)
            .await
            .unwrap(),
    );
    let part = report
        .split("Changes to our privacy policy")
        .nth(1)
        .unwrap_or_else(|| panic!("no policy part in:\n{report}"));
    assert!(part.contains(V2_SUMMARY), "{report}");
    assert!(part.contains(&format!("version {V2}")), "{report}");
    assert!(part.contains("not confirmed"), "{report}");
    assert!(part.contains(&format!("saw version {V1}")), "{report}");
    assert!(part.contains("marketing"), "{report}");
    assert!(part.contains("until you agree again"), "{report}");
    // v1 was acknowledged: its summary is not presented as news.
    assert!(!report.contains(V1_SUMMARY), "{report}");

    // Renewed and acknowledged: nothing pending, both acknowledgements listed.
    grant(&mut privacy, "cust-1", "marketing", V2).await;
    acknowledge_notice(&mut privacy, "cust-1", V2)
        .await
        .unwrap();
    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let acks: Vec<&str> = document["policy_acknowledgements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ack| ack["policy_version"].as_str().unwrap())
        .collect();
    assert_eq!(acks, vec![V1, V2]);
    assert_eq!(document["pending_notices"], json!([]));
    let report = text_export(
        &export(&mut privacy, "cust-1", ExportFormat::Text)
            .await
            .unwrap(),
    );
    assert!(report.contains("Changes to our privacy policy"), "{report}");
    assert!(report.contains(&format!("saw version {V2}")), "{report}");
    assert!(!report.contains("not confirmed"), "{report}");
}

#[tokio::test]
async fn acknowledgements_are_erased_with_the_customer_and_a_new_customer_under_the_id_starts_afresh(
) {
    let (vault, clock) = notices_vault_on_a_manual_clock().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;
    publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false)
        .await
        .unwrap();
    publish_policy(&mut privacy, V2, V2_SUMMARY, &[], false)
        .await
        .unwrap();
    acknowledge_notice(&mut privacy, "cust-1", V1)
        .await
        .unwrap();

    delete_customer(&mut privacy, "cust-1").await.unwrap();
    expect_code(list_notices(&mut privacy, "cust-1").await, Code::NotFound);
    expect_code(
        export(&mut privacy, "cust-1", ExportFormat::Json).await,
        Code::NotFound,
    );

    // The same id, later: a new customer who joined after v1 and v2.
    clock.advance(Duration::from_secs(1));
    billing_data(&mut admin, "cust-1").await;
    assert!(list_notices(&mut privacy, "cust-1")
        .await
        .unwrap()
        .is_empty());
    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    assert_eq!(document["policy_acknowledgements"], json!([]));
    assert_eq!(document["pending_notices"], json!([]));
    publish_policy(&mut privacy, V3, V3_SUMMARY, &[], false)
        .await
        .unwrap();
    let notices = list_notices(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(notice_list(&notices), vec![(V3, V3_SUMMARY, vec![])]);
}

#[tokio::test]
async fn publishing_and_acknowledging_are_audited() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;

    publish_policy(
        &mut privacy,
        V1,
        V1_SUMMARY,
        &["marketing", "newsletter"],
        true,
    )
    .await
    .unwrap();
    let mut checkout = vault.privacy(CHECKOUT_KEY).await;
    expect_code(
        publish_policy(&mut checkout, V2, V2_SUMMARY, &[], false).await,
        Code::PermissionDenied,
    );
    expect_code(
        publish_policy(&mut privacy, V1, V1_SUMMARY, &[], false).await,
        Code::AlreadyExists,
    );
    acknowledge_notice(&mut privacy, "cust-1", V1)
        .await
        .unwrap();

    let events = all_audit_events(&mut audit).await;
    let published: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| e.action == "PublishPolicy")
        .collect();
    assert_eq!(published.len(), 3, "{published:#?}");
    assert_eq!(published[0].principal, "admin");
    assert_eq!(published[0].outcome, "ok");
    assert_eq!(published[0].fields, vec!["marketing", "newsletter"]);
    assert_eq!(published[0].customer_id, "");
    assert_eq!(published[1].principal, "checkout");
    assert_eq!(published[1].outcome, "PERMISSION_DENIED");
    assert_eq!(published[2].principal, "admin");
    assert_eq!(published[2].outcome, "ALREADY_EXISTS");

    let acknowledged: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| e.action == "AcknowledgeNotice")
        .collect();
    assert_eq!(acknowledged.len(), 1, "{acknowledged:#?}");
    assert_eq!(acknowledged[0].principal, "admin");
    assert_eq!(acknowledged[0].customer_id, "cust-1");
    assert_eq!(acknowledged[0].outcome, "ok");
    // The acknowledgement shows in the customer's own history.
    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    let history = document["access_history"].as_array().unwrap();
    assert!(
        history.iter().any(|e| e["action"] == "AcknowledgeNotice"),
        "{document:#}"
    );
    assert!(common::verify_audit_log(&mut audit).await.unwrap().intact);
}

// ---------------------------------------------------------------------------
// The command line.
// ---------------------------------------------------------------------------

fn pii_vault(vault: &TestVault, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(args)
        .env("PII_VAULT_ADDR", format!("http://{}", vault.addr))
        .env("PII_VAULT_API_KEY", ADMIN_KEY)
        .output()
        .unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_published_and_notices_listed_and_acknowledged_from_the_command_line() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cli-1").await;
    grant(&mut privacy, "cli-1", "marketing", "").await;

    let published = stdout_of(&pii_vault(
        &vault,
        &[
            "policy",
            "publish",
            "--version",
            V1,
            "--summary",
            V2_SUMMARY,
            "--changed",
            "marketing",
            "--requires-reconsent",
        ],
    ));
    assert!(published.contains(V1), "{published}");
    assert!(published.contains(V2_SUMMARY), "{published}");
    assert!(published.contains("re-consent required"), "{published}");
    stdout_of(&pii_vault(
        &vault,
        &[
            "policy",
            "publish",
            "--version",
            V2,
            "--summary",
            V3_SUMMARY,
        ],
    ));
    // What the CLI published is what the API holds.
    let versions = list_policy_versions(&mut privacy).await.unwrap();
    assert_eq!(version_names(&versions), vec![V1, V2]);
    assert_eq!(versions[0].changed_purposes, vec!["marketing"]);
    assert!(versions[0].requires_reconsent);
    assert!(!versions[1].requires_reconsent);
    assert!(versions[1].changed_purposes.is_empty());

    let listed = stdout_of(&pii_vault(&vault, &["policy", "list"]));
    let first = listed.find(V1).unwrap_or_else(|| panic!("{listed}"));
    let second = listed.find(V2).unwrap_or_else(|| panic!("{listed}"));
    assert!(first < second, "{listed}");
    assert!(listed.contains(V3_SUMMARY), "{listed}");
    let listed: Value = serde_json::from_str(&stdout_of(&pii_vault(
        &vault,
        &["policy", "list", "--json"],
    )))
    .unwrap();
    assert_eq!(listed["versions"][0]["version"], V1);
    assert_eq!(
        listed["versions"][0]["changed_purposes"],
        json!(["marketing"])
    );
    assert_eq!(listed["versions"][0]["requires_reconsent"], true);
    assert_eq!(listed["versions"][1]["version"], V2);

    let notices = stdout_of(&pii_vault(&vault, &["notices", "list", "cli-1"]));
    assert!(
        notices.contains(&format!("{V1}: {V2_SUMMARY}")),
        "{notices}"
    );
    assert!(notices.contains("consent to renew: marketing"), "{notices}");
    assert!(
        notices.contains(&format!("{V2}: {V3_SUMMARY}")),
        "{notices}"
    );
    assert!(notices.find(V1) < notices.find(V2), "{notices}");

    let acked = stdout_of(&pii_vault(&vault, &["notices", "ack", "cli-1", V2]));
    assert!(acked.contains("cli-1") && acked.contains(V2), "{acked}");
    let notices = stdout_of(&pii_vault(&vault, &["notices", "list", "cli-1"]));
    assert!(notices.contains("no pending notices"), "{notices}");
    assert!(list_notices(&mut privacy, "cli-1")
        .await
        .unwrap()
        .is_empty());

    // Refusals fail with their status.
    let again = pii_vault(
        &vault,
        &["policy", "publish", "--version", V1, "--summary", "again"],
    );
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("AlreadyExists"), "{stderr}");
    let unknown = pii_vault(&vault, &["notices", "ack", "cli-1", "2099-01"]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("NotFound"), "{stderr}");
}

#[tokio::test]
async fn a_customer_who_joined_just_before_a_version_was_published_gets_its_notice() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    for i in 0..20 {
        let customer = format!("early-{i}");
        let version = format!("v{i}");
        billing_data(&mut admin, &customer).await;
        publish_policy(&mut privacy, &version, V1_SUMMARY, &[], false)
            .await
            .unwrap();
        let notices = list_notices(&mut privacy, &customer).await.unwrap();
        assert_eq!(
            notices
                .iter()
                .map(|n| n.policy_version.as_str())
                .collect::<Vec<_>>(),
            vec![version.as_str()],
            "{customer} joined before {version} was published"
        );
    }
}

#[tokio::test]
async fn acknowledgements_and_consents_recorded_concurrently_are_all_kept_and_survive_a_key_rotation(
) {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;
    let versions = [V1, V2, V3, V4, V5];
    for version in versions {
        publish_policy(&mut privacy, version, V1_SUMMARY, &[], false)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for version in versions {
        let mut client = vault.privacy(ADMIN_KEY).await;
        tasks.push(tokio::spawn(async move {
            acknowledge_notice(&mut client, "cust-1", version).await
        }));
        let mut client = vault.privacy(ADMIN_KEY).await;
        tasks.push(tokio::spawn(async move {
            set_consent_from(&mut client, "cust-1", "newsletter", true, version, "web")
                .await
                .map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let acknowledged = |document: &Value| -> Vec<String> {
        let mut acks: Vec<String> = document["policy_acknowledgements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ack| ack["policy_version"].as_str().unwrap().to_owned())
            .collect();
        acks.sort();
        acks
    };
    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    assert_eq!(acknowledged(&document), versions);
    assert_eq!(document["consents"]["history"].as_array().unwrap().len(), 5);
    assert!(list_notices(&mut privacy, "cust-1")
        .await
        .unwrap()
        .is_empty());

    let mut keys = vault.key_admin(ADMIN_KEY).await;
    keys.rotate_customer_key(pb::RotateCustomerKeyRequest {
        customer_id: "cust-1".into(),
    })
    .await
    .unwrap();
    let document = json_export(
        &export(&mut privacy, "cust-1", ExportFormat::Json)
            .await
            .unwrap(),
    );
    assert_eq!(acknowledged(&document), versions);
    assert!(list_notices(&mut privacy, "cust-1")
        .await
        .unwrap()
        .is_empty());
    publish_policy(&mut privacy, "2026-06", V2_SUMMARY, &["newsletter"], true)
        .await
        .unwrap();
    let notices = list_notices(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(
        notice_list(&notices),
        vec![("2026-06", V2_SUMMARY, vec!["newsletter"])]
    );
}

#[tokio::test]
async fn a_consent_naming_a_version_not_yet_published_is_refused_and_never_counts_once_it_is() {
    let vault = notices_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    billing_data(&mut admin, "cust-1").await;
    grant(&mut privacy, "cust-1", "marketing", "").await;
    let before = list_consents(&mut privacy, "cust-1", true).await.unwrap();

    // Nothing is published yet: naming V2 ahead of its publication is refused,
    // and so is naming it once V1 is out, ...
    for published in [None, Some(V1)] {
        if let Some(version) = published {
            publish_policy(&mut privacy, version, V1_SUMMARY, &[], false)
                .await
                .unwrap();
        }
        for granted in [true, false] {
            let status = expect_code(
                set_consent_from(&mut privacy, "cust-1", "marketing", granted, V2, "web").await,
                Code::InvalidArgument,
            );
            assert!(status.message().contains(V2), "{status:?}");
            assert!(
                status.message().contains("not been published"),
                "{status:?}"
            );
        }
        // ... with the ledger unchanged.
        assert_eq!(
            list_consents(&mut privacy, "cust-1", true).await.unwrap(),
            before
        );
    }

    // V2 changes marketing and asks for consent again: the consent on record
    // predates it, and no early consent naming V2 slipped in to satisfy it.
    publish_policy(&mut privacy, V2, V2_SUMMARY, &["marketing"], true)
        .await
        .unwrap();
    let status = expect_code(
        get(&mut admin, "cust-1", &["email"], "marketing").await,
        Code::PermissionDenied,
    );
    assert_renewal_refusal(&status, "marketing", V2);
    let notices = list_notices(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(notices.len(), 2, "{notices:#?}");

    // Once published, V2 can be named, and the renewed consent counts.
    grant(&mut privacy, "cust-1", "marketing", V2).await;
    let renewed = get(&mut admin, "cust-1", &["email"], "marketing")
        .await
        .unwrap();
    assert_eq!(value_of(&renewed, "email").value, "cust-1@example.com");
}
