//! Keys for security teams: `piivault.v1.KeyAdminService`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::pb::{self, key_admin_service_server::KeyAdminService};
use crate::vault::{
    Action, CallNames, CustomerId, MasterRotationStatus, MigrationAim, RotationProgress, Vault,
};

use super::call::handle;
use super::convert::timestamp;
use super::metrics::Metrics;

pub struct KeyAdminApi {
    pub vault: Arc<Vault>,
    pub metrics: Arc<Metrics>,
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::RotationProgress, Status>> + Send>>;
type MigrationStream =
    Pin<Box<dyn Stream<Item = Result<pb::RootOfTrustMigrationProgress, Status>> + Send>>;

fn progress_message(progress: RotationProgress) -> pb::RotationProgress {
    pb::RotationProgress {
        new_master_version: progress.new_master_version,
        rewrapped: progress.rewrapped,
        total: progress.total,
        done: progress.done,
        retired_versions: progress.retired_versions,
    }
}

fn master_rotation_message(rotation: MasterRotationStatus) -> pb::MasterRotationStatus {
    pb::MasterRotationStatus {
        target_version: rotation.target_version,
        retire_previous: rotation.retire_previous,
        started: Some(timestamp(rotation.started_at_ms)),
        progress_known: rotation.rewrapped.is_some(),
        rewrapped: rotation.rewrapped.unwrap_or_default(),
        total: rotation.total.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl KeyAdminService for KeyAdminApi {
    type RotateMasterKeyStream = ProgressStream;
    type MigrateRootOfTrustStream = MigrationStream;

    async fn migrate_root_of_trust(
        &self,
        request: Request<pb::MigrateRootOfTrustRequest>,
    ) -> Result<Response<Self::MigrateRootOfTrustStream>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "MigrateRootOfTrust",
            request,
            |caller, req| async move {
                let names = CallNames::default();
                let call = self
                    .vault
                    .audited(&caller, Action::MigrateRootOfTrust, names);
                let aim = if req.renew_material {
                    MigrationAim::RenewMaterial
                } else {
                    MigrationAim::MoveToConfigured
                };
                let receiver = call
                    .run(|call| async move { self.vault.start_root_migration(call, aim).await })
                    .await?;
                let stream = WatchStream::from_changes(receiver).filter_map(|latest| {
                    latest.map(|step| step.map(migration_message).map_err(Status::from))
                });
                Ok(Box::pin(stream) as MigrationStream)
            },
        )
        .await
    }

    async fn rotate_master_key(
        &self,
        request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<Self::RotateMasterKeyStream>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "RotateMasterKey",
            request,
            |caller, req| async move {
                let names = CallNames::default();
                let call = self.vault.audited(&caller, Action::RotateMasterKey, names);
                let receiver = call
                    .run(|call| async move {
                        (self.vault.start_master_rotation(call, req.retire_previous)).await
                    })
                    .await?;
                // Each message is the latest progress; steps a slow reader
                // missed are skipped, the last one (done or failed) never is.
                let stream = WatchStream::from_changes(receiver).filter_map(|latest| {
                    latest.map(|step| step.map(progress_message).map_err(Status::from))
                });
                Ok(Box::pin(stream) as ProgressStream)
            },
        )
        .await
    }

    async fn rotate_customer_key(
        &self,
        request: Request<pb::RotateCustomerKeyRequest>,
    ) -> Result<Response<pb::RotateCustomerKeyResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "RotateCustomerKey",
            request,
            |caller, req| async move {
                let names = CallNames::customer(&req.customer_id);
                let call = self
                    .vault
                    .audited(&caller, Action::RotateCustomerKey, names);
                let (new_key_version, values_reencrypted) = call
                    .run(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        self.vault
                            .keys()
                            .rotate_customer_key(&call, &customer)
                            .await
                    })
                    .await?;
                Ok(pb::RotateCustomerKeyResponse {
                    new_key_version,
                    values_reencrypted,
                })
            },
        )
        .await
    }

    async fn get_key_status(
        &self,
        request: Request<pb::GetKeyStatusRequest>,
    ) -> Result<Response<pb::KeyStatus>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "GetKeyStatus",
            request,
            |caller, req| async move {
                let names = CallNames::customer(&req.customer_id);
                let call = self.vault.audited(&caller, Action::GetKeyStatus, names);
                let status = call
                    .read(|call| async move {
                        // An empty id asks about the vault's keys alone.
                        let customer = match req.customer_id.as_str() {
                            "" => None,
                            id => Some(CustomerId::parse(id)?),
                        };
                        self.vault.keys().key_status(&call, customer.as_ref()).await
                    })
                    .await?;
                let customer = status.customer_key.unwrap_or_default();
                Ok(pb::KeyStatus {
                    active_master_version: status.active_master_version,
                    master_versions: status.master_versions,
                    customers: status.customers,
                    last_master_rotation: Some(timestamp(status.last_master_rotation_ms)),
                    customer_key_version: customer.version,
                    customer_key_created: (customer.created_at_ms > 0)
                        .then(|| timestamp(customer.created_at_ms)),
                    customer_key_encryptions: customer.encryptions,
                    master_rotation: status.master_rotation.map(master_rotation_message),
                    root_of_trust: Some(root_of_trust_message(status.root_of_trust)),
                })
            },
        )
        .await
    }
}

fn root_of_trust_message(status: crate::vault::RootOfTrustStatus) -> pb::RootOfTrustStatus {
    pb::RootOfTrustStatus {
        kind: status.kind.to_owned(),
        location: status.location,
        guarantee: status.guarantee.to_owned(),
        reachable: status.reachable,
        awaiting_destruction: status.awaiting_destruction,
        superseded_awaiting_destruction: status.superseded_awaiting_destruction,
        migration_target: status.migration_target.unwrap_or_default().to_owned(),
    }
}

fn migration_message(step: crate::vault::MigrationProgress) -> pb::RootOfTrustMigrationProgress {
    pb::RootOfTrustMigrationProgress {
        to: step.to.to_owned(),
        sealed: step.sealed,
        total: step.total,
        done: step.done,
    }
}
