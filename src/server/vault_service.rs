//! The data plane: `piivault.v1.VaultService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb::{self, vault_service_server::VaultService};
use crate::vault::Vault;

use super::call::handle;
use super::convert;
use super::metrics::Metrics;

pub struct VaultApi {
    pub vault: Arc<Vault>,
    pub metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl VaultService for VaultApi {
    async fn put_fields(
        &self,
        request: Request<pb::PutFieldsRequest>,
    ) -> Result<Response<pb::PutFieldsResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "PutFields",
            request,
            |caller, req| async move {
                let fields = convert::field_inputs(req.fields)?;
                let format = convert::token_format(req.token_format)?;
                let tokens = self
                    .vault
                    .put_fields(&caller, &req.customer_id, fields, &req.purpose, format)
                    .await?;
                Ok(pb::PutFieldsResponse {
                    tokens: tokens.into_iter().collect(),
                })
            },
        )
        .await
    }

    async fn get_fields(
        &self,
        request: Request<pb::GetFieldsRequest>,
    ) -> Result<Response<pb::GetFieldsResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "GetFields",
            request,
            |caller, req| async move {
                let views = self
                    .vault
                    .get_fields(&caller, &req.customer_id, &req.field_names, &req.purpose)
                    .await?;
                Ok(pb::GetFieldsResponse {
                    customer_id: req.customer_id,
                    fields: views.into_iter().map(convert::field_value).collect(),
                })
            },
        )
        .await
    }

    async fn delete_fields(
        &self,
        request: Request<pb::DeleteFieldsRequest>,
    ) -> Result<Response<pb::DeleteFieldsResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "DeleteFields",
            request,
            |caller, req| async move {
                let deleted = self
                    .vault
                    .delete_fields(&caller, &req.customer_id, &req.field_names)
                    .await?;
                Ok(pb::DeleteFieldsResponse { deleted })
            },
        )
        .await
    }

    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "Tokenize",
            request,
            |caller, req| async move {
                let items = convert::tokenize_items(req.items)?;
                let tokens = self
                    .vault
                    .tokenize(&caller, &req.customer_id, items, &req.purpose)
                    .await?;
                Ok(pb::TokenizeResponse { tokens })
            },
        )
        .await
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "Detokenize",
            request,
            |caller, req| async move {
                let results = self
                    .vault
                    .detokenize(&caller, &req.tokens, &req.purpose)
                    .await?;
                Ok(pb::DetokenizeResponse {
                    results: results
                        .into_iter()
                        .map(convert::detokenize_result)
                        .collect(),
                })
            },
        )
        .await
    }

    async fn find_customers(
        &self,
        request: Request<pb::FindCustomersRequest>,
    ) -> Result<Response<pb::FindCustomersResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "FindCustomers",
            request,
            |caller, req| async move {
                let customer_ids = self
                    .vault
                    .find_customers(&caller, &req.field_name, &req.value, &req.purpose)
                    .await?;
                Ok(pb::FindCustomersResponse { customer_ids })
            },
        )
        .await
    }
}
