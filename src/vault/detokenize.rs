//! Detokenize: resolving any token (field or standalone) back to a value the
//! caller may see, each item allowed or refused on its own, and audited per
//! customer it touched.

use std::collections::BTreeMap;

use crate::crypto::Binding;
use crate::policy::{Purpose, Scope};
use crate::store::{AuditEntry, TokenTarget};

use super::audit::with_outcome;
use super::tokens;
use super::{
    reveal, shown_for, stored_kind, Caller, CustomerId, FieldKind, Limits, Shown, Vault, VaultError,
};

/// One resolved token, as the caller may see it.
#[derive(Debug)]
pub struct DetokenizedValue {
    pub token: String,
    pub customer_id: String,
    pub kind: FieldKind,
    pub value: Option<String>,
    pub shown: Shown,
    pub error: Option<VaultError>,
}

/// One token's outcome, with what the audit log records of it: the customer it
/// belongs to (when known) and the field name or value kind.
struct Resolution {
    customer_id: String,
    label: String,
    result: Result<DetokenizedValue, VaultError>,
}

impl Vault {
    /// Resolves tokens in order; each is allowed or refused on its own.
    pub async fn detokenize(
        &self,
        caller: &Caller,
        tokens: &[String],
        purpose: &str,
    ) -> Result<Vec<DetokenizedValue>, VaultError> {
        let entry = self.audit_entry(caller, "Detokenize", "", &[], purpose);
        let purpose = match self.check_detokenize(caller, tokens, purpose) {
            Ok(purpose) => purpose,
            Err(error) => return self.audit_outcome(entry, Err(error)).await,
        };
        let mut resolutions = Vec::with_capacity(tokens.len());
        for token in tokens {
            let resolution = self.resolve(caller, token, purpose).await;
            if let Err(error @ (VaultError::Internal(_) | VaultError::Unavailable(_))) =
                &resolution.result
            {
                let error = error.clone();
                return self.audit_outcome(entry, Err(error)).await;
            }
            resolutions.push(resolution);
        }
        self.append_audit(per_customer_events(&entry, &resolutions))
            .await?;
        Ok(resolutions
            .into_iter()
            .zip(tokens)
            .map(|(resolution, token)| {
                resolution
                    .result
                    .unwrap_or_else(|error| refused(token, error))
            })
            .collect())
    }

    fn check_detokenize(
        &self,
        caller: &Caller,
        tokens: &[String],
        purpose: &str,
    ) -> Result<&Purpose, VaultError> {
        caller.require_scope(Scope::TokensDetokenize)?;
        let purpose = self.check_purpose(caller, purpose)?;
        if tokens.is_empty() {
            return Err(VaultError::invalid(
                "tokens: at least one token is required",
            ));
        }
        Limits::check_count("tokens", tokens.len(), self.limits.max_batch_items)?;
        if self.abuse.detokenize(caller, tokens.len())? {
            self.stats.anomaly();
            tracing::warn!(
                security_event = "detokenize_rate_anomaly",
                principal = caller.name(),
                "a principal's detokenization rate jumped far above its baseline"
            );
        }
        Ok(purpose)
    }

    async fn resolve(&self, caller: &Caller, token: &str, purpose: &Purpose) -> Resolution {
        let mut resolution = Resolution {
            customer_id: String::new(),
            label: String::new(),
            result: Err(VaultError::not_found("token not found")),
        };
        resolution.result = self
            .try_resolve(caller, token, purpose, &mut resolution)
            .await;
        resolution
    }

    async fn try_resolve(
        &self,
        caller: &Caller,
        token: &str,
        purpose: &Purpose,
        audit: &mut Resolution,
    ) -> Result<DetokenizedValue, VaultError> {
        tokens::validate_token(token).map_err(|error| VaultError::invalid(error.to_string()))?;
        let unknown = || VaultError::not_found("token not found");
        let record = self.store.token(token).await?.ok_or_else(unknown)?;
        let customer = CustomerId::parse(&record.customer_id)
            .map_err(|_| VaultError::Internal("stored token has a bad customer id".into()))?;
        let kind = stored_kind(&record.kind)?;
        let field_name = match &record.target {
            TokenTarget::Field(name) => Some(name.as_str()),
            TokenTarget::Value(_) => None,
        };
        audit.customer_id = customer.to_string();
        audit.label = field_name.unwrap_or(kind.name()).to_owned();
        let customer_record = self
            .store
            .customer(customer.as_str())
            .await?
            .ok_or_else(unknown)?;
        let shown = shown_for(caller, field_name, kind);
        if shown == Shown::Denied {
            return Err(VaultError::denied(format!(
                "principal \"{}\" may not see {} values",
                caller.name(),
                audit.label
            )));
        }
        let cipher = self.keys.cipher(&customer, &customer_record).await?;
        self.check_consent(purpose, &customer, &customer_record, &cipher)
            .await?;
        let value = match shown {
            Shown::Plaintext | Shown::Masked => {
                let plaintext = match &record.target {
                    TokenTarget::Value(ciphertext) => {
                        let binding = Binding::Token {
                            customer_id: customer.as_str(),
                            token,
                        };
                        cipher.decrypt(&binding, ciphertext)?
                    }
                    TokenTarget::Field(name) => {
                        let field = self
                            .store
                            .field(customer.as_str(), name)
                            .await?
                            .ok_or_else(unknown)?;
                        let binding = Binding::Field {
                            customer_id: customer.as_str(),
                            field: name,
                        };
                        cipher.decrypt(&binding, &field.ciphertext)?
                    }
                };
                let text = std::str::from_utf8(&plaintext)
                    .map_err(|_| VaultError::Internal("stored value is not UTF-8".into()))?;
                reveal(shown, kind, text)
            }
            Shown::TokenOnly | Shown::Denied => None,
        };
        Ok(DetokenizedValue {
            token: token.to_owned(),
            customer_id: record.customer_id,
            kind,
            value,
            shown,
            error: None,
        })
    }
}

/// One event per customer the batch touched ("ok" when any of their tokens was
/// resolved, else the first refusal), and one for tokens of no known customer.
fn per_customer_events(entry: &AuditEntry, resolutions: &[Resolution]) -> Vec<AuditEntry> {
    let mut by_customer: BTreeMap<&str, AuditEntry> = BTreeMap::new();
    for resolution in resolutions {
        let event = by_customer
            .entry(resolution.customer_id.as_str())
            .or_insert_with(|| AuditEntry {
                customer_id: resolution.customer_id.clone(),
                outcome: String::new(),
                ..entry.clone()
            });
        if !resolution.label.is_empty() && !event.fields.contains(&resolution.label) {
            event.fields.push(resolution.label.clone());
        }
        match &resolution.result {
            Ok(_) => event.outcome = "ok".to_owned(),
            Err(error) if event.outcome.is_empty() => {
                *event = with_outcome(event.clone(), error);
            }
            Err(_) => {}
        }
    }
    by_customer.into_values().collect()
}

fn refused(token: &str, error: VaultError) -> DetokenizedValue {
    DetokenizedValue {
        token: token.to_owned(),
        customer_id: String::new(),
        kind: FieldKind::Generic,
        value: None,
        shown: Shown::Denied,
        error: Some(error),
    }
}
