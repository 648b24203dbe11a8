//! The audit trail for security teams: `piivault.v1.AuditService`.

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb::{self, audit_service_server::AuditService};
use crate::vault::{Action, AuditFilter, CallNames, TrimRequest, Vault, VerifyFrom};

use super::call::handle;
use super::convert;
use super::metrics::Metrics;

/// The most one ListAuditEventsPage response holds, in encoded bytes: well
/// under the message size limit, whatever the events' field lists.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

pub struct AuditApi {
    pub vault: Arc<Vault>,
    pub metrics: Arc<Metrics>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEvent, Status>> + Send>>;

fn audit_filter(request: pb::ListAuditEventsRequest) -> AuditFilter {
    AuditFilter {
        customer_id: request.customer_id,
        principal: request.principal,
        since_ms: request.since.as_ref().map(convert::millis),
        limit: request.limit,
        after_seq: request.after_seq,
    }
}

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
                let events = self
                    .vault
                    .audit()
                    .list_audit_events(&caller, audit_filter(req))
                    .await?;
                let stream =
                    tokio_stream::iter(events.into_iter().map(|e| Ok(convert::audit_event(e))));
                Ok(Box::pin(stream) as EventStream)
            },
        )
        .await
    }

    async fn list_audit_events_page(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsPageResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ListAuditEventsPage",
            request,
            |caller, req| async move {
                let page = self
                    .vault
                    .audit()
                    .list_audit_page(&caller, audit_filter(req))
                    .await?;
                let mut events = Vec::with_capacity(page.events.len());
                let mut bytes = 0;
                let mut more = page.more;
                for record in page.events {
                    let event = convert::audit_event(record);
                    let size = event.encoded_len() + 8;
                    // Always at least one event, so that every page moves on.
                    if !events.is_empty() && bytes + size > MAX_PAGE_BYTES {
                        more = true;
                        break;
                    }
                    bytes += size;
                    events.push(event);
                }
                let next_after_seq = match events.last() {
                    Some(last) if more => last.seq,
                    _ => 0,
                };
                Ok(pb::ListAuditEventsPageResponse {
                    events,
                    next_after_seq,
                })
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
            |caller, req| async move {
                let from = VerifyFrom {
                    after_seq: req.after_seq,
                    max_events: req.max_events,
                };
                let verification = self.vault.audit().verify_audit_log(&caller, from).await?;
                Ok(pb::VerifyAuditLogResponse {
                    intact: verification.intact,
                    events_checked: verification.events_checked,
                    first_bad_seq: verification.first_bad_seq,
                    head_hash: verification.head_hash,
                    complete: verification.complete,
                    next_after_seq: verification.next_after_seq,
                    anchor_seq: verification.anchor_seq,
                    anchor_hash: verification.anchor_hash,
                })
            },
        )
        .await
    }

    async fn trim_audit_log(
        &self,
        request: Request<pb::TrimAuditLogRequest>,
    ) -> Result<Response<pb::TrimAuditLogResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "TrimAuditLog",
            request,
            |caller, req| async move {
                let request = TrimRequest {
                    through_seq: req.through_seq,
                    through_hash: req.through_hash,
                };
                let call =
                    (self.vault).audited(&caller, Action::TrimAuditLog, CallNames::default());
                let trimmed =
                    call.run(|call| async move {
                        self.vault.audit().trim_audit_log(&call, request).await
                    })
                    .await?;
                Ok(pb::TrimAuditLogResponse {
                    events_trimmed: trimmed.events_trimmed,
                    anchor_seq: trimmed.anchor_seq,
                    anchor_hash: trimmed.anchor_hash,
                })
            },
        )
        .await
    }
}
