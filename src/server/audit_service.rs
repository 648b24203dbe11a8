//! The audit trail for security teams: `piivault.v1.AuditService`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb::{self, audit_service_server::AuditService};
use crate::vault::{AuditFilter, Vault};

use super::call::handle;
use super::convert;
use super::metrics::Metrics;

pub struct AuditApi {
    pub vault: Arc<Vault>,
    pub metrics: Arc<Metrics>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    type ListAuditEventsStream = EventStream;

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<Self::ListAuditEventsStream>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ListAuditEvents",
            request,
            |caller, req| async move {
                let filter = AuditFilter {
                    customer_id: req.customer_id,
                    principal: req.principal,
                    since_ms: req.since.as_ref().map(convert::millis),
                    limit: req.limit,
                };
                let events = self.vault.list_audit_events(&caller, filter).await?;
                let stream =
                    tokio_stream::iter(events.into_iter().map(|e| Ok(convert::audit_event(e))));
                Ok(Box::pin(stream) as EventStream)
            },
        )
        .await
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "VerifyAuditLog",
            request,
            |caller, _req| async move {
                let verification = self.vault.verify_audit_log(&caller).await?;
                Ok(pb::VerifyAuditLogResponse {
                    intact: verification.intact,
                    events_checked: verification.events_checked,
                    first_bad_seq: verification.first_bad_seq,
                    head_hash: verification.head_hash,
                })
            },
        )
        .await
    }
}
