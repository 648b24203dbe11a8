//! The data plane: `piivault.v1.VaultService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb::{self, vault_service_server::VaultService};
use crate::vault::{Action, SearchRequest, UnparsedCall, Vault};

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
                let names: Vec<String> = req.fields.iter().map(|f| f.name.clone()).collect();
                let call = UnparsedCall {
                    action: Action::PutFields,
                    customer_id: &req.customer_id,
                    fields: &names,
                    purpose: &req.purpose,
                };
                let (fields, format) = self
                    .vault
                    .parsed_or_refused(
                        &caller,
                        call,
                        convert::field_inputs(req.fields).and_then(|fields| {
                            Ok((fields, convert::token_format(req.token_format)?))
                        }),
                    )
                    .await?;
                let written = self
                    .vault
                    .data()
                    .put_fields(
                        &caller,
                        &req.customer_id,
                        fields,
                        &req.purpose,
                        format,
                        req.expected_revision,
                    )
                    .await?;
                Ok(pb::PutFieldsResponse {
                    tokens: written.tokens.into_iter().collect(),
                    revision: written.revision,
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
                let read = self
                    .vault
                    .data()
                    .get_fields(&caller, &req.customer_id, &req.field_names, &req.purpose)
                    .await?;
                Ok(pb::GetFieldsResponse {
                    customer_id: req.customer_id,
                    fields: read.fields.into_iter().map(convert::field_value).collect(),
                    revision: read.revision,
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
                    .data()
                    .delete_fields(&caller, &req.customer_id, &req.field_names)
                    .await?;
                Ok(pb::DeleteFieldsResponse { deleted })
            },
        )
        .await
    }

    async fn delete_tokens(
        &self,
        request: Request<pb::DeleteTokensRequest>,
    ) -> Result<Response<pb::DeleteTokensResponse>, Status> {
        handle(
            self.vault.policy(),
            &self.metrics,
            "DeleteTokens",
            request,
            |caller, req| async move {
                let deleted = self
                    .vault
                    .data()
                    .delete_tokens(&caller, &req.customer_id, &req.tokens)
                    .await?;
                Ok(pb::DeleteTokensResponse { deleted })
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
                let call = UnparsedCall {
                    action: Action::Tokenize,
                    customer_id: &req.customer_id,
                    fields: &[],
                    purpose: &req.purpose,
                };
                let items = self
                    .vault
                    .parsed_or_refused(&caller, call, convert::tokenize_items(req.items))
                    .await?;
                let tokens = self
                    .vault
                    .data()
                    .tokenize(
                        &caller,
                        &req.customer_id,
                        items,
                        &req.purpose,
                        &req.request_id,
                    )
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
                    .data()
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
                let search = SearchRequest {
                    field_name: req.field_name,
                    value: req.value,
                    purpose: req.purpose,
                    page_size: req.page_size,
                    page_token: req.page_token,
                };
                let page = self.vault.data().find_customers(&caller, &search).await?;
                Ok(pb::FindCustomersResponse {
                    customer_ids: page.customer_ids,
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }
}
