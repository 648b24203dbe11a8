//! Abuse limits: per-principal rate limits from the policy, load shedding past
//! the global concurrency limit, the connection limit, and call deadlines.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{field, Bearer, ADMIN_KEY};
use pii_vault::app::{self, VaultOptions};
use pii_vault::pb::{self, vault_service_client::VaultServiceClient, FieldKind};
use pii_vault::policy::api_key_sha256_hex;
use pii_vault::server::{RunningServer, ServerLimits, ServerOptions};
use tonic::transport::Channel;
use tonic::Code;

const LIMITED_KEY: &str = "pv_test_limited_key";

fn limited_policy() -> String {
    format!(
        r#"{}
[[principals]]
name = "limited"
api_key_sha256 = "{}"
scopes = ["data:read", "tokens:detokenize"]
purposes = ["billing"]
[principals.disclosure]
"*" = "plaintext"
[principals.rate_limits]
reads_per_second = 3.0
detokenize_per_second = 10.0
"#,
        common::test_policy(),
        api_key_sha256_hex(LIMITED_KEY)
    )
}

async fn serve(limits: ServerLimits) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &limited_policy());
    let vault = app::open_vault(&paths, &VaultOptions::default())
        .await
        .unwrap();
    let options = ServerOptions {
        limits,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    (
        pii_vault::server::start(Arc::new(vault), options)
            .await
            .unwrap(),
        dir,
    )
}

async fn channel(server: &RunningServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.local_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_limits_is_refused_and_the_refusal_is_audited() {
    let (server, _dir) = serve(ServerLimits::default()).await;
    let mut admin =
        VaultServiceClient::with_interceptor(channel(&server).await, Bearer::new(ADMIN_KEY));
    let tokens = common::tokenize(
        &mut admin,
        common::Tokenize::of("rated").items(
            (0..11)
                .map(|_| (FieldKind::Generic, "v", pb::TokenFormat::Random))
                .collect(),
        ),
    )
    .await
    .unwrap();
    let mut limited =
        VaultServiceClient::with_interceptor(channel(&server).await, Bearer::new(LIMITED_KEY));
    for _ in 0..3 {
        common::get(&mut limited, "rated", &[], "billing")
            .await
            .unwrap();
    }
    let refused = common::get(&mut limited, "rated", &[], "billing")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("rate limit"),
        "{}",
        refused.message()
    );
    // The admin has no limit.
    for _ in 0..10 {
        common::get(&mut admin, "rated", &[], "billing")
            .await
            .unwrap();
    }
    // Detokenization counts values: 11 in one call is over 10 per second.
    let refused = common::detokenize(&mut limited, &tokens, "billing")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    common::detokenize(&mut limited, &tokens[..5], "billing")
        .await
        .unwrap();

    let mut audit = pb::audit_service_client::AuditServiceClient::with_interceptor(
        channel(&server).await,
        Bearer::new(ADMIN_KEY),
    );
    let events = common::audit_events(
        &mut audit,
        pb::ListAuditEventsRequest {
            principal: "limited".into(),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let refusals = events
        .iter()
        .filter(|e| e.outcome == "RESOURCE_EXHAUSTED")
        .count();
    assert_eq!(refusals, 2, "{events:?}");
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(700)).await;
    common::get(&mut limited, "rated", &[], "billing")
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_concurrency_limit_are_shed_at_once() {
    let limits = ServerLimits {
        max_concurrent_calls: 2,
        ..ServerLimits::default()
    };
    let (server, _dir) = serve(limits).await;
    let admin =
        VaultServiceClient::with_interceptor(channel(&server).await, Bearer::new(ADMIN_KEY));
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut client = admin.clone();
            tokio::spawn(async move {
                common::put(
                    &mut client,
                    common::PutFields::of(&format!("shed-{i}")).field("n", FieldKind::Generic, "v"),
                )
                .await
            })
        })
        .collect();
    let mut shed = 0;
    let mut served = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                shed += 1;
            }
        }
    }
    assert!(shed > 0, "nothing was shed");
    assert!(served > 0, "nothing was served");
    server.shutdown().await.unwrap();
}

/// Probes are never shed: a brown-out must not fail every replica's probes
/// at once (issue #19, item 5). With no call slot free at all, every data
/// call is shed and health still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_answered_past_the_concurrency_limit() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let limits = ServerLimits {
        max_concurrent_calls: 0,
        ..ServerLimits::default()
    };
    let (server, _dir) = serve(limits).await;
    let mut admin =
        VaultServiceClient::with_interceptor(channel(&server).await, Bearer::new(ADMIN_KEY));
    let shed = common::put(
        &mut admin,
        common::PutFields::of("shed").field("n", FieldKind::Generic, "v"),
    )
    .await;
    let status = common::expect_code(shed, Code::ResourceExhausted);
    assert!(
        status.message().contains("calls at once"),
        "{}",
        status.message()
    );
    let health = HealthClient::new(channel(&server).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is not shed");
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_not_served() {
    let limits = ServerLimits {
        max_connections: 2,
        ..ServerLimits::default()
    };
    let (server, _dir) = serve(limits).await;
    let first = channel(&server).await;
    let second = channel(&server).await;
    let health = |channel: Channel| async move {
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
    };
    health(first.clone()).await.unwrap();
    health(second.clone()).await.unwrap();
    let third = tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr))
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(300))
        .connect_lazy();
    assert!(
        health(third.clone()).await.is_err(),
        "a third connection was served"
    );
    drop((first, second, third));
    // Shutting down waits for open connections; the test must not hang on it.
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_is_abandoned() {
    // The server's own limit, far below what a 400 KB write takes; the
    // client sets none, so the answer is the server's.
    let limits = ServerLimits {
        call_timeout: Duration::from_millis(1),
        ..ServerLimits::default()
    };
    let (server, _dir) = serve(limits).await;
    let mut admin =
        VaultServiceClient::with_interceptor(channel(&server).await, Bearer::new(ADMIN_KEY));
    let bulky = (0..100)
        .map(|i| field(&format!("f{i}"), FieldKind::Generic, &"v".repeat(4000)))
        .collect();
    let status = common::put(&mut admin, common::PutFields::of("late").fields(bulky))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("deadline"),
        "{}",
        status.message()
    );
    let metrics = common::scrape_metrics(server.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("piivault_timed_out_calls_total 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// A customer's fields are capped (`--max-fields-per-customer`): past the cap
/// a write that adds fields is refused and changes nothing, while replacing
/// fields the customer holds still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_holds_at_most_the_configured_number_of_fields() {
    let mut options = VaultOptions::default();
    options.limits.max_fields_per_customer = 3;
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    let mut admin = vault.admin().await;
    let three: Vec<_> = (0..3)
        .map(|i| field(&format!("f{i}"), FieldKind::Generic, "v"))
        .collect();
    common::put(&mut admin, common::PutFields::of("capped").fields(three))
        .await
        .unwrap();
    let refused = common::put(
        &mut admin,
        common::PutFields::of("capped")
            .field("f0", FieldKind::Generic, "new")
            .field("f3", FieldKind::Generic, "v"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("at most 3 fields"),
        "{}",
        refused.message()
    );
    let read = common::get(&mut admin, "capped", &[], "billing")
        .await
        .unwrap();
    assert_eq!(read.fields.len(), 3);
    assert_eq!(
        common::value_of(&read, "f0").value,
        "v",
        "the refused write changed nothing"
    );
    common::put(
        &mut admin,
        common::PutFields::of("capped").field("f2", FieldKind::Generic, "w"),
    )
    .await
    .unwrap();
}

/// Standalone tokens of a customer are capped (`--max-tokens-per-customer`):
/// a Tokenize that would take the customer past it is refused and changes
/// nothing, fields do not count, and reusing a deterministic token adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_holds_at_most_the_configured_number_of_standalone_tokens() {
    let mut options = VaultOptions::default();
    options.limits.max_tokens_per_customer = 5;
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    let mut admin = vault.admin().await;
    let card = (
        FieldKind::CardNumber,
        "4242424242424242",
        pb::TokenFormat::Deterministic,
    );
    let random = (FieldKind::Generic, "v", pb::TokenFormat::Random);

    // Six at once for a new customer: refused, and no customer is made.
    let status = common::expect_code(
        common::tokenize(
            &mut admin,
            common::Tokenize::of("capped").items(vec![random; 6]),
        )
        .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("at most 5 standalone tokens"),
        "{status:?}"
    );
    common::expect_code(
        common::get(&mut admin, "capped", &[], "billing").await,
        Code::NotFound,
    );

    // Fields have tokens of their own, which do not count.
    let fields: Vec<_> = (0..3)
        .map(|i| field(&format!("f{i}"), FieldKind::Generic, "v"))
        .collect();
    common::put(&mut admin, common::PutFields::of("capped").fields(fields))
        .await
        .unwrap();
    let mut held = common::tokenize(
        &mut admin,
        common::Tokenize::of("capped").items(vec![card, random, random]),
    )
    .await
    .unwrap();
    held.extend(
        common::tokenize(
            &mut admin,
            common::Tokenize::of("capped").items(vec![random, random]),
        )
        .await
        .unwrap(),
    );
    for more in [vec![random], vec![card, random]] {
        let status = common::expect_code(
            common::tokenize(&mut admin, common::Tokenize::of("capped").items(more)).await,
            Code::FailedPrecondition,
        );
        let message = status.message();
        assert!(
            message.contains("at most 5 standalone tokens"),
            "{status:?}"
        );
        assert!(message.contains("holds 5"), "{status:?}");
        assert!(!message.contains("4242"), "{status:?}");
    }
    // At the cap, the deterministic token of a value held is still given.
    let again = common::tokenize(&mut admin, common::Tokenize::of("capped").items(vec![card]))
        .await
        .unwrap();
    assert_eq!(again, held[..1]);
    // The refusals changed nothing: the five tokens resolve, nothing more.
    let resolved = common::detokenize(&mut admin, &held, "billing")
        .await
        .unwrap();
    assert_eq!(resolved.len(), 5);
    let receipt = common::delete_customer(&mut vault.privacy(ADMIN_KEY).await, "capped")
        .await
        .unwrap();
    assert_eq!(receipt.fields_erased, 3);
    assert_eq!(receipt.tokens_erased, 3 + 5);
}

/// A customer at the default caps (1000 fields, 10,000 standalone tokens) is
/// re-keyed and erased each within the default call deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_at_the_caps_is_rekeyed_and_erased_within_the_call_deadline() {
    let limits = VaultOptions::default().limits;
    let deadline = ServerLimits::default().call_timeout;
    let vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let started = std::time::Instant::now();
    for batch in 0..limits.max_fields_per_customer / limits.max_fields_per_request {
        let fields = (0..limits.max_fields_per_request)
            .map(|i| {
                let name = format!("f{batch}_{i}");
                field(&name, FieldKind::Generic, "some value")
            })
            .collect();
        common::put(&mut admin, common::PutFields::of("big").fields(fields))
            .await
            .unwrap();
    }
    let random = (FieldKind::Generic, "some value", pb::TokenFormat::Random);
    for _ in 0..limits.max_tokens_per_customer / limits.max_batch_items {
        common::tokenize(
            &mut admin,
            common::Tokenize::of("big").items(vec![random; limits.max_batch_items]),
        )
        .await
        .unwrap();
    }
    // The caps hold.
    common::expect_code(
        common::tokenize(&mut admin, common::Tokenize::of("big").items(vec![random])).await,
        Code::FailedPrecondition,
    );
    common::expect_code(
        common::put(
            &mut admin,
            common::PutFields::of("big").field("one_more", FieldKind::Generic, "v"),
        )
        .await,
        Code::FailedPrecondition,
    );
    eprintln!("built the customer in {:?}", started.elapsed());

    let values = (limits.max_fields_per_customer + limits.max_tokens_per_customer) as u64;
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let mut request = tonic::Request::new(pb::RotateCustomerKeyRequest {
        customer_id: "big".into(),
    });
    request.set_timeout(deadline);
    let started = std::time::Instant::now();
    let rotated = keys
        .rotate_customer_key(request)
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    eprintln!("re-keyed {values} values in {took:?}");
    assert!(took < deadline, "re-key took {took:?}");
    // Every value and the ledger-free record: fields and standalone tokens.
    assert_eq!(rotated.values_reencrypted, values);

    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let mut request = tonic::Request::new(pb::DeleteCustomerRequest {
        customer_id: "big".into(),
        reason: "customer request".into(),
    });
    request.set_timeout(deadline);
    let started = std::time::Instant::now();
    let receipt = privacy.delete_customer(request).await.unwrap().into_inner();
    let took = started.elapsed();
    eprintln!("erased in {took:?}");
    assert!(took < deadline, "erasure took {took:?}");
    assert_eq!(
        receipt.fields_erased as usize,
        limits.max_fields_per_customer
    );
    assert_eq!(receipt.tokens_erased as u64, values);
    common::expect_code(
        common::get(&mut admin, "big", &[], "billing").await,
        Code::NotFound,
    );
}
