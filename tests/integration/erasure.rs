//! DeleteCustomer (crypto-shredding) and durability across a graceful restart,
//! through the real gRPC server.

use crate::common;

use common::{
    delete_customer, detokenize, expect_code, find_customers, get, put, tokenize, value_of,
    PutFields, Tokenize, VaultClient,
};
use pii_vault::pb::{ErasureState, FieldKind, TokenFormat};
use tonic::Code;

/// What one customer holds: their field tokens and standalone tokens.
struct Held {
    field_tokens: Vec<String>,
    standalone_tokens: Vec<String>,
}

impl Held {
    fn all_tokens(&self) -> Vec<String> {
        self.field_tokens
            .iter()
            .chain(&self.standalone_tokens)
            .cloned()
            .collect()
    }
}

/// Stores three fields (two searchable) and three standalone tokens (one of each
/// format) for `customer`.
async fn store_customer(client: &mut VaultClient, customer: &str, email: &str) -> Held {
    let field_tokens = put(
        client,
        PutFields::of(customer)
            .field("email", FieldKind::Email, email)
            .field("ssn", FieldKind::Ssn, "123-45-6789")
            .field("full_name", FieldKind::Name, "Jane Doe"),
    )
    .await
    .unwrap()
    .tokens
    .into_values()
    .collect();
    let standalone_tokens = tokenize(
        client,
        Tokenize::of(customer)
            .item(
                FieldKind::CardNumber,
                "4242424242424242",
                TokenFormat::Random,
            )
            .item(FieldKind::Ssn, "123-45-6789", TokenFormat::FormatPreserving)
            .item(
                FieldKind::Phone,
                "(555) 123-4567",
                TokenFormat::Deterministic,
            ),
    )
    .await
    .unwrap();
    Held {
        field_tokens,
        standalone_tokens,
    }
}

async fn assert_all_resolve(client: &mut VaultClient, customer: &str, tokens: &[String]) {
    let results = detokenize(client, tokens, "billing").await.unwrap();
    for result in &results {
        assert_eq!(result.error, None, "{result:?}");
        assert_eq!(result.customer_id, customer, "{result:?}");
        assert!(!result.value.is_empty(), "{result:?}");
    }
}

async fn assert_none_resolve(client: &mut VaultClient, tokens: &[String]) {
    let results = detokenize(client, tokens, "billing").await.unwrap();
    assert_eq!(results.len(), tokens.len());
    for result in &results {
        let error = result.error.as_ref().expect("erased token has an error");
        assert_eq!(error.code, Code::NotFound as i32, "{result:?}");
        assert_eq!(result.customer_id, "");
        assert_eq!(result.value, "");
    }
}

#[tokio::test]
async fn delete_customer_erases_fields_tokens_and_index_entries_of_that_customer_only() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let gone = store_customer(&mut admin, "cust-gone", "jane@example.com").await;
    let kept = store_customer(&mut admin, "cust-kept", "jane@example.com").await;
    let kept_before = get(&mut admin, "cust-kept", &[], "billing").await.unwrap();

    // Before: everything is there.
    assert_eq!(
        get(&mut admin, "cust-gone", &[], "billing")
            .await
            .unwrap()
            .fields
            .len(),
        3
    );
    assert_all_resolve(&mut admin, "cust-gone", &gone.all_tokens()).await;
    let found = find_customers(&mut admin, "email", "jane@example.com", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-gone", "cust-kept"]);
    let found = find_customers(&mut admin, "ssn", "123456789", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-gone", "cust-kept"]);

    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let receipt = delete_customer(&mut privacy, "cust-gone").await.unwrap();

    // The receipt.
    let body = receipt
        .receipt_id
        .strip_prefix("rcpt_")
        .unwrap_or_else(|| panic!("receipt id {:?}", receipt.receipt_id));
    assert_eq!(body.len(), 26, "{}", receipt.receipt_id);
    assert_eq!(receipt.customer_id, "cust-gone");
    assert_eq!(receipt.fields_erased, 3);
    assert_eq!(
        receipt.tokens_erased, 6,
        "3 field tokens + 3 standalone tokens"
    );
    assert!(!receipt.data_keys_destroyed.is_empty());
    assert!(
        receipt
            .data_keys_destroyed
            .iter()
            .all(|key| !key.is_empty()),
        "{:?}",
        receipt.data_keys_destroyed
    );
    assert_eq!(receipt.state, ErasureState::Logical as i32);
    let deleted_at = receipt.deleted_at.expect("deleted_at is set");
    assert!(
        (started - 1..=started + 60).contains(&deleted_at.seconds),
        "deleted_at {deleted_at:?}"
    );

    // After: nothing of the customer is reachable.
    let status = expect_code(
        get(&mut admin, "cust-gone", &[], "billing").await,
        Code::NotFound,
    );
    assert!(!status.message().contains("jane"), "{status:?}");
    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    expect_code(
        get(&mut checkout, "cust-gone", &["email"], "billing").await,
        Code::NotFound,
    );
    assert_none_resolve(&mut admin, &gone.all_tokens()).await;
    let found = find_customers(&mut admin, "email", "jane@example.com", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-kept"]);
    let found = find_customers(&mut admin, "phone", "5551234567", "billing")
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    let found = find_customers(&mut admin, "ssn", "123-45-6789", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-kept"]);

    // The other customer is untouched.
    assert_eq!(
        get(&mut admin, "cust-kept", &[], "billing").await.unwrap(),
        kept_before
    );
    assert_all_resolve(&mut admin, "cust-kept", &kept.all_tokens()).await;
}

#[tokio::test]
async fn a_second_delete_customer_is_harmless_and_returns_the_same_receipt() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let held = store_customer(&mut admin, "cust-1", "jane@example.com").await;
    let first = delete_customer(&mut privacy, "cust-1").await.unwrap();
    let second = delete_customer(&mut privacy, "cust-1").await.unwrap();
    assert_eq!(second.receipt_id, first.receipt_id);
    assert_eq!(second.customer_id, "cust-1");
    assert_eq!(second.deleted_at, first.deleted_at);
    assert_eq!(second.fields_erased, first.fields_erased);
    assert_eq!(second.tokens_erased, first.tokens_erased);
    assert_eq!(second.data_keys_destroyed, first.data_keys_destroyed);
    assert_eq!(second.state, ErasureState::Logical as i32);
    expect_code(
        get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );
    assert_none_resolve(&mut admin, &held.all_tokens()).await;
}

#[tokio::test]
async fn deleting_a_customer_never_held_is_not_found() {
    let vault = common::spawn_vault().await;
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let status = expect_code(
        delete_customer(&mut privacy, "nobody").await,
        Code::NotFound,
    );
    assert!(status.message().contains("customer"), "{status:?}");
    expect_code(
        delete_customer(&mut privacy, "").await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn a_customer_recreated_after_erasure_gets_fresh_data_and_cannot_read_old_tokens() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let old = store_customer(&mut admin, "cust-1", "old@example.com").await;
    let old_fields = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    let first = delete_customer(&mut privacy, "cust-1").await.unwrap();

    let new_tokens = put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "new@example.com"),
    )
    .await
    .unwrap()
    .tokens;
    let new_card = tokenize(&mut admin, Tokenize::of("cust-1").card())
        .await
        .unwrap();

    let now = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(now.fields.len(), 1, "only the new field: {now:?}");
    let email = value_of(&now, "email");
    assert_eq!(email.value, "new@example.com");
    assert_ne!(email.token, value_of(&old_fields, "email").token);
    assert!(!old.all_tokens().contains(&new_tokens["email"]));
    assert!(!old.all_tokens().contains(&new_card[0]));

    // Every old token stays erased, the deterministic one too: tokenizing the
    // same value for the new incarnation of the id gives a different token.
    assert_none_resolve(&mut admin, &old.all_tokens()).await;
    let same_value_again = tokenize(
        &mut admin,
        Tokenize::of("cust-1").item(
            FieldKind::Phone,
            "(555) 123-4567",
            TokenFormat::Deterministic,
        ),
    )
    .await
    .unwrap();
    assert_ne!(same_value_again[0], old.standalone_tokens[2]);
    assert_none_resolve(&mut admin, &old.all_tokens()).await;
    let found = find_customers(&mut admin, "email", "old@example.com", "billing")
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");

    // The new data is a new erasure with its own receipt.
    let second = delete_customer(&mut privacy, "cust-1").await.unwrap();
    assert_ne!(second.receipt_id, first.receipt_id);
    assert_eq!(second.fields_erased, 1);
    assert_eq!(second.tokens_erased, 3);
}

#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let mut vault = common::spawn_vault().await;
    let (held, before, receipt) = {
        let mut admin = vault.admin().await;
        let mut privacy = vault.privacy(common::ADMIN_KEY).await;
        let held = store_customer(&mut admin, "cust-1", "jane@example.com").await;
        store_customer(&mut admin, "cust-erased", "erased@example.com").await;
        let receipt = delete_customer(&mut privacy, "cust-erased").await.unwrap();
        let before = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
        (held, before, receipt)
    };

    vault.restart().await;

    let mut admin = vault.admin().await;
    let after = get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_eq!(after, before);
    assert_all_resolve(&mut admin, "cust-1", &held.all_tokens()).await;
    let found = find_customers(&mut admin, "email", "jane@EXAMPLE.com", "billing")
        .await
        .unwrap();
    assert_eq!(found, ["cust-1"]);
    let card = detokenize(&mut admin, &held.standalone_tokens[..1], "billing")
        .await
        .unwrap();
    assert_eq!(card[0].value, "4242424242424242");

    // New writes work under the reopened keyring, and the same field keeps its token.
    let tokens = put(
        &mut admin,
        PutFields::of("cust-1").field("email", FieldKind::Email, "jane.new@example.com"),
    )
    .await
    .unwrap()
    .tokens;
    assert_eq!(tokens["email"], value_of(&before, "email").token);

    // The erasure survives too, with its receipt.
    expect_code(
        get(&mut admin, "cust-erased", &[], "billing").await,
        Code::NotFound,
    );
    let mut privacy = vault.privacy(common::ADMIN_KEY).await;
    let again = delete_customer(&mut privacy, "cust-erased").await.unwrap();
    assert_eq!(again.receipt_id, receipt.receipt_id);
}
