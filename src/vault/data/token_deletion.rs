//! DeleteTokens: the end of a standalone token's life. Tokenize stores a
//! value behind each token it draws; this removes tokens (and their values)
//! a customer no longer needs, such as the orphan a retried Tokenize left.
//! A field's token goes with its field (DeleteFields), never alone.

use crate::vault::Reason;
use std::collections::BTreeSet;

use crate::policy::Scope;
use crate::store::{AuditEntry, CustomerChange, TokenTarget};

use crate::vault::sealing::Sealing;
use crate::vault::{Attempt, Call, CustomerId, Limits, Vault, VaultError};

impl crate::vault::Data<'_> {
    /// Deletes standalone tokens of one customer; returns how many existed.
    /// A token that does not exist (already deleted, or another customer's)
    /// is skipped, so a retried call is safe.
    pub async fn delete_tokens(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        tokens: &[String],
    ) -> Result<u32, VaultError> {
        call.caller.require_scope(Scope::DataWrite)?;
        if tokens.is_empty() {
            return Err(VaultError::invalid_field(
                "tokens",
                "tokens: name at least one token",
            ));
        }
        Limits::check_count("tokens", tokens.len(), self.limits.max_batch_items)?;
        if let Some(index) = tokens
            .iter()
            .position(|token| token.is_empty() || token.len() > 128)
        {
            return Err(VaultError::invalid(format!(
                "tokens[{index}]: a token is 1-128 bytes"
            )));
        }
        let tokens: BTreeSet<&str> = tokens.iter().map(String::as_str).collect();
        self.retry_commit(|| self.try_delete_tokens(customer, &tokens, &call.event))
            .await
    }
}

impl Vault {
    async fn try_delete_tokens(
        &self,
        customer: &CustomerId,
        tokens: &BTreeSet<&str>,
        audit: &AuditEntry,
    ) -> Result<u32, Attempt> {
        let id = customer.as_str();
        let Some(mut record) = self.store.customer(id).await? else {
            self.store.append_audit(vec![audit.clone()]).await?;
            return Ok(0);
        };
        if Sealing::of(&record)? == Sealing::Unbound {
            record = self.migrate_binding(customer).await?;
        }
        let mut change = CustomerChange {
            customer_id: id.to_owned(),
            expected_revision: Some(record.revision),
            ..CustomerChange::default()
        };
        for (index, token) in tokens.iter().enumerate() {
            match self.store.token(token).await? {
                Some(found) if found.customer_id == id => match found.target {
                    TokenTarget::Value(_) => change.delete_tokens.push((*token).to_owned()),
                    TokenTarget::Field(name) => {
                        return Err(VaultError::new(
                            Reason::TokenBoundToField,
                            format!(
                            "token {index} stands for field \"{name}\": DeleteFields removes it \
                             with its field"
                        ),
                        )
                        .into())
                    }
                },
                // Another customer's token is as good as absent: saying
                // otherwise would tell the caller it exists.
                _ => {}
            }
        }
        let deleted = change.delete_tokens.len() as u32;
        if deleted == 0 {
            self.store.append_audit(vec![audit.clone()]).await?;
            return Ok(0);
        }
        self.commit_at_next_revision(customer, record, change, audit)
            .await?;
        Ok(deleted)
    }
}
