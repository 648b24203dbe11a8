//! Abuse limits: per-principal rate limits from the policy, load shedding past
//! the global concurrency limit, the connection limit, and call deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
        "rated",
        (0..11)
            .map(|_| (FieldKind::Generic, "v", pb::TokenFormat::Random))
            .collect(),
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
                    &format!("shed-{i}"),
                    vec![field("n", FieldKind::Generic, "v")],
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
    let (server, _dir) = serve(ServerLimits::default()).await;
    let mut admin =
        VaultServiceClient::with_interceptor(channel(&server).await, Bearer::new(ADMIN_KEY));
    let mut request = tonic::Request::new(pb::PutFieldsRequest {
        customer_id: "late".into(),
        fields: vec![field("n", FieldKind::Generic, "v")],
        purpose: "billing".into(),
        token_format: 0,
    });
    request.set_timeout(Duration::from_nanos(1));
    let status = admin.put_fields(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    server.shutdown().await.unwrap();
}
