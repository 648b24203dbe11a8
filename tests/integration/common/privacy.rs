//! Calls of the privacy and audit services: consent, erasure, export,
//! policy versions and notices, the audit log.

use pii_vault::pb;

use super::{AuditClient, PrivacyClient};

/// Milliseconds since the epoch of a timestamp that must be there.
pub fn timestamp_ms(at: Option<&prost_types::Timestamp>) -> i64 {
    let at = at.expect("a timestamp");
    at.seconds * 1000 + i64::from(at.nanos) / 1_000_000
}

/// When a receipt says its erasure is or becomes cryptographic, in ms.
pub fn erasure_due_ms(receipt: &pb::DeletionReceipt) -> i64 {
    timestamp_ms(receipt.cryptographic_erasure_due.as_ref())
}

pub async fn delete_customer(
    client: &mut PrivacyClient,
    customer: &str,
) -> Result<pb::DeletionReceipt, tonic::Status> {
    client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: customer.into(),
            reason: "customer request".into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The current state of an erasure, by its receipt id.
pub async fn deletion_status(
    client: &mut PrivacyClient,
    receipt_id: &str,
) -> Result<pb::DeletionReceipt, tonic::Status> {
    client
        .get_deletion_status(pb::GetDeletionStatusRequest {
            receipt_id: receipt_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// SetConsent under no policy version (none is published) from source "test".
pub async fn set_consent(
    client: &mut PrivacyClient,
    customer: &str,
    purpose: &str,
    granted: bool,
) -> Result<pb::ConsentRecord, tonic::Status> {
    set_consent_from(client, customer, purpose, granted, "", "test").await
}

pub async fn set_consent_from(
    client: &mut PrivacyClient,
    customer: &str,
    purpose: &str,
    granted: bool,
    policy_version: &str,
    source: &str,
) -> Result<pb::ConsentRecord, tonic::Status> {
    client
        .set_consent(pb::SetConsentRequest {
            customer_id: customer.into(),
            purpose: purpose.into(),
            granted,
            policy_version: policy_version.into(),
            source: source.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn list_consents(
    client: &mut PrivacyClient,
    customer: &str,
    include_history: bool,
) -> Result<Vec<pb::ConsentRecord>, tonic::Status> {
    client
        .list_consents(pb::ListConsentsRequest {
            customer_id: customer.into(),
            include_history,
        })
        .await
        .map(|r| r.into_inner().consents)
}

pub async fn export(
    client: &mut PrivacyClient,
    customer: &str,
    format: pb::ExportFormat,
) -> Result<pb::ExportCustomerResponse, tonic::Status> {
    export_page(client, customer, format, "", 0).await
}

/// One page of an export's access history: after `page_token` (empty: the
/// newest), at most `page_size` events (0: the server's page size).
pub async fn export_page(
    client: &mut PrivacyClient,
    customer: &str,
    format: pb::ExportFormat,
    page_token: &str,
    page_size: u32,
) -> Result<pb::ExportCustomerResponse, tonic::Status> {
    client
        .export_customer(pb::ExportCustomerRequest {
            customer_id: customer.into(),
            format: format as i32,
            access_history_page_token: page_token.into(),
            access_history_page_size: page_size,
        })
        .await
        .map(|r| r.into_inner())
}

/// Every event ListAuditEvents streams for `request`.
pub async fn audit_events(
    client: &mut AuditClient,
    request: pb::ListAuditEventsRequest,
) -> Result<Vec<pb::AuditEvent>, tonic::Status> {
    let mut stream = client.list_audit_events(request).await?.into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event);
    }
    Ok(events)
}

/// The whole audit log, oldest first (up to the server's largest page).
pub async fn all_audit_events(client: &mut AuditClient) -> Vec<pb::AuditEvent> {
    audit_events(
        client,
        pb::ListAuditEventsRequest {
            limit: 10_000,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

pub async fn verify_audit_log(
    client: &mut AuditClient,
) -> Result<pb::VerifyAuditLogResponse, tonic::Status> {
    client
        .verify_audit_log(pb::VerifyAuditLogRequest::default())
        .await
        .map(|r| r.into_inner())
}

pub async fn publish_policy(
    client: &mut PrivacyClient,
    version: &str,
    summary: &str,
    changed_purposes: &[&str],
    requires_reconsent: bool,
) -> Result<pb::PolicyVersion, tonic::Status> {
    client
        .publish_policy(pb::PublishPolicyRequest {
            version: version.into(),
            summary: summary.into(),
            changed_purposes: changed_purposes.iter().map(|p| p.to_string()).collect(),
            requires_reconsent,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn list_policy_versions(
    client: &mut PrivacyClient,
) -> Result<Vec<pb::PolicyVersion>, tonic::Status> {
    client
        .list_policy_versions(pb::ListPolicyVersionsRequest {})
        .await
        .map(|r| r.into_inner().versions)
}

pub async fn list_notices(
    client: &mut PrivacyClient,
    customer: &str,
) -> Result<Vec<pb::Notice>, tonic::Status> {
    client
        .list_notices(pb::ListNoticesRequest {
            customer_id: customer.into(),
        })
        .await
        .map(|r| r.into_inner().notices)
}

pub async fn acknowledge_notice(
    client: &mut PrivacyClient,
    customer: &str,
    policy_version: &str,
) -> Result<(), tonic::Status> {
    client
        .acknowledge_notice(pb::AcknowledgeNoticeRequest {
            customer_id: customer.into(),
            policy_version: policy_version.into(),
        })
        .await
        .map(|_| ())
}
