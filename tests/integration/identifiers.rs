//! What a client chooses and the audit log keeps for good: customer ids shaped
//! like personal data are refused, and request ids are the vault's own.

use crate::common;

use common::{expect_code, put, with_request_id, PutFields, ADMIN_KEY};
use pii_vault::pb::FieldKind;
use tonic::Code;

/// Ids a careless client might build from a customer's data.
const PERSONAL_IDS: [(&str, &str); 8] = [
    ("123-45-6789", "social security number"),
    ("cust-219099999", "social security number"),
    ("4242424242424242", "card number"),
    ("card:4242-4242-4242-4242", "card number"),
    ("555-123-4567", "phone number"),
    ("phone.15551234567", "phone number"),
    ("1985-07-14", "date"),
    ("dob_07.14.1985", "date"),
];

fn request_id_of(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("every answer names its request id")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn customer_ids_shaped_like_personal_data_are_refused_and_never_recorded() {
    // Each refusal is read back as its own event: none is counted into another.
    let mut options = pii_vault::app::VaultOptions::default();
    options.limits.refusals.recorded_per_window = 100;
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    let mut admin = vault.admin().await;
    for (id, looks_like) in PERSONAL_IDS {
        let status = expect_code(
            put(
                &mut admin,
                PutFields::of(id).field("note", FieldKind::Generic, "hello"),
            )
            .await,
            Code::InvalidArgument,
        );
        assert!(
            status.message().contains("customer_id") && status.message().contains(looks_like),
            "{id}: {}",
            status.message()
        );
        assert!(!status.message().contains(id), "{}", status.message());
    }
    // Opaque ids, UUIDs and long numeric ids are fine.
    for id in [
        "cust-42",
        "tenant:7.user_9",
        "550e8400-e29b-41d4-a716-446655440000",
        "1541815603606036480",
    ] {
        put(
            &mut admin,
            PutFields::of(id).field("note", FieldKind::Generic, "hello"),
        )
        .await
        .unwrap_or_else(|status| panic!("{id}: {status}"));
    }

    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = common::all_audit_events(&mut audit).await;
    assert_eq!(events.len(), PERSONAL_IDS.len() + 4);
    for event in &events[..PERSONAL_IDS.len()] {
        assert_eq!(
            (event.outcome.as_str(), event.customer_id.as_str()),
            ("INVALID_ARGUMENT", "")
        );
    }
}

#[tokio::test]
async fn request_ids_in_the_audit_log_are_the_vaults_own_and_returned_to_the_client() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let chosen = ["123-45-6789", "order-7f3a"];
    let mut returned = Vec::new();
    for id in chosen {
        let response = admin
            .put_fields(with_request_id(
                common::PutFields::of("cust-1")
                    .field("note", FieldKind::Generic, "hello")
                    .build(),
                id,
            ))
            .await
            .unwrap();
        returned.push(request_id_of(response.metadata()));
    }
    // A refusal names its request id too, so it can be found in the log.
    let refused = admin
        .get_fields(with_request_id(
            common::GetFields::of("cust-nobody").build(),
            "5551234567",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    returned.push(request_id_of(refused.metadata()));

    let mut audit = vault.audit(ADMIN_KEY).await;
    let recorded: Vec<String> = common::all_audit_events(&mut audit)
        .await
        .into_iter()
        .map(|event| event.request_id)
        .collect();
    assert_eq!(recorded, returned);
    for id in &recorded {
        assert!(
            id.starts_with("req_") && !chosen.contains(&id.as_str()) && id != "5551234567",
            "{id}"
        );
    }
    assert_ne!(recorded[0], recorded[1]);
}

#[tokio::test]
async fn a_customer_stored_under_such_an_id_before_the_check_can_still_be_erased() {
    if !common::sled_only("a_customer_stored_under_such_an_id_before_the_check_can_still_be_erased")
    {
        return;
    }
    use pii_vault::store::{CustomerChange, Customers, Upkeep};
    let mut vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    put(
        &mut admin,
        PutFields::of("cust-1").field("note", FieldKind::Generic, "hello"),
    )
    .await
    .unwrap();
    // An older vault accepted this id: plant a customer under it.
    vault.stop().await;
    {
        let store = pii_vault::store::SledStore::open(&vault.paths.data_dir, 16 << 20).unwrap();
        let record = store.customer("cust-1").await.unwrap().unwrap();
        store
            .commit(CustomerChange {
                customer_id: "123-45-6789".into(),
                customer: Some(record),
                ..CustomerChange::default()
            })
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    vault.start_again().await;

    let mut admin = vault.admin().await;
    expect_code(
        common::get(&mut admin, "123-45-6789", &[], "billing").await,
        Code::InvalidArgument,
    );
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let receipt = common::delete_customer(&mut privacy, "123-45-6789")
        .await
        .unwrap();
    assert_eq!(receipt.customer_id, "123-45-6789");
    // Erasing an id that was never stored stays refused.
    expect_code(
        common::delete_customer(&mut privacy, "987-65-4321").await,
        Code::InvalidArgument,
    );
}
