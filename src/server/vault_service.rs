//! The data plane: `piivault.v1.VaultService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb::{self, vault_service_server::VaultService};
use crate::vault::{Action, CallNames, CustomerId, SearchRequest, Vault};

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
                let field_names: Vec<String> = req.fields.iter().map(|f| f.name.clone()).collect();
                let names = CallNames {
                    customer_id: &req.customer_id,
                    fields: &field_names,
                    purpose: &req.purpose,
                    ..CallNames::default()
                };
                let call = self.vault.audited(&caller, Action::PutFields, names);
                let written = call
                    .run(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let fields = convert::field_inputs(req.fields)?;
                        let format = convert::token_format(req.token_format)?;
                        let data = self.vault.data();
                        let revision = req.expected_revision;
                        (data.put_fields(&call, &customer, fields, &req.purpose, format, revision))
                            .await
                    })
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
                let names = CallNames {
                    customer_id: &req.customer_id,
                    fields: &req.field_names,
                    purpose: &req.purpose,
                    ..CallNames::default()
                };
                let req = &req;
                let call = self.vault.audited(&caller, Action::GetFields, names);
                let read = call
                    .read(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let data = self.vault.data();
                        (data.get_fields(&call, &customer, &req.field_names, &req.purpose)).await
                    })
                    .await?;
                Ok(pb::GetFieldsResponse {
                    customer_id: req.customer_id.clone(),
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
                let names = CallNames {
                    customer_id: &req.customer_id,
                    fields: &req.field_names,
                    ..CallNames::default()
                };
                let req = &req;
                let call = self.vault.audited(&caller, Action::DeleteFields, names);
                let deleted = call
                    .run(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let data = self.vault.data();
                        data.delete_fields(&call, &customer, &req.field_names).await
                    })
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
                let names = CallNames::customer(&req.customer_id);
                let req = &req;
                let call = self.vault.audited(&caller, Action::DeleteTokens, names);
                let deleted = call
                    .run(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let data = self.vault.data();
                        data.delete_tokens(&call, &customer, &req.tokens).await
                    })
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
                // The event names the kinds of the values, never the values.
                let kinds: Vec<String> = (req.items.iter())
                    .filter_map(|item| convert::field_kind(item.kind).ok())
                    .map(|kind| kind.name().to_owned())
                    .collect();
                let names = CallNames {
                    customer_id: &req.customer_id,
                    fields: &kinds,
                    purpose: &req.purpose,
                    ..CallNames::default()
                };
                let call = self.vault.audited(&caller, Action::Tokenize, names);
                let tokens = call
                    .run(|call| async move {
                        let customer = CustomerId::parse(&req.customer_id)?;
                        let items = convert::tokenize_items(req.items)?;
                        let data = self.vault.data();
                        (data.tokenize(&call, &customer, items, &req.purpose, &req.request_id))
                            .await
                    })
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
                let names = CallNames {
                    purpose: &req.purpose,
                    ..CallNames::default()
                };
                let req = &req;
                let call = self.vault.audited(&caller, Action::Detokenize, names);
                let results = call
                    .run(|call| async move {
                        let data = self.vault.data();
                        data.detokenize(&call, &req.tokens, &req.purpose).await
                    })
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
                let field_name = std::slice::from_ref(&req.field_name);
                let names = CallNames {
                    fields: field_name,
                    purpose: &req.purpose,
                    ..CallNames::default()
                };
                let call = self.vault.audited(&caller, Action::FindCustomers, names);
                let search = SearchRequest {
                    field_name: req.field_name,
                    value: req.value,
                    purpose: req.purpose,
                    page_size: req.page_size,
                    page_token: req.page_token,
                };
                let page =
                    call.run(|call| async move {
                        self.vault.data().find_customers(&call, &search).await
                    })
                    .await?;
                Ok(pb::FindCustomersResponse {
                    customer_ids: page.customer_ids,
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            },
        )
        .await
    }
}
