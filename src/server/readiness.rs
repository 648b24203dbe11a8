//! Readiness that follows the store: every service turns NOT_SERVING while the
//! store cannot take writes (its disk nearly full, its database gone), and
//! SERVING again once it can. A store that failed for good (a sync to disk
//! failed) also ends the process, so that its supervisor restarts it on what
//! is durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::metrics::Metrics;
use crate::pb;
use crate::store::StoreHealth;
use crate::vault::Vault;

/// How often the store's health is read.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The services whose status follows the store's ("" is the whole server).
const SERVICES: [&str; 5] = [
    "",
    pb::vault_service_server::SERVICE_NAME,
    pb::privacy_service_server::SERVICE_NAME,
    pb::audit_service_server::SERVICE_NAME,
    pb::key_admin_service_server::SERVICE_NAME,
];

/// Follows the store's health until `stopped`; sends a failure that needs a
/// restart on `failed`.
pub(super) async fn follow_store(
    vault: Arc<Vault>,
    reporter: HealthReporter,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) {
    let mut serving = true;
    loop {
        let health = vault.store_health().await;
        if *stopped.borrow() {
            return;
        }
        let now_serving = health == StoreHealth::Serving;
        metrics.set_store_serving(now_serving);
        if now_serving != serving {
            set_status(&reporter, now_serving).await;
            match &health {
                StoreHealth::Serving => tracing::info!("the store serves again: SERVING"),
                StoreHealth::Degraded(why) | StoreHealth::Failed(why) => {
                    tracing::error!(reason = %why, "the store cannot take writes: NOT_SERVING");
                }
            }
            serving = now_serving;
        }
        if let StoreHealth::Failed(why) = health {
            failed.send_replace(Some(why));
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// The health service name that follows the root of trust. The vault serves
/// requests without it, so the whole server stays SERVING; this one turns
/// NOT_SERVING while the root of trust is out of reach.
pub const ROOT_OF_TRUST_HEALTH_SERVICE: &str = "piivault.v1.RootOfTrust";

/// How often the root of trust is asked whether it answers.
const ROOT_CHECK_EVERY: Duration = Duration::from_secs(15);

/// Follows the root of trust's reachability until `stopped`.
pub(super) async fn follow_root_of_trust(
    vault: Arc<Vault>,
    reporter: HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let status = if vault.keys().check_root_of_trust().await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter
            .set_service_status(ROOT_OF_TRUST_HEALTH_SERVICE, status)
            .await;
        tokio::select! {
            _ = tokio::time::sleep(ROOT_CHECK_EVERY) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn set_status(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
