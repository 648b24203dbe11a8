//! Privacy for data subjects: `piivault.v1.PrivacyService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb::{self, privacy_service_server::PrivacyService};
use crate::vault::{
    AccessHistoryRequest, Action, CallNames, ConsentRequest, CustomerId, PolicyChange, Vault,
};

use super::call::handle;
use super::convert;
use super::metrics::Metrics;

pub struct PrivacyApi {
    pub vault: Arc<Vault>,
    pub metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl PrivacyService for PrivacyApi {
    async fn list_purposes(
        &self,
        request: Request<pb::ListPurposesRequest>,
    ) -> Result<Response<pb::ListPurposesResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ListPurposes",
            request,
            |caller, _req| async move {
                Ok(pb::ListPurposesResponse {
                    purposes: self
                        .vault
                        .privacy()
                        .list_purposes(&caller)
                        .iter()
                        .map(convert::purpose)
                        .collect(),
                })
            },
        )
        .await
    }

    async fn set_consent(
        &self,
        request: Request<pb::SetConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "SetConsent",
            request,
            |caller, req| async move {
                let names = CallNames {
                    customer_id: &req.customer_id,
                    purpose: &req.purpose,
                    ..CallNames::default()
                };
                let call = self.vault.audited(&caller, Action::SetConsent, names);
                let customer_id = req.customer_id.clone();
                let event = call
                    .run(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let consent = ConsentRequest {
                            purpose: req.purpose,
                            granted: req.granted,
                            policy_version: req.policy_version,
                            source: req.source,
                        };
                        let privacy = self.vault.privacy();
                        privacy.set_consent(&call, &customer, consent).await
                    })
                    .await?;
                Ok(convert::consent_record(&customer_id, event))
            },
        )
        .await
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ListConsents",
            request,
            |caller, req| async move {
                let req = &req;
                let call = self.vault.audited(
                    &caller,
                    Action::ListConsents,
                    CallNames::customer(&req.customer_id),
                );
                let events = call
                    .read(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let privacy = self.vault.privacy();
                        (privacy.list_consents(&call, &customer, req.include_history)).await
                    })
                    .await?;
                Ok(pb::ListConsentsResponse {
                    consents: events
                        .into_iter()
                        .map(|event| convert::consent_record(&req.customer_id, event))
                        .collect(),
                })
            },
        )
        .await
    }

    async fn export_customer(
        &self,
        request: Request<pb::ExportCustomerRequest>,
    ) -> Result<Response<pb::ExportCustomerResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ExportCustomer",
            request,
            |caller, req| async move {
                let call = self.vault.audited(
                    &caller,
                    Action::ExportCustomer,
                    CallNames::customer(&req.customer_id),
                );
                let document = call
                    .read(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let format = convert::export_format(req.format)?;
                        let access = AccessHistoryRequest {
                            page_token: req.access_history_page_token,
                            page_size: req.access_history_page_size,
                        };
                        let privacy = self.vault.privacy();
                        (privacy.export_customer(&call, &customer, format, &access)).await
                    })
                    .await?;
                Ok(pb::ExportCustomerResponse {
                    document: document.bytes,
                    content_type: document.content_type.to_owned(),
                    next_access_history_page_token: document.next_page_token.unwrap_or_default(),
                    audit_trimmed_through_seq: document.audit_trimmed_through_seq,
                })
            },
        )
        .await
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeletionReceipt>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "DeleteCustomer",
            request,
            |caller, req| async move {
                let call = self.vault.audited(
                    &caller,
                    Action::DeleteCustomer,
                    CallNames::customer(&req.customer_id),
                );
                // Erasure parses its id itself: a customer stored before ids
                // shaped like personal data were refused can still be erased.
                let receipt = call
                    .run(|call| async move {
                        let privacy = self.vault.privacy();
                        (privacy.delete_customer(&call, &req.customer_id, &req.reason)).await
                    })
                    .await?;
                Ok(convert::receipt(receipt))
            },
        )
        .await
    }

    async fn get_deletion_status(
        &self,
        request: Request<pb::GetDeletionStatusRequest>,
    ) -> Result<Response<pb::DeletionReceipt>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "GetDeletionStatus",
            request,
            |caller, req| async move {
                let names = CallNames::default();
                let call = self
                    .vault
                    .audited(&caller, Action::GetDeletionStatus, names);
                let receipt = call
                    .read(|call| async move {
                        let privacy = self.vault.privacy();
                        privacy.deletion_status(&call, &req.receipt_id).await
                    })
                    .await?;
                Ok(convert::receipt(receipt))
            },
        )
        .await
    }

    async fn publish_policy(
        &self,
        request: Request<pb::PublishPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "PublishPolicy",
            request,
            |caller, req| async move {
                let names = CallNames {
                    purposes: &req.changed_purposes,
                    ..CallNames::default()
                };
                let call = self.vault.audited(&caller, Action::PublishPolicy, names);
                let change = PolicyChange {
                    version: req.version,
                    summary: req.summary,
                    changed_purposes: req.changed_purposes,
                    requires_reconsent: req.requires_reconsent,
                };
                let published =
                    call.run(|call| async move {
                        self.vault.privacy().publish_policy(&call, change).await
                    })
                    .await?;
                Ok(convert::policy_version(published))
            },
        )
        .await
    }

    async fn list_policy_versions(
        &self,
        request: Request<pb::ListPolicyVersionsRequest>,
    ) -> Result<Response<pb::ListPolicyVersionsResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ListPolicyVersions",
            request,
            |caller, _req| async move {
                let versions = self.vault.privacy().policy_versions(&caller).await?;
                Ok(pb::ListPolicyVersionsResponse {
                    versions: versions.into_iter().map(convert::policy_version).collect(),
                })
            },
        )
        .await
    }

    async fn list_notices(
        &self,
        request: Request<pb::ListNoticesRequest>,
    ) -> Result<Response<pb::ListNoticesResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "ListNotices",
            request,
            |caller, req| async move {
                let call = self.vault.audited(
                    &caller,
                    Action::ListNotices,
                    CallNames::customer(&req.customer_id),
                );
                let notices = call
                    .read(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        self.vault.privacy().list_notices(&call, &customer).await
                    })
                    .await?;
                Ok(pb::ListNoticesResponse {
                    notices: notices.into_iter().map(convert::notice).collect(),
                })
            },
        )
        .await
    }

    async fn acknowledge_notice(
        &self,
        request: Request<pb::AcknowledgeNoticeRequest>,
    ) -> Result<Response<pb::AcknowledgeNoticeResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "AcknowledgeNotice",
            request,
            |caller, req| async move {
                let call = self.vault.audited(
                    &caller,
                    Action::AcknowledgeNotice,
                    CallNames::customer(&req.customer_id),
                );
                call.run(|call| async move {
                    let customer = CustomerId::parse(&req.customer_id)?;
                    let privacy = self.vault.privacy();
                    (privacy.acknowledge_notice(&call, &customer, &req.policy_version)).await
                })
                .await?;
                Ok(pb::AcknowledgeNoticeResponse {})
            },
        )
        .await
    }
}
