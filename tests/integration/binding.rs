//! What a ciphertext's associated data binds (issue #15, finding 8): a
//! field's kind and token, a standalone token's kind and format, and the
//! privacy ledger's record revision. Someone who can write the store relabels
//! or re-points records, or puts an older ledger back; the vault refuses to
//! open them and shows nothing. Customers stored before the bound layout
//! still read, and are migrated to it.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    detokenize, field, get, put, set_consent, tokenize, PutFields, TestVault, Tokenize, ADMIN_KEY,
    SUPPORT_KEY, WRITER_KEY,
};
use pii_vault::crypto::{Binding, DekCache, Keyring, KeyringFile, RootKey};
use pii_vault::pb::{self, FieldKind, TokenFormat};
use pii_vault::root_of_trust::file::FileRoot;
use pii_vault::store::{
    CustomerChange, CustomerRecord, PgStore, SledStore, Store, TokenTarget, WrappedDekRecord,
    WrappedKeyRecord, BINDING_BOUND, BINDING_UNBOUND,
};
use pii_vault::vault::{CustomerId, FileKeyring, KeyManager, Sealing, TableKeyring};
use tonic::Code;

const MOBILE: &str = "+15551234567";
const CONTACT: &str = "ann@example.com";
const CARD: &str = "4242424242424242";
const LEDGER_LABEL: &str = "privacy-ledger";

/// The vault's store, opened behind its back (the vault is stopped).
async fn offline_store(vault: &TestVault) -> Arc<dyn Store> {
    match &vault.database {
        None => Arc::new(SledStore::open(&vault.paths.data_dir, 16 << 20).unwrap()),
        Some(database) => Arc::new(
            PgStore::connect(&database.url, 1, None, true)
                .await
                .unwrap(),
        ),
    }
}

/// The store and the keys, as someone holding the root key would open them.
async fn offline_keys(vault: &TestVault) -> (Arc<dyn Store>, KeyManager) {
    let root = RootKey::load(&vault.paths.root_key_file).unwrap();
    let file_root = || Arc::new(FileRoot::new(root.clone(), &vault.paths.root_key_file)) as _;
    let cache = || DekCache::new(100, Duration::from_secs(60));
    match &vault.database {
        None => {
            let store = offline_store(vault).await;
            let (file, keyring) =
                KeyringFile::open_or_create(&vault.paths.keyring_file, &root, 0).unwrap();
            let keys = KeyManager::new(
                keyring,
                Box::new(FileKeyring::new(file)),
                file_root(),
                cache(),
            );
            (store, keys)
        }
        Some(database) => {
            let store = Arc::new(
                PgStore::connect(&database.url, 1, None, true)
                    .await
                    .unwrap(),
            );
            let sealing = Sealing::Whole(root.clone());
            let (table, keyring) =
                TableKeyring::open(Arc::clone(&store), sealing, Keyring::generate(0))
                    .await
                    .unwrap();
            let keys = KeyManager::new(keyring, Box::new(table), file_root(), cache());
            (store, keys)
        }
    }
}

/// Commits `change` behind the vault's back and closes the store.
async fn tamper(store: Arc<dyn Store>, change: CustomerChange) {
    store.commit(change).await.unwrap();
    store.flush().await.unwrap();
    drop(store);
}

/// A change that puts the customer's record back as it is (revision and all):
/// what an attacker who edits records in place leaves.
async fn change_of(store: &dyn Store, id: &str) -> CustomerChange {
    let record = store.customer(id).await.unwrap().unwrap();
    CustomerChange {
        customer_id: id.into(),
        expected_revision: Some(record.revision),
        customer: Some(record),
        ..CustomerChange::default()
    }
}

/// `ann`: a mobile (support sees it masked), a contact e-mail (support sees it
/// in plaintext) and a card; returns their tokens by field name.
async fn seed_ann(vault: &TestVault) -> BTreeMap<String, String> {
    let mut admin = vault.admin().await;
    let fields = vec![
        field("mobile", FieldKind::Phone, MOBILE),
        field("contact", FieldKind::Email, CONTACT),
        field("card", FieldKind::CardNumber, CARD),
    ];
    put(&mut admin, PutFields::of("ann").fields(fields))
        .await
        .unwrap()
        .tokens
        .into_iter()
        .collect()
}

/// A refusal of a value the store was tampered with: DATA_LOSS, saying an
/// integrity check failed, and showing none of the values.
fn assert_integrity_refusal<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = common::expect_code(result, Code::DataLoss);
    assert!(status.message().contains("integrity"), "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(
        details.error_info().map(|info| info.reason.as_str()),
        Some("INTEGRITY_CHECK_FAILED"),
        "{status:?}"
    );
    let printed = format!("{status:?}");
    for value in [MOBILE, "555", CONTACT, CARD, "4242"] {
        assert!(!printed.contains(value), "{printed}");
    }
}

/// A detokenize result refused for integrity, or the whole call refused so.
fn assert_detokenize_refused(result: Result<Vec<pb::DetokenizeResult>, tonic::Status>) {
    match result {
        Err(status) => assert_integrity_refusal::<()>(Err(status)),
        Ok(results) => {
            let printed = format!("{results:?}");
            for value in [MOBILE, "555", CONTACT, CARD, "4242"] {
                assert!(!printed.contains(value), "{printed}");
            }
            assert!(
                results.iter().all(|result| result.value.is_empty()),
                "{printed}"
            );
            assert!(printed.contains("integrity"), "{printed}");
        }
    }
}

/// (a) A field whose kind is relabelled (phone, masked for `support`, as
/// email, which `support` sees in plaintext) does not open.
#[tokio::test]
async fn a_field_relabelled_to_a_looser_kind_is_refused() {
    let mut vault = common::spawn_vault().await;
    let tokens = seed_ann(&vault).await;
    let mut support = vault.vault(SUPPORT_KEY).await;
    let shown = get(&mut support, "ann", &["mobile"], "support")
        .await
        .unwrap();
    assert_ne!(common::value_of(&shown, "mobile").value, MOBILE);
    vault.stop().await;

    let store = offline_store(&vault).await;
    let mut change = change_of(store.as_ref(), "ann").await;
    let mut mobile = store.field("ann", "mobile").await.unwrap().unwrap();
    mobile.kind = "email".into();
    let mut token = store.token(&mobile.token).await.unwrap().unwrap();
    token.kind = "email".into();
    change.put_tokens.push((mobile.token.clone(), token));
    change.put_fields.push(("mobile".into(), mobile));
    tamper(store, change).await;
    vault.restart().await;

    let mut support = vault.vault(SUPPORT_KEY).await;
    assert_integrity_refusal(get(&mut support, "ann", &["mobile"], "support").await);
    assert_detokenize_refused(
        detokenize(&mut support, &[tokens["mobile"].clone()], "support").await,
    );
    // The fields nobody touched still read.
    let contact = get(&mut support, "ann", &["contact"], "support")
        .await
        .unwrap();
    assert_eq!(common::value_of(&contact, "contact").value, CONTACT);
}

/// (b) A field's token re-pointed at another field, and a standalone token
/// relabelled to a looser kind, do not resolve.
#[tokio::test]
async fn a_token_whose_target_or_kind_is_altered_is_refused() {
    let mut vault = common::spawn_vault().await;
    let tokens = seed_ann(&vault).await;
    let mut admin = vault.admin().await;
    let standalone = tokenize(
        &mut admin,
        Tokenize::of("ann").item(FieldKind::Phone, MOBILE, TokenFormat::Random),
    )
    .await
    .unwrap()
    .remove(0);
    let mut support = vault.vault(SUPPORT_KEY).await;
    let before = detokenize(&mut support, std::slice::from_ref(&standalone), "support")
        .await
        .unwrap();
    assert_ne!(before[0].value, MOBILE, "support sees phones masked");
    vault.stop().await;

    let store = offline_store(&vault).await;
    let mut change = change_of(store.as_ref(), "ann").await;
    // The e-mail's token (shown in plaintext to support) now points at the mobile.
    let mut contact = store.token(&tokens["contact"]).await.unwrap().unwrap();
    contact.target = TokenTarget::Field("mobile".into());
    change.put_tokens.push((tokens["contact"].clone(), contact));
    let mut phone = store.token(&standalone).await.unwrap().unwrap();
    phone.kind = "email".into();
    change.put_tokens.push((standalone.clone(), phone));
    tamper(store, change).await;
    vault.restart().await;

    let mut support = vault.vault(SUPPORT_KEY).await;
    assert_detokenize_refused(
        detokenize(&mut support, &[tokens["contact"].clone()], "support").await,
    );
    assert_detokenize_refused(detokenize(&mut support, &[standalone], "support").await);
}

/// (c) A withdrawn consent rolled back by putting the ledger ciphertext of
/// an older revision into the customer's current record does not open.
#[tokio::test]
async fn an_older_ledger_put_back_into_the_record_is_refused() {
    let mut vault = common::spawn_vault().await;
    seed_ann(&vault).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    set_consent(&mut privacy, "ann", "marketing", true)
        .await
        .unwrap();
    vault.stop().await;
    let store = offline_store(&vault).await;
    let granted = store.customer("ann").await.unwrap().unwrap().privacy;
    drop(store);
    vault.restart().await;

    let mut privacy = vault.privacy(ADMIN_KEY).await;
    set_consent(&mut privacy, "ann", "marketing", false)
        .await
        .unwrap();
    let mut writer = vault.vault(WRITER_KEY).await;
    let email = || vec![field("promo", FieldKind::Email, "ann.promo@example.com")];
    common::expect_code(
        put(
            &mut writer,
            PutFields::of("ann").fields(email()).purpose("marketing"),
        )
        .await,
        Code::PermissionDenied,
    );
    vault.stop().await;

    let store = offline_store(&vault).await;
    let mut change = change_of(store.as_ref(), "ann").await;
    change.customer.as_mut().unwrap().privacy = granted;
    tamper(store, change).await;
    vault.restart().await;

    let mut writer = vault.vault(WRITER_KEY).await;
    let status = common::expect_code(
        put(
            &mut writer,
            PutFields::of("ann").fields(email()).purpose("marketing"),
        )
        .await,
        Code::DataLoss,
    );
    assert!(status.message().contains("integrity"), "{status:?}");
    let mut admin = vault.admin().await;
    let promo = get(&mut admin, "ann", &[], "billing").await;
    assert!(
        promo.map_or(true, |response| response
            .fields
            .iter()
            .all(|f| f.name != "promo")),
        "the rolled-back consent let a marketing write through"
    );
}

/// Postcard layout of a customer record as releases before the bound layout
/// wrote it (format 2, no `binding_version`).
#[derive(serde::Serialize)]
struct Format2Record {
    revision: u64,
    created_at_ms: i64,
    dek: WrappedDekRecord,
    token_key: Option<WrappedKeyRecord>,
    encryptions: u64,
    privacy: Option<Vec<u8>>,
    wrapped_under: std::collections::BTreeSet<u32>,
}

impl From<CustomerRecord> for Format2Record {
    fn from(record: CustomerRecord) -> Self {
        Format2Record {
            revision: record.revision,
            created_at_ms: record.created_at_ms,
            dek: record.dek,
            token_key: record.token_key,
            encryptions: record.encryptions,
            privacy: record.privacy,
            wrapped_under: record.wrapped_under,
        }
    }
}

/// Rewrites customer `id` as the release before the bound layout stored it:
/// every value re-sealed with the unbound associated data, and the record in
/// format 2 (a `D` entry on sled, `format = 2` on PostgreSQL). The vault is stopped.
async fn rewrite_as_before_binding(vault: &TestVault, id: &str) {
    let (store, keys) = offline_keys(vault).await;
    let customer = CustomerId::parse(id).unwrap();
    let record = store.customer(id).await.unwrap().unwrap();
    assert_eq!(record.binding_version, BINDING_BOUND);
    let cipher = keys.cipher(&customer, &record).await.unwrap();
    let mut change = CustomerChange {
        customer_id: id.into(),
        expected_revision: Some(record.revision),
        ..CustomerChange::default()
    };
    for (name, mut field) in store.fields(id).await.unwrap() {
        let bound = Binding::BoundField {
            customer_id: id,
            field: &name,
            kind: &field.kind,
            token: &field.token,
        };
        let value = cipher.decrypt(&bound, &field.ciphertext).unwrap();
        let unbound = Binding::Field {
            customer_id: id,
            field: &name,
        };
        field.ciphertext = cipher.encrypt(&unbound, &value);
        change.put_fields.push((name, field));
    }
    for token in store.customer_tokens(id).await.unwrap() {
        let mut record = store.token(&token).await.unwrap().unwrap();
        if let TokenTarget::Value(ciphertext) = &record.target {
            let bound = Binding::BoundToken {
                customer_id: id,
                token: &token,
                kind: &record.kind,
                format: &record.format,
            };
            let value = cipher.decrypt(&bound, ciphertext).unwrap();
            let unbound = Binding::Token {
                customer_id: id,
                token: &token,
            };
            record.target = TokenTarget::Value(cipher.encrypt(&unbound, &value));
            change.put_tokens.push((token, record));
        }
    }
    let mut old = record.clone();
    if let Some(ledger) = &record.privacy {
        let bound = Binding::BoundRecord {
            customer_id: id,
            label: LEDGER_LABEL,
            revision: record.revision,
        };
        let plaintext = cipher.decrypt(&bound, ledger).unwrap();
        let unbound = Binding::Record {
            customer_id: id,
            label: LEDGER_LABEL,
        };
        old.privacy = Some(cipher.encrypt(&unbound, &plaintext));
    }
    old.binding_version = BINDING_UNBOUND;
    old.revision += 1;
    change.customer = Some(old.clone());
    tamper(store, change).await;
    drop(keys);

    common::rewrite_customer(vault, id, (b"D", 2), |_| Format2Record::from(old)).await;
}

/// The binding version and DEK version of a stored customer (the vault stopped).
async fn stored_binding(vault: &TestVault, id: &str) -> (u8, u32) {
    let store = offline_store(vault).await;
    let record = store.customer(id).await.unwrap().unwrap();
    drop(store);
    (record.binding_version, record.dek.version)
}

/// Everything `admin` and `support` read of `ann`, and her consents.
async fn everything_read(vault: &TestVault, tokens: &[String]) -> String {
    let mut admin = vault.admin().await;
    let fields = get(&mut admin, "ann", &[], "billing").await.unwrap();
    let mut support = vault.vault(SUPPORT_KEY).await;
    let masked = get(&mut support, "ann", &["mobile", "contact"], "support")
        .await
        .unwrap();
    let resolved = detokenize(&mut admin, tokens, "billing").await.unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let consents = common::list_consents(&mut privacy, "ann", true)
        .await
        .unwrap();
    let values = |response: &pb::GetFieldsResponse| {
        response
            .fields
            .iter()
            // Written by the migrating write below: compared apart.
            .filter(|field| field.name != "promo")
            .map(|field| format!("{}={}/{}", field.name, field.value, field.token))
            .collect::<Vec<_>>()
    };
    let resolved: Vec<_> = resolved.iter().map(|r| (&r.token, &r.value)).collect();
    let consents: Vec<_> = consents.iter().map(|c| (&c.purpose, c.granted)).collect();
    format!(
        "{:?} {:?} {resolved:?} {consents:?}",
        values(&fields),
        values(&masked)
    )
}

/// A customer stored by the release before the bound layout (format 2
/// record, unbound ciphertexts) reads as before; reads leave them as they
/// are; their next write migrates every value to the bound layout (under a
/// new DEK) before it changes anything, and they read the same after.
#[tokio::test]
async fn a_customer_stored_before_binding_reads_and_is_migrated_on_write() {
    let mut vault = common::spawn_vault().await;
    let field_tokens = seed_ann(&vault).await;
    let mut admin = vault.admin().await;
    let standalone = tokenize(&mut admin, Tokenize::of("ann").card())
        .await
        .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    set_consent(&mut privacy, "ann", "marketing", true)
        .await
        .unwrap();
    let tokens: Vec<String> = field_tokens.values().cloned().chain(standalone).collect();
    let expected = everything_read(&vault, &tokens).await;
    vault.stop().await;
    let (_, dek_before) = stored_binding(&vault, "ann").await;
    rewrite_as_before_binding(&vault, "ann").await;
    assert_eq!(stored_binding(&vault, "ann").await.0, BINDING_UNBOUND);

    vault.restart().await;
    assert_eq!(everything_read(&vault, &tokens).await, expected);
    vault.stop().await;
    assert_eq!(
        stored_binding(&vault, "ann").await,
        (BINDING_UNBOUND, dek_before),
        "reads leave the customer as stored"
    );

    vault.restart().await;
    let mut writer = vault.vault(WRITER_KEY).await;
    let promo = vec![field("promo", FieldKind::Email, "ann.promo@example.com")];
    put(
        &mut writer,
        PutFields::of("ann").fields(promo).purpose("marketing"),
    )
    .await
    .unwrap();
    assert_eq!(everything_read(&vault, &tokens).await, expected);
    let mut admin = vault.admin().await;
    let promo = get(&mut admin, "ann", &["promo"], "billing").await.unwrap();
    assert_eq!(
        common::value_of(&promo, "promo").value,
        "ann.promo@example.com"
    );
    vault.stop().await;
    let (binding, dek_after) = stored_binding(&vault, "ann").await;
    assert_eq!(binding, BINDING_BOUND);
    assert!(dek_after > dek_before, "migrated under a new DEK");
}

/// A master rotation migrates every customer still stored before the bound
/// layout, written to or not.
#[tokio::test]
async fn a_master_rotation_migrates_customers_stored_before_binding() {
    let mut vault = common::spawn_vault().await;
    let field_tokens = seed_ann(&vault).await;
    let tokens: Vec<String> = field_tokens.values().cloned().collect();
    let expected = everything_read(&vault, &tokens).await;
    vault.stop().await;
    rewrite_as_before_binding(&vault, "ann").await;
    vault.restart().await;

    vault.rotate_master(false).await;
    assert_eq!(everything_read(&vault, &tokens).await, expected);
    vault.stop().await;
    assert_eq!(stored_binding(&vault, "ann").await.0, BINDING_BOUND);
}
