//! Privacy for data subjects: `piivault.v1.PrivacyService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb::{self, privacy_service_server::PrivacyService};
use crate::vault::Vault;

use super::call::handle;
use super::convert;

pub struct PrivacyApi {
    pub vault: Arc<Vault>,
}

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not implemented in this version"))
}

#[tonic::async_trait]
impl PrivacyService for PrivacyApi {
    async fn list_purposes(
        &self,
        _request: Request<pb::ListPurposesRequest>,
    ) -> Result<Response<pb::ListPurposesResponse>, Status> {
        Err(not_yet("ListPurposes"))
    }

    async fn set_consent(
        &self,
        _request: Request<pb::SetConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        Err(not_yet("SetConsent"))
    }

    async fn list_consents(
        &self,
        _request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        Err(not_yet("ListConsents"))
    }

    async fn export_customer(
        &self,
        _request: Request<pb::ExportCustomerRequest>,
    ) -> Result<Response<pb::ExportCustomerResponse>, Status> {
        Err(not_yet("ExportCustomer"))
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeletionReceipt>, Status> {
        handle(
            self.vault.policy(),
            "DeleteCustomer",
            request,
            |caller, req| async move {
                let receipt = self
                    .vault
                    .delete_customer(&caller, &req.customer_id, &req.reason)
                    .await?;
                Ok(convert::receipt(receipt))
            },
        )
        .await
    }

    async fn get_deletion_status(
        &self,
        _request: Request<pb::GetDeletionStatusRequest>,
    ) -> Result<Response<pb::DeletionReceipt>, Status> {
        Err(not_yet("GetDeletionStatus"))
    }

    async fn publish_policy(
        &self,
        _request: Request<pb::PublishPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        Err(not_yet("PublishPolicy"))
    }

    async fn list_policy_versions(
        &self,
        _request: Request<pb::ListPolicyVersionsRequest>,
    ) -> Result<Response<pb::ListPolicyVersionsResponse>, Status> {
        Err(not_yet("ListPolicyVersions"))
    }

    async fn list_notices(
        &self,
        _request: Request<pb::ListNoticesRequest>,
    ) -> Result<Response<pb::ListNoticesResponse>, Status> {
        Err(not_yet("ListNotices"))
    }

    async fn acknowledge_notice(
        &self,
        _request: Request<pb::AcknowledgeNoticeRequest>,
    ) -> Result<Response<pb::AcknowledgeNoticeResponse>, Status> {
        Err(not_yet("AcknowledgeNotice"))
    }
}
