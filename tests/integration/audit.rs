//! The audit log through the real gRPC server: every call that touches a
//! customer, allowed or refused, is recorded (names, never values) in a hash
//! chain that ListAuditEvents lists and VerifyAuditLog checks; changing or
//! removing a stored event is detected.

use crate::common;

use common::{
    all_audit_events, audit_events, delete_customer, expect_code, get, verify_audit_log,
    with_request_id, AuditClient, TestVault, ADMIN_KEY, CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY,
};
use pii_vault::pb::{self, FieldKind};
use pii_vault::store::AuditRecord;
use tonic::Code;

/// Values planted in the scenario; none may reach the audit log in any form.
const PLANTED_SSN: &str = "219-09-9999";
const PLANTED_EMAIL: &str = "zebulon.audit@example.com";
const PLANTED: [&str; 4] = [PLANTED_SSN, "219099999", "zebulon.audit", "zebulon"];
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What one audit event should say, apart from its time and place in the chain.
#[derive(Debug, PartialEq)]
struct Expected {
    action: String,
    principal: String,
    customer_id: String,
    fields: Vec<String>,
    purpose: String,
    outcome: String,
    request_id: String,
}

fn expected(
    action: &str,
    principal: &str,
    customer_id: &str,
    fields: &[&str],
    purpose: &str,
    outcome: &str,
    request_id: &str,
) -> Expected {
    Expected {
        action: action.into(),
        principal: principal.into(),
        customer_id: customer_id.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        purpose: purpose.into(),
        outcome: outcome.into(),
        request_id: request_id.into(),
    }
}

fn described(event: &pb::AuditEvent) -> Expected {
    Expected {
        action: event.action.clone(),
        principal: event.principal.clone(),
        customer_id: event.customer_id.clone(),
        fields: event.fields.clone(),
        purpose: event.purpose.clone(),
        outcome: event.outcome.clone(),
        request_id: event.request_id.clone(),
    }
}

/// The request id the vault gave a call, allowed or refused.
fn issued_id<T>(result: &Result<tonic::Response<T>, tonic::Status>) -> String {
    let metadata = match result {
        Ok(response) => response.metadata(),
        Err(status) => status.metadata(),
    };
    metadata
        .get("x-request-id")
        .expect("every answer names its request id")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Allowed and refused calls by several principals, each with its own
/// `x-request-id`; returns the events they must have produced, in order, with
/// the request ids the vault issued (never the client's).
async fn mixed_calls(vault: &TestVault) -> Vec<Expected> {
    let mut admin = vault.admin().await;
    let mut checkout = vault.vault(CHECKOUT_KEY).await;
    let mut writer = vault.vault(WRITER_KEY).await;

    let put_call = admin
        .put_fields(with_request_id(
            common::PutFields::of("cust-1")
                .field("ssn", FieldKind::Ssn, PLANTED_SSN)
                .field("email", FieldKind::Email, PLANTED_EMAIL)
                .build(),
            "req-put",
        ))
        .await;
    let req_put = issued_id(&put_call);
    let tokens = put_call.unwrap().into_inner().tokens;
    let get_call = checkout
        .get_fields(with_request_id(
            common::GetFields::of("cust-1").names(&["email"]).build(),
            "req-get",
        ))
        .await;
    let req_get = issued_id(&get_call);
    get_call.unwrap();
    let detokenize_call = checkout
        .detokenize(with_request_id(
            pb::DetokenizeRequest {
                tokens: vec![tokens["email"].clone()],
                purpose: "billing".into(),
            },
            "req-detokenize",
        ))
        .await;
    let req_detokenize = issued_id(&detokenize_call);
    let resolved = detokenize_call.unwrap().into_inner().results;
    assert_eq!(resolved[0].error, None);
    let wrong_purpose = checkout
        .get_fields(with_request_id(
            common::GetFields::of("cust-1")
                .names(&["email"])
                .purpose("marketing")
                .build(),
            "req-wrong-purpose",
        ))
        .await;
    let req_wrong_purpose = issued_id(&wrong_purpose);
    expect_code(wrong_purpose, Code::PermissionDenied);
    // Not an SSN (ten digits), but it contains the planted one.
    let bad_ssn = writer
        .put_fields(with_request_id(
            common::PutFields::of("cust-1")
                .field("ssn", FieldKind::Ssn, "219-09-99999")
                .build(),
            "req-bad-ssn",
        ))
        .await;
    let req_bad_ssn = issued_id(&bad_ssn);
    expect_code(bad_ssn, Code::InvalidArgument);
    let find_call = admin
        .find_customers(with_request_id(
            pb::FindCustomersRequest {
                field_name: "email".into(),
                value: PLANTED_EMAIL.into(),
                purpose: "billing".into(),
                ..Default::default()
            },
            "req-find",
        ))
        .await;
    let req_find = issued_id(&find_call);
    let found = find_call.unwrap().into_inner().customer_ids;
    assert_eq!(found, ["cust-1"]);
    let put_2 = admin
        .put_fields(with_request_id(
            common::PutFields::of("cust-2")
                .field("phone", FieldKind::Phone, "+15557654321")
                .build(),
            "req-put-2",
        ))
        .await;
    let req_put_2 = issued_id(&put_2);
    put_2.unwrap();

    vec![
        expected(
            "PutFields",
            "admin",
            "cust-1",
            &["ssn", "email"],
            "billing",
            "ok",
            &req_put,
        ),
        expected(
            "GetFields",
            "checkout",
            "cust-1",
            &["email"],
            "billing",
            "ok",
            &req_get,
        ),
        expected(
            "Detokenize",
            "checkout",
            "cust-1",
            &["email"],
            "billing",
            "ok",
            &req_detokenize,
        ),
        expected(
            "GetFields",
            "checkout",
            "cust-1",
            &["email"],
            "marketing",
            "PERMISSION_DENIED",
            &req_wrong_purpose,
        ),
        expected(
            "PutFields",
            "writer",
            "cust-1",
            &["ssn"],
            "billing",
            "INVALID_ARGUMENT",
            &req_bad_ssn,
        ),
        expected(
            "FindCustomers",
            "admin",
            "cust-1",
            &["email"],
            "billing",
            "ok",
            &req_find,
        ),
        expected(
            "PutFields",
            "admin",
            "cust-2",
            &["phone"],
            "billing",
            "ok",
            &req_put_2,
        ),
    ]
}

fn millis(at: &prost_types::Timestamp) -> i64 {
    at.seconds * 1000 + i64::from(at.nanos / 1_000_000)
}

/// Asserts the events form one chain from the genesis hash, numbered from 1.
#[track_caller]
fn assert_chained(events: &[pb::AuditEvent]) {
    let mut prev_hash = GENESIS.to_owned();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.seq, index as u64 + 1, "{event:?}");
        assert_eq!(event.prev_hash, prev_hash, "event {}", event.seq);
        assert_eq!(event.hash.len(), 64, "{event:?}");
        assert_ne!(event.hash, event.prev_hash);
        prev_hash = event.hash.clone();
    }
}

async fn list(
    client: &mut AuditClient,
    request: pb::ListAuditEventsRequest,
) -> Vec<pb::AuditEvent> {
    audit_events(client, request).await.unwrap()
}

/// Stops the vault, lets `change` edit its sled store directly, and starts it again.
async fn tamper(vault: &mut TestVault, change: impl FnOnce(&sled::Db)) {
    vault.stop().await;
    {
        let db = common::open_sled_when_released(&vault.paths.data_dir);
        change(&db);
        db.flush().unwrap();
    }
    vault.start_again().await;
}

fn event_key(seq: u64) -> Vec<u8> {
    let mut key = b"a".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn customer_event_key(customer_id: &str, seq: u64) -> Vec<u8> {
    let mut key = b"b".to_vec();
    key.extend_from_slice(customer_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn read_event(db: &sled::Db, seq: u64) -> AuditRecord {
    let bytes = db
        .get(event_key(seq))
        .unwrap()
        .expect("the event is stored");
    let record: AuditRecord = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(record.seq, seq);
    record
}

/// Rewrites the stored event `seq`, leaving its stored hash as it was.
fn rewrite_event(db: &sled::Db, seq: u64, change: impl FnOnce(&mut AuditRecord)) {
    let mut record = read_event(db, seq);
    change(&mut record);
    db.insert(event_key(seq), postcard::to_stdvec(&record).unwrap())
        .unwrap();
}

/// Removes the event `seq` and its entry in the customer's index.
fn remove_event(db: &sled::Db, seq: u64) {
    let record = read_event(db, seq);
    db.remove(event_key(seq)).unwrap().unwrap();
    if !record.customer_id.is_empty() {
        db.remove(customer_event_key(&record.customer_id, seq))
            .unwrap()
            .unwrap();
    }
}

/// A vault after the mixed calls, with its intact log checked.
async fn vault_with_history() -> (TestVault, Vec<pb::AuditEvent>) {
    let vault = common::spawn_vault().await;
    mixed_calls(&vault).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    assert!(verify_audit_log(&mut audit).await.unwrap().intact);
    (vault, events)
}

#[track_caller]
fn assert_broken_at(verification: &pb::VerifyAuditLogResponse, seq: u64) {
    assert!(!verification.intact, "{verification:?}");
    assert_eq!(verification.first_bad_seq, seq, "{verification:?}");
}

#[tokio::test]
async fn every_call_on_a_customer_is_recorded_with_who_what_why_and_how_it_ended() {
    let vault = common::spawn_vault().await;
    let wanted = mixed_calls(&vault).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;

    let got: Vec<Expected> = events.iter().map(described).collect();
    assert_eq!(got, wanted);
    assert_chained(&events);
    let times: Vec<i64> = events
        .iter()
        .map(|e| millis(e.at.as_ref().expect("every event has a time")))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let now = millis(&prost_types::Timestamp::from(std::time::SystemTime::now()));
    assert!(
        times.iter().all(|&t| now - 60_000 < t && t <= now),
        "{times:?}"
    );
}

#[tokio::test]
async fn a_call_without_a_usable_request_id_is_recorded_with_one_the_vault_made_up() {
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    get(&mut admin, "cust-nobody", &[], "billing")
        .await
        .unwrap_err();
    // Not a short printable token: replaced, not recorded as sent.
    let unusable = "id with spaces";
    admin
        .get_fields(with_request_id(
            common::GetFields::of("cust-nobody").build(),
            unusable,
        ))
        .await
        .unwrap_err();
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.outcome, "NOT_FOUND");
        assert_eq!(event.customer_id, "cust-nobody");
        assert!(!event.request_id.is_empty());
        assert_ne!(event.request_id, unusable);
    }
    assert_ne!(events[0].request_id, events[1].request_id);
}

#[tokio::test]
async fn no_audit_event_holds_a_value_only_names() {
    let (vault, events) = vault_with_history().await;
    assert!(!events.is_empty());
    for event in &events {
        let text = format!("{event:?}");
        for planted in PLANTED {
            assert!(!text.contains(planted), "{planted} in {text}");
        }
    }
    // The export's access history is made of the same events.
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let export = common::export(&mut privacy, "cust-1", pb::ExportFormat::Json)
        .await
        .unwrap();
    let document: serde_json::Value = serde_json::from_slice(&export.document).unwrap();
    let history = document["access_history"].to_string();
    for planted in PLANTED {
        assert!(!history.contains(planted), "{planted} in {history}");
    }
}

#[tokio::test]
async fn listing_and_verifying_the_audit_log_need_the_audit_read_scope() {
    let (vault, _) = vault_with_history().await;
    for key in [CHECKOUT_KEY, SUPPORT_KEY, WRITER_KEY] {
        let mut client = vault.audit(key).await;
        let status = expect_code(
            audit_events(&mut client, pb::ListAuditEventsRequest::default()).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("audit:read"), "{status:?}");
        let status = expect_code(verify_audit_log(&mut client).await, Code::PermissionDenied);
        assert!(status.message().contains("audit:read"), "{status:?}");
    }
    let mut anonymous = vault.audit("").await;
    expect_code(
        audit_events(&mut anonymous, pb::ListAuditEventsRequest::default()).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn events_are_filtered_by_customer_principal_time_and_limit() {
    let (vault, all) = vault_with_history().await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let expect = |keep: &dyn Fn(&pb::AuditEvent) -> bool| -> Vec<pb::AuditEvent> {
        all.iter().filter(|e| keep(e)).cloned().collect()
    };

    let of_customer = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            customer_id: "cust-1".into(),
            ..Default::default()
        },
    )
    .await;
    // Five calls on cust-1, and the search that found them.
    assert_eq!(of_customer.len(), 6);
    assert_eq!(of_customer, expect(&|e| e.customer_id == "cust-1"));

    let by_checkout = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            principal: "checkout".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_checkout.len(), 3);
    assert_eq!(by_checkout, expect(&|e| e.principal == "checkout"));

    let both = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            customer_id: "cust-1".into(),
            principal: "admin".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        both,
        expect(&|e| e.customer_id == "cust-1" && e.principal == "admin")
    );
    // The PutFields and the search.
    assert_eq!(both.len(), 2);

    let nobody = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            customer_id: "cust-nobody".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(nobody.is_empty(), "{nobody:?}");

    let future = prost_types::Timestamp::from(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let none = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            since: Some(future),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty(), "{none:?}");

    let since = all[3].at.unwrap();
    let recent = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            since: Some(since),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        recent,
        expect(&|e| millis(e.at.as_ref().unwrap()) >= millis(&since))
    );
    assert!(recent.contains(&all[3]) && recent.contains(all.last().unwrap()));

    let first_two = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            limit: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first_two, all[..2]);
    let first_of_checkout = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            principal: "checkout".into(),
            limit: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first_of_checkout, by_checkout[..1]);
    // No limit: the server's default, which covers this short log.
    let unlimited = list(&mut audit, pb::ListAuditEventsRequest::default()).await;
    assert_eq!(unlimited, all);
}

#[tokio::test]
async fn an_untouched_log_verifies_as_intact_up_to_its_newest_event() {
    let vault = common::spawn_vault().await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let empty = verify_audit_log(&mut audit).await.unwrap();
    assert_eq!(
        empty,
        pb::VerifyAuditLogResponse {
            intact: true,
            events_checked: 0,
            first_bad_seq: 0,
            head_hash: GENESIS.into(),
            complete: true,
            next_after_seq: 0,
            // Nothing trimmed: the chain starts at the genesis hash.
            anchor_seq: 0,
            anchor_hash: GENESIS.into(),
        }
    );

    mixed_calls(&vault).await;
    let events = all_audit_events(&mut audit).await;
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert_eq!(
        verification,
        pb::VerifyAuditLogResponse {
            intact: true,
            events_checked: events.len() as u64,
            first_bad_seq: 0,
            head_hash: events.last().unwrap().hash.clone(),
            complete: true,
            next_after_seq: 0,
            // Nothing trimmed: the chain starts at the genesis hash.
            anchor_seq: 0,
            anchor_hash: GENESIS.into(),
        }
    );
    // Verifying and listing record nothing themselves.
    assert_eq!(all_audit_events(&mut audit).await, events);
}

#[tokio::test]
async fn the_chain_survives_a_restart_and_goes_on_from_its_head() {
    let (mut vault, before) = vault_with_history().await;
    vault.restart().await;
    let mut admin = vault.admin().await;
    get(&mut admin, "cust-1", &["email"], "billing")
        .await
        .unwrap();
    let mut audit = vault.audit(ADMIN_KEY).await;
    let after = all_audit_events(&mut audit).await;
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.len(), before.len() + 1);
    assert_chained(&after);
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.events_checked, after.len() as u64);
}

#[tokio::test]
async fn an_event_whose_outcome_was_changed_on_disk_is_reported_as_the_first_bad_one() {
    if !common::sled_only(
        "an_event_whose_outcome_was_changed_on_disk_is_reported_as_the_first_bad_one",
    ) {
        return;
    }
    let (mut vault, events) = vault_with_history().await;
    let refused = events
        .iter()
        .find(|e| e.outcome == "PERMISSION_DENIED")
        .unwrap()
        .seq;
    tamper(&mut vault, |db| {
        rewrite_event(db, refused, |record| record.outcome = "ok".into())
    })
    .await;

    let mut audit = vault.audit(ADMIN_KEY).await;
    // The listing shows the forgery; verification catches it.
    let listed = all_audit_events(&mut audit).await;
    assert_eq!(listed[refused as usize - 1].outcome, "ok");
    assert_broken_at(&verify_audit_log(&mut audit).await.unwrap(), refused);
}

#[tokio::test]
async fn an_event_whose_field_names_were_changed_on_disk_is_reported_as_the_first_bad_one() {
    if !common::sled_only(
        "an_event_whose_field_names_were_changed_on_disk_is_reported_as_the_first_bad_one",
    ) {
        return;
    }
    let (mut vault, events) = vault_with_history().await;
    let read = events
        .iter()
        .find(|e| e.action == "GetFields" && e.outcome == "ok")
        .unwrap()
        .seq;
    tamper(&mut vault, |db| {
        rewrite_event(db, read, |record| record.fields = vec!["phone".into()])
    })
    .await;

    let mut audit = vault.audit(ADMIN_KEY).await;
    assert_broken_at(&verify_audit_log(&mut audit).await.unwrap(), read);
    // Later calls still append, but the break stays where it was.
    let mut admin = vault.admin().await;
    get(&mut admin, "cust-1", &[], "billing").await.unwrap();
    assert_broken_at(&verify_audit_log(&mut audit).await.unwrap(), read);
}

#[tokio::test]
async fn an_altered_event_given_a_fresh_hash_breaks_the_link_to_the_next_event() {
    if !common::sled_only("an_altered_event_given_a_fresh_hash_breaks_the_link_to_the_next_event") {
        return;
    }
    let (mut vault, _) = vault_with_history().await;
    tamper(&mut vault, |db| {
        rewrite_event(db, 2, |record| {
            record.principal = "support".into();
            record.hash = record.computed_hash();
        })
    })
    .await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    assert_broken_at(&verify_audit_log(&mut audit).await.unwrap(), 3);
}

#[tokio::test]
async fn an_event_removed_from_the_middle_of_the_log_is_reported() {
    if !common::sled_only("an_event_removed_from_the_middle_of_the_log_is_reported") {
        return;
    }
    let (mut vault, events) = vault_with_history().await;
    assert!(events.len() > 4);
    tamper(&mut vault, |db| remove_event(db, 3)).await;

    let mut audit = vault.audit(ADMIN_KEY).await;
    let listed = all_audit_events(&mut audit).await;
    assert_eq!(listed.len(), events.len() - 1);
    assert!(listed.iter().all(|e| e.seq != 3));
    assert_broken_at(&verify_audit_log(&mut audit).await.unwrap(), 3);
}

#[tokio::test]
async fn the_newest_event_removed_from_the_log_is_reported() {
    if !common::sled_only("the_newest_event_removed_from_the_log_is_reported") {
        return;
    }
    let (mut vault, events) = vault_with_history().await;
    let last = events.last().unwrap().seq;
    tamper(&mut vault, |db| remove_event(db, last)).await;

    let mut audit = vault.audit(ADMIN_KEY).await;
    assert_broken_at(&verify_audit_log(&mut audit).await.unwrap(), last);
}

#[tokio::test]
async fn erasing_a_customer_keeps_their_audit_trail_and_records_the_erasure() {
    let (vault, before) = vault_with_history().await;
    let of_customer: Vec<pb::AuditEvent> = before
        .iter()
        .filter(|e| e.customer_id == "cust-1")
        .cloned()
        .collect();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let receipt = delete_customer(&mut privacy, "cust-1").await.unwrap();

    let mut audit = vault.audit(ADMIN_KEY).await;
    let after = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            customer_id: "cust-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(after.len(), of_customer.len() + 1);
    assert_eq!(after[..of_customer.len()], of_customer[..]);
    let erasure = after.last().unwrap();
    assert_eq!(
        described(erasure),
        expected(
            "DeleteCustomer",
            "admin",
            "cust-1",
            &[],
            "",
            "ok",
            &erasure.request_id
        )
    );
    assert_eq!(erasure.hash, receipt.audit_hash);

    // Calls on the erased customer are recorded too.
    let mut admin = vault.admin().await;
    expect_code(
        get(&mut admin, "cust-1", &[], "billing").await,
        Code::NotFound,
    );
    let all = all_audit_events(&mut audit).await;
    let newest = all.last().unwrap();
    assert_eq!(
        (
            newest.action.as_str(),
            newest.customer_id.as_str(),
            newest.outcome.as_str()
        ),
        ("GetFields", "cust-1", "NOT_FOUND")
    );
    assert_chained(&all);
    let verification = verify_audit_log(&mut audit).await.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.events_checked, all.len() as u64);
    assert_eq!(verification.head_hash, newest.hash);
}

/// A vault after the mixed calls and enough reads for 25 events.
async fn vault_with_25_events() -> (TestVault, Vec<pb::AuditEvent>) {
    let (vault, events) = vault_with_history().await;
    let mut admin = vault.admin().await;
    for _ in events.len()..25 {
        get(&mut admin, "cust-1", &["email"], "billing")
            .await
            .unwrap();
    }
    let mut audit = vault.audit(ADMIN_KEY).await;
    let events = all_audit_events(&mut audit).await;
    assert_eq!(events.len(), 25);
    (vault, events)
}

/// Every page ListAuditEventsPage returns for `request`, following its tokens.
async fn pages(
    audit: &mut AuditClient,
    request: pb::ListAuditEventsRequest,
) -> Vec<Vec<pb::AuditEvent>> {
    let mut pages = Vec::new();
    let mut after_seq = request.after_seq;
    loop {
        let page = audit
            .list_audit_events_page(pb::ListAuditEventsRequest {
                after_seq,
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        let next = page.next_after_seq;
        if next != 0 {
            assert_eq!(Some(next), page.events.last().map(|e| e.seq), "{page:?}");
        }
        pages.push(page.events);
        if next == 0 {
            return pages;
        }
        assert!(pages.len() < 100, "the pages never end");
        after_seq = next;
    }
}

#[tokio::test]
async fn list_audit_events_pages_through_more_events_than_one_page() {
    let (vault, all) = vault_with_25_events().await;
    let mut audit = vault.audit(ADMIN_KEY).await;

    let paged = pages(
        &mut audit,
        pb::ListAuditEventsRequest {
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    let sizes: Vec<usize> = paged.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(paged.concat(), all);

    // Filters hold across pages; a last page that is full ends the walk.
    let of_customer: Vec<pb::AuditEvent> = all
        .iter()
        .filter(|e| e.customer_id == "cust-1")
        .cloned()
        .collect();
    let paged = pages(
        &mut audit,
        pb::ListAuditEventsRequest {
            customer_id: "cust-1".into(),
            limit: of_customer.len() as u32 / 2,
            ..Default::default()
        },
    )
    .await;
    assert!(paged.len() >= 2, "{paged:?}");
    assert_eq!(paged.concat(), of_customer);
    let paged = pages(
        &mut audit,
        pb::ListAuditEventsRequest {
            limit: 5,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paged.len(), 5);
    assert_eq!(paged.concat(), all);

    // The stream takes the same token.
    let rest = list(
        &mut audit,
        pb::ListAuditEventsRequest {
            after_seq: all[19].seq,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest, all[20..]);
}

async fn verify_from(
    audit: &mut AuditClient,
    after_seq: u64,
    max_events: u32,
) -> pb::VerifyAuditLogResponse {
    audit
        .verify_audit_log(pb::VerifyAuditLogRequest {
            after_seq,
            max_events,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn verify_audit_log_resumes_where_it_stopped_until_it_reaches_the_head() {
    let (vault, all) = vault_with_25_events().await;
    let head = all.last().unwrap().hash.clone();
    let mut audit = vault.audit(ADMIN_KEY).await;

    let mut after_seq = 0;
    let mut calls = Vec::new();
    loop {
        let verification = verify_from(&mut audit, after_seq, 10).await;
        assert!(verification.intact, "{verification:?}");
        assert_eq!(verification.head_hash, head);
        assert!(verification.events_checked <= 10, "{verification:?}");
        calls.push(verification.clone());
        if verification.complete {
            break;
        }
        after_seq = verification.next_after_seq;
        assert!(calls.len() < 10, "{calls:?}");
    }
    let stops: Vec<(u64, u64, bool)> = calls
        .iter()
        .map(|v| (v.events_checked, v.next_after_seq, v.complete))
        .collect();
    assert_eq!(stops, [(10, 10, false), (10, 20, false), (5, 0, true)]);

    // Without a bound, the server's default covers this short log at once.
    let whole = verify_audit_log(&mut audit).await.unwrap();
    assert!(whole.intact && whole.complete, "{whole:?}");
    assert_eq!(whole.events_checked, 25);
    // Resuming at the newest event checks nothing more and is complete.
    let at_head = verify_from(&mut audit, 25, 10).await;
    assert!(at_head.intact && at_head.complete, "{at_head:?}");
    assert_eq!(at_head.events_checked, 0);
    // A resume point past the newest event is a mistake, named as one.
    let status = expect_code(
        audit
            .verify_audit_log(pb::VerifyAuditLogRequest {
                after_seq: 26,
                max_events: 10,
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("after_seq 26"), "{status:?}");
}

/// Changes the stored event `seq` (its stored hash stays as it was), on
/// either engine: on sled with the vault stopped, on PostgreSQL in its table.
async fn rewrite_stored_event(
    vault: &mut TestVault,
    seq: u64,
    change: impl FnOnce(&mut AuditRecord),
) {
    let Some(database) = &vault.database else {
        tamper(vault, |db| rewrite_event(db, seq, change)).await;
        return;
    };
    let client = database.client().await;
    let seq = seq as i64;
    let row = client
        .query_one("SELECT record FROM audit_events WHERE seq = $1", &[&seq])
        .await
        .unwrap();
    let mut record: AuditRecord = postcard::from_bytes(row.get::<_, &[u8]>(0)).unwrap();
    change(&mut record);
    let bytes = postcard::to_stdvec(&record).unwrap();
    client
        .execute(
            "UPDATE audit_events SET record = $1 WHERE seq = $2",
            &[&bytes, &seq],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_resumed_verification_still_finds_a_tampered_event() {
    let (mut vault, all) = vault_with_25_events().await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let first = verify_from(&mut audit, 0, 10).await;
    assert!(first.intact && !first.complete, "{first:?}");
    assert_eq!(first.next_after_seq, 10);

    // An event past the resume point, changed on disk.
    rewrite_stored_event(&mut vault, 15, |record| {
        record.outcome = "PERMISSION_DENIED".into()
    })
    .await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let resumed = verify_from(&mut audit, first.next_after_seq, 10).await;
    assert_broken_at(&resumed, 15);
    assert!(resumed.complete, "{resumed:?}");
    let restored = all[14].outcome.clone();
    rewrite_stored_event(&mut vault, 15, |record| record.outcome = restored).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    let resumed = verify_from(&mut audit, first.next_after_seq, 100).await;
    assert!(resumed.intact && resumed.complete, "{resumed:?}");

    // The event a resumption starts from, changed after it was checked.
    rewrite_stored_event(&mut vault, 10, |record| record.principal = "support".into()).await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    assert_broken_at(&verify_from(&mut audit, 10, 10).await, 10);
    // Given a fresh hash, it no longer links to the event after it.
    rewrite_stored_event(&mut vault, 10, |record| {
        record.hash = record.computed_hash()
    })
    .await;
    let mut audit = vault.audit(ADMIN_KEY).await;
    assert_broken_at(&verify_from(&mut audit, 10, 10).await, 11);
    // A walk from the start finds it where it is.
    assert_broken_at(&verify_from(&mut audit, 0, 100).await, 11);
}
