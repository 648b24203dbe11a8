//! Tokenize request ids (AIP-155): a retry with the same id and request gets
//! the first call's tokens and creates none, durably; the same id with
//! another request, or an id that is not a UUID, is refused; erasure forgets
//! the ids, and each customer remembers only the newest 32.

use crate::common;

use common::{expect_code, VaultClient, VaultProcess, ADMIN_KEY};
use pii_vault::app::VaultOptions;
use pii_vault::pb::{self, FieldKind, TokenFormat};
use tonic::Code;

const ID: &str = "5f0c6a62-6f3e-4b7a-9d8e-2c1b0a9f8e7d";

type Item = (FieldKind, &'static str, TokenFormat);

/// One value of each format, so that a retry covers them all.
fn mixed() -> Vec<Item> {
    vec![
        (
            FieldKind::Generic,
            "first standalone value",
            TokenFormat::Random,
        ),
        (
            FieldKind::CardNumber,
            "4242424242424242",
            TokenFormat::FormatPreserving,
        ),
        (
            FieldKind::Phone,
            "(555) 123-4567",
            TokenFormat::Deterministic,
        ),
    ]
}

async fn tokenize_as(
    client: &mut VaultClient,
    customer: &str,
    items: Vec<Item>,
    purpose: &str,
    request_id: &str,
) -> Result<Vec<String>, tonic::Status> {
    common::tokenize(
        client,
        common::Tokenize::of(customer)
            .items(items)
            .purpose(purpose)
            .request_id(request_id),
    )
    .await
}

async fn tokenize_with_id(
    client: &mut VaultClient,
    customer: &str,
    items: Vec<Item>,
    request_id: &str,
) -> Result<Vec<String>, tonic::Status> {
    tokenize_as(client, customer, items, "billing", request_id).await
}

/// A request id that differs from `ID` and from every other `n`.
fn nth_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A vault whose customers hold at most `cap` standalone tokens: filling the
/// cap exactly shows how many tokens a customer holds.
async fn vault_capped_at(cap: usize) -> common::TestVault {
    let mut options = VaultOptions::default();
    options.limits.max_tokens_per_customer = cap;
    common::spawn_vault_with(&common::test_policy(), options).await
}

/// Asserts that the customer holds exactly `cap - free` standalone tokens.
async fn assert_free_tokens(client: &mut VaultClient, customer: &str, free: usize) {
    let one = vec![(FieldKind::Generic, "filler", TokenFormat::Random)];
    for _ in 0..free {
        common::tokenize(client, common::Tokenize::of(customer).items(one.clone()))
            .await
            .unwrap();
    }
    expect_code(
        common::tokenize(client, common::Tokenize::of(customer).items(one)).await,
        Code::FailedPrecondition,
    );
}

async fn tokenize_events(vault: &common::TestVault, customer: &str) -> Vec<pb::AuditEvent> {
    let mut audit = vault.audit(ADMIN_KEY).await;
    common::all_audit_events(&mut audit)
        .await
        .into_iter()
        .filter(|event| event.action == "Tokenize" && event.customer_id == customer)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_request_id_gets_the_same_tokens_and_creates_none() {
    let mut vault = vault_capped_at(5).await;
    let mut admin = vault.admin().await;
    let first = tokenize_with_id(&mut admin, "cust-1", mixed(), ID)
        .await
        .unwrap();
    let retry = tokenize_with_id(&mut admin, "cust-1", mixed(), ID)
        .await
        .unwrap();
    assert_eq!(retry, first);
    // The id is a UUID in any case.
    let upper = tokenize_with_id(&mut admin, "cust-1", mixed(), &ID.to_uppercase())
        .await
        .unwrap();
    assert_eq!(upper, first);
    // Ids are per customer: another customer's call with it is another request.
    let other_customer = tokenize_with_id(&mut admin, "cust-2", mixed(), ID)
        .await
        .unwrap();
    assert_ne!(other_customer[0], first[0]);

    vault.restart().await;
    let mut admin = vault.admin().await;
    let after_restart = tokenize_with_id(&mut admin, "cust-1", mixed(), ID)
        .await
        .unwrap();
    assert_eq!(after_restart, first);
    let resolved = common::detokenize(&mut admin, &first, "billing")
        .await
        .unwrap();
    let values: Vec<_> = resolved
        .iter()
        .map(|result| result.value.as_str())
        .collect();
    assert_eq!(
        values,
        ["first standalone value", "4242424242424242", "+15551234567"]
    );

    // Each call is audited, the retries too.
    let events = tokenize_events(&vault, "cust-1").await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|event| event.outcome == "ok"));

    // Three of five tokens held: the retries made none.
    assert_free_tokens(&mut admin, "cust-1", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_request_id_every_call_makes_new_tokens() {
    let vault = vault_capped_at(5).await;
    let mut admin = vault.admin().await;
    let random = vec![(FieldKind::Generic, "v", TokenFormat::Random)];
    let first = tokenize_with_id(&mut admin, "cust-1", random.clone(), "")
        .await
        .unwrap();
    let second = tokenize_with_id(&mut admin, "cust-1", random, "")
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_free_tokens(&mut admin, "cust-1", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_outlives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log = dir.path().join("vault.log");
    let database = if common::on_postgres() {
        common::TestDatabase::create().await
    } else {
        None
    };
    let args = database
        .as_ref()
        .map_or(Vec::new(), |db| db.serve_args().to_vec());

    let process = VaultProcess::start_with(&paths, &log, &args);
    let mut client = process.vault(ADMIN_KEY).await;
    let first = tokenize_with_id(&mut client, "cust-1", mixed(), ID)
        .await
        .unwrap();
    process.kill9();

    let process = VaultProcess::start_with(&paths, &log, &args);
    let mut client = process.vault(ADMIN_KEY).await;
    let retry = tokenize_with_id(&mut client, "cust-1", mixed(), ID)
        .await
        .unwrap();
    assert_eq!(retry, first);
    let other = vec![(FieldKind::Generic, "another value", TokenFormat::Random)];
    expect_code(
        tokenize_with_id(&mut client, "cust-1", other, ID).await,
        Code::AlreadyExists,
    );
    process.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_with_another_request_is_refused_and_changes_nothing() {
    let vault = vault_capped_at(5).await;
    let mut admin = vault.admin().await;
    let mut checkout = vault.vault(common::CHECKOUT_KEY).await;
    let first = tokenize_with_id(&mut admin, "cust-1", mixed(), ID)
        .await
        .unwrap();

    let mut other_value = mixed();
    other_value[0].1 = "second standalone value";
    let mut other_kind = mixed();
    other_kind[0].0 = FieldKind::Name;
    let mut other_format = mixed();
    other_format[0].2 = TokenFormat::Deterministic;
    let fewer = mixed()[..2].to_vec();
    for items in [other_value, other_kind, other_format, fewer] {
        let status = expect_code(
            tokenize_with_id(&mut admin, "cust-1", items, ID).await,
            Code::AlreadyExists,
        );
        assert!(status.message().contains("request_id"), "{status:?}");
        assert!(!status.message().contains("standalone value"), "{status:?}");
        let details = tonic_types::StatusExt::get_error_details(&status);
        let reason = details.error_info().map(|info| info.reason.clone());
        assert_eq!(reason.as_deref(), Some("REQUEST_ID_REUSED"), "{status:?}");
    }
    let other_purpose = tokenize_as(&mut admin, "cust-1", mixed(), "support", ID).await;
    expect_code(other_purpose, Code::AlreadyExists);
    let random = mixed()[..1].to_vec();
    let other_principal = tokenize_with_id(&mut checkout, "cust-1", random, ID).await;
    expect_code(other_principal, Code::AlreadyExists);

    // The refusals made no token, and the id still stands for the first request.
    let retry = tokenize_with_id(&mut admin, "cust-1", mixed(), ID)
        .await
        .unwrap();
    assert_eq!(retry, first);
    assert_free_tokens(&mut admin, "cust-1", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_that_is_not_a_uuid_is_refused_and_changes_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    for bad in [
        "retry-1",
        "5f0c6a626f3e4b7a9d8e2c1b0a9f8e7d",
        "5f0c6a62-6f3e-4b7a-9d8e-2c1b0a9f8e7z",
        "{5f0c6a62-6f3e-4b7a-9d8e-2c1b0a9f8e7d}",
    ] {
        let status = expect_code(
            tokenize_with_id(&mut admin, "cust-1", mixed(), bad).await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("request_id"), "{status:?}");
    }
    expect_code(
        common::get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_forgets_the_request_ids_of_the_customer() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let random = vec![(FieldKind::Generic, "v", TokenFormat::Random)];
    let first = tokenize_with_id(&mut admin, "cust-1", random.clone(), ID)
        .await
        .unwrap();
    common::delete_customer(&mut privacy, "cust-1")
        .await
        .unwrap();

    let again = tokenize_with_id(&mut admin, "cust-1", random, ID)
        .await
        .unwrap();
    assert_ne!(again, first);
    let resolved = common::detokenize(&mut admin, &again, "billing")
        .await
        .unwrap();
    assert_eq!(resolved[0].value, "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_remembers_only_the_newest_32_request_ids() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let random = vec![(FieldKind::Generic, "v", TokenFormat::Random)];
    let mut issued = Vec::new();
    for n in 0..33 {
        let tokens = tokenize_with_id(&mut admin, "cust-1", random.clone(), &nth_id(n))
            .await
            .unwrap();
        issued.push(tokens);
    }
    // Ids 1 to 32 are remembered; id 0 was forgotten and makes a new token.
    for n in [32, 1] {
        let retry = tokenize_with_id(&mut admin, "cust-1", random.clone(), &nth_id(n))
            .await
            .unwrap();
        assert_eq!(retry, issued[n], "request id {n}");
    }
    let forgotten = tokenize_with_id(&mut admin, "cust-1", random, &nth_id(0))
        .await
        .unwrap();
    assert_ne!(forgotten, issued[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_remembers_the_tokens_of_at_most_2000_newest_ids_but_always_the_newest() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let one = vec![(FieldKind::Generic, "v", TokenFormat::Random)];
    let batch = vec![(FieldKind::Generic, "v", TokenFormat::Random); 1000];
    let first = tokenize_with_id(&mut admin, "cust-1", one.clone(), &nth_id(0))
        .await
        .unwrap();
    let second = tokenize_with_id(&mut admin, "cust-1", batch.clone(), &nth_id(1))
        .await
        .unwrap();
    let third = tokenize_with_id(&mut admin, "cust-1", batch.clone(), &nth_id(2))
        .await
        .unwrap();
    // 2,001 tokens: the first id goes, the two batches stay.
    for (n, items, issued) in [(2, batch.clone(), &third), (1, batch.clone(), &second)] {
        let retry = tokenize_with_id(&mut admin, "cust-1", items, &nth_id(n))
            .await
            .unwrap();
        assert_eq!(&retry, issued, "request id {n}");
    }
    let forgotten = tokenize_with_id(&mut admin, "cust-1", one, &nth_id(0))
        .await
        .unwrap();
    assert_ne!(forgotten, first);
    // Past the bound on its own, the newest id is still remembered.
    let mut vault_options = VaultOptions::default();
    vault_options.limits.max_batch_items = 2001;
    let big = common::spawn_vault_with(&common::test_policy(), vault_options).await;
    let mut admin = big.admin().await;
    let many = vec![(FieldKind::Generic, "v", TokenFormat::Random); 2001];
    let issued = tokenize_with_id(&mut admin, "cust-1", many.clone(), ID)
        .await
        .unwrap();
    let retry = tokenize_with_id(&mut admin, "cust-1", many, ID)
        .await
        .unwrap();
    assert_eq!(retry, issued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_of_a_remembered_request_is_stored_in_the_clear() {
    if !common::sled_only("no_value_of_a_remembered_request_is_stored_in_the_clear") {
        return;
    }
    let mut vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let planted = vec![(
        FieldKind::Generic,
        "planted-idem-value",
        TokenFormat::Random,
    )];
    tokenize_with_id(&mut admin, "cust-1", planted.clone(), ID)
        .await
        .unwrap();
    tokenize_with_id(&mut admin, "cust-1", planted, ID)
        .await
        .unwrap();
    vault.stop().await;
    let files = common::all_file_bytes(&vault.paths.data_dir);
    assert!(!files.is_empty());
    for (path, bytes) in files {
        assert!(
            !common::contains(&bytes, b"planted-idem-value"),
            "{path:?} holds the value"
        );
    }
}

/// A retry answers what the first call answered, even once those tokens were
/// deleted: it re-creates nothing, and the tokens resolve to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_delete_tokens_returns_the_deleted_tokens_which_resolve_to_nothing() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let items = vec![(FieldKind::Generic, "a value", TokenFormat::Random)];
    let first = tokenize_with_id(&mut admin, "cust-d", items.clone(), ID)
        .await
        .unwrap();
    let deleted = admin
        .delete_tokens(pb::DeleteTokensRequest {
            customer_id: "cust-d".into(),
            tokens: first.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    let retried = tokenize_with_id(&mut admin, "cust-d", items, ID)
        .await
        .unwrap();
    assert_eq!(retried, first);
    let results = common::detokenize(&mut admin, &retried, "billing")
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].value.is_empty(), "{results:?}");
    assert!(results[0].error.is_some(), "{results:?}");
}
