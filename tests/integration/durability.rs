//! Acknowledged means durable: writes a client saw succeed survive `kill -9`.

use crate::common;

use common::{field, VaultProcess, ADMIN_KEY};
use pii_vault::pb::{self, FieldKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_before_kill_9_are_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log = dir.path().join("vault.log");
    let process = VaultProcess::start(&paths, &log);
    let client = process.vault(ADMIN_KEY).await;

    // Many concurrent writers, so acknowledgements come from shared syncs.
    let writers: Vec<_> = (0..64)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let fields = vec![
                    field("email", FieldKind::Email, &format!("user{i}@example.com")),
                    field("note", FieldKind::Generic, &format!("note number {i}")),
                ];
                common::put(
                    &mut client,
                    common::PutFields::of(&format!("cust-{i}")).fields(fields),
                )
                .await
                .unwrap()
                .tokens["note"]
                    .clone()
            })
        })
        .collect();
    let mut note_tokens = Vec::new();
    for writer in writers {
        note_tokens.push(writer.await.unwrap());
    }
    let mut client = client;
    let standalone = common::tokenize(
        &mut client,
        common::Tokenize::of("cust-0").item(FieldKind::Ssn, "123-45-6789", pb::TokenFormat::Random),
    )
    .await
    .unwrap();
    process.kill9();

    let process = VaultProcess::start(&paths, &log);
    let mut client = process.vault(ADMIN_KEY).await;
    for i in 0..64 {
        let response = common::get(&mut client, &format!("cust-{i}"), &[], "billing")
            .await
            .unwrap_or_else(|status| panic!("cust-{i} lost after kill -9: {status}"));
        assert_eq!(
            common::value_of(&response, "email").value,
            format!("user{i}@example.com")
        );
        assert_eq!(
            common::value_of(&response, "note").value,
            format!("note number {i}")
        );
    }
    let resolved = common::detokenize(&mut client, &note_tokens, "billing")
        .await
        .unwrap();
    for (i, result) in resolved.iter().enumerate() {
        assert_eq!(result.value, format!("note number {i}"));
    }
    let resolved = common::detokenize(&mut client, &standalone, "billing")
        .await
        .unwrap();
    assert_eq!(resolved[0].value, "123-45-6789");
    process.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_acknowledged_before_kill_9_stays_erased() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log = dir.path().join("vault.log");
    let process = VaultProcess::start(&paths, &log);
    let mut client = process.vault(ADMIN_KEY).await;
    let tokens = common::put(
        &mut client,
        common::PutFields::of("gone").field("ssn", FieldKind::Ssn, "123-45-6789"),
    )
    .await
    .unwrap()
    .tokens;
    let mut privacy = pii_vault::pb::privacy_service_client::PrivacyServiceClient::with_interceptor(
        process.channel().await,
        common::Bearer::new(ADMIN_KEY),
    );
    privacy
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "gone".into(),
            reason: "customer request".into(),
        })
        .await
        .unwrap();
    process.kill9();

    let process = VaultProcess::start(&paths, &log);
    let mut client = process.vault(ADMIN_KEY).await;
    let status = common::get(&mut client, "gone", &[], "billing")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let resolved = common::detokenize(&mut client, &[tokens["ssn"].clone()], "billing")
        .await
        .unwrap();
    assert_eq!(
        resolved[0].error.as_ref().unwrap().code,
        tonic::Code::NotFound as i32
    );
    process.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_gracefully_and_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log = dir.path().join("vault.log");
    let process = VaultProcess::start(&paths, &log);
    let mut client = process.vault(ADMIN_KEY).await;
    common::put(
        &mut client,
        common::PutFields::of("kept").field("name", FieldKind::Name, "Ada Lovelace"),
    )
    .await
    .unwrap();
    let status = process.terminate();
    assert!(status.success(), "vault exited with {status} on SIGTERM");
    // The log is written by a thread of its own: what it queued, up to the
    // last line, is in the file once the process has exited.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("store flushed"),
        "no graceful shutdown in the log:\n{logged}"
    );
    assert!(
        logged.contains("call finished"),
        "the call's line is missing:\n{logged}"
    );

    let process = VaultProcess::start(&paths, &log);
    let mut client = process.vault(ADMIN_KEY).await;
    let response = common::get(&mut client, "kept", &["name"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&response, "name").value, "Ada Lovelace");
    process.kill9();
}
