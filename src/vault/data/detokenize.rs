//! Detokenize: resolving any token (field or standalone) back to a value the
//! caller may see, each item allowed or refused on its own, and audited per
//! customer it touched.

use crate::vault::Call;
use crate::vault::Reason;
use std::collections::BTreeMap;

use crate::policy::{Purpose, Scope};
use crate::store::{AuditEntry, TokenTarget};
use crate::vault::fields::integrity_failure;
use crate::vault::sealing::Sealing;

use crate::vault::audit::with_outcome;
use crate::vault::tokens::Token;
use crate::vault::{
    reveal, shown_for, stored_kind, Caller, CustomerId, FieldKind, Limits, Shown, Vault, VaultError,
};

/// One resolved token, as the caller may see it. Its `Debug` leaves the value out.
pub struct DetokenizedValue {
    pub token: String,
    pub customer_id: String,
    pub kind: FieldKind,
    pub value: Option<String>,
    pub shown: Shown,
    pub error: Option<VaultError>,
}

impl std::fmt::Debug for DetokenizedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetokenizedValue")
            .field("token", &self.token)
            .field("customer_id", &self.customer_id)
            .field("kind", &self.kind)
            .field("value", &crate::vault::redacted(&self.value))
            .field("shown", &self.shown)
            .field("error", &self.error)
            .finish()
    }
}

/// One token's outcome, with what the audit log records of it: the customer it
/// belongs to (when known) and the field name or value kind.
struct Resolution {
    customer_id: String,
    label: String,
    result: Result<DetokenizedValue, VaultError>,
}

/// Bytes of protobuf framing one result takes besides its strings, rounded
/// up: the tag and length of the result and of each of its fields (at most 4
/// bytes each below 2 MiB) and its enums and error code (2 bytes each).
const RESULT_FRAMING_BYTES: usize = 64;

impl Resolution {
    /// An upper bound of the bytes this result takes in the response: the
    /// strings it carries (an error's message is never longer than its
    /// `to_string`) and their framing.
    fn reply_bytes(&self, token: &str) -> usize {
        let strings = match &self.result {
            Ok(value) => {
                value.token.len()
                    + value.customer_id.len()
                    + value.value.as_ref().map_or(0, String::len)
            }
            Err(error) => token.len() + error.to_string().len(),
        };
        strings + RESULT_FRAMING_BYTES
    }
}

impl crate::vault::Data<'_> {
    /// Resolves tokens in order; each is allowed or refused on its own.
    pub async fn detokenize(
        &self,
        call: &Call<'_>,
        tokens: &[String],
        purpose: &str,
    ) -> Result<Vec<DetokenizedValue>, VaultError> {
        let caller = call.caller;
        let purpose = self.check_detokenize(caller, tokens, purpose)?;
        let mut resolutions = Vec::with_capacity(tokens.len());
        for token in tokens {
            let resolution = self.resolve(caller, token, purpose).await;
            // A fault of the vault or its store fails the batch; a refused
            // token fails only its item.
            if let Err(error) = &resolution.result {
                if matches!(error.code_name(), "INTERNAL" | "UNAVAILABLE") {
                    return Err(error.clone());
                }
            }
            resolutions.push(resolution);
        }
        // Checked before anything is audited: a reply the gRPC layer would
        // not send must not be recorded as a disclosure.
        self.check_reply_size(tokens, &resolutions)?;
        // Refused tokens are refusals too: past the first few, counted.
        let events = self.to_record_now(per_customer_events(&call.event, &resolutions));
        self.append_audit(events).await?;
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
}

impl Vault {
    fn check_detokenize<'c>(
        &self,
        caller: &'c Caller,
        tokens: &[String],
        purpose: &str,
    ) -> Result<&'c Purpose, VaultError> {
        caller.require_scope(Scope::TokensDetokenize)?;
        let purpose = self.check_purpose(caller, purpose)?;
        if tokens.is_empty() {
            return Err(VaultError::invalid_field(
                "tokens",
                "tokens: at least one token is required",
            ));
        }
        Limits::check_count("tokens", tokens.len(), self.limits.max_batch_items)?;
        self.spend_detokenize_budget(caller, tokens.len())?;
        Ok(purpose)
    }

    fn check_reply_size(
        &self,
        tokens: &[String],
        resolutions: &[Resolution],
    ) -> Result<(), VaultError> {
        let bytes: usize = resolutions
            .iter()
            .zip(tokens)
            .map(|(resolution, token)| resolution.reply_bytes(token))
            .sum();
        if bytes > self.limits.max_reply_bytes {
            let refusal = VaultError::new(
                Reason::RequestTooLarge,
                format!(
                    "tokens: the reply would take up to {bytes} bytes, more than the {} bytes \
                     of one response message; detokenize these tokens in smaller batches",
                    self.limits.max_reply_bytes
                ),
            );
            return Err(refusal
                .in_field("tokens")
                .with("limit", self.limits.max_reply_bytes.to_string()));
        }
        Ok(())
    }

    /// Spends `values` of the caller's detokenization budget (Detokenize, and
    /// deterministic Tokenize, which confirms values as well) and reports a
    /// jump in its rate as a security event.
    pub(in crate::vault) fn spend_detokenize_budget(
        &self,
        caller: &Caller,
        values: usize,
    ) -> Result<(), VaultError> {
        if self.abuse.detokenize(caller, values)? {
            self.stats.anomaly();
            tracing::warn!(
                security_event = "detokenize_rate_anomaly",
                principal = caller.name(),
                "a principal's detokenization rate jumped far above its baseline"
            );
        }
        Ok(())
    }

    async fn resolve(&self, caller: &Caller, token: &str, purpose: &Purpose) -> Resolution {
        let mut resolution = Resolution {
            customer_id: String::new(),
            label: String::new(),
            result: Err(VaultError::new(Reason::TokenNotFound, "token not found")),
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
        let token = Token::parse(token).map_err(|error| VaultError::invalid(error.to_string()))?;
        let unknown = || VaultError::new(Reason::TokenNotFound, "token not found");
        let record = self
            .store
            .token(token.as_str())
            .await?
            .ok_or_else(unknown)?;
        let customer = CustomerId::from_stored(&record.customer_id)
            .map_err(|_| VaultError::internal("stored token has a bad customer id"))?;
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
            return Err(VaultError::new(
                Reason::FieldNotVisible,
                format!(
                    "principal \"{}\" may not see {} values",
                    caller.name(),
                    audit.label
                ),
            ));
        }
        let cipher = self.keys.cipher(&customer, &customer_record).await?;
        self.check_consent(purpose, &customer, &customer_record, &cipher)
            .await?;
        let sealing = Sealing::of(&customer_record)?;
        let value = match shown {
            Shown::Plaintext | Shown::Masked => {
                let plaintext = match &record.target {
                    TokenTarget::Value(ciphertext) => {
                        let binding = sealing.token(
                            customer.as_str(),
                            token.as_str(),
                            &record.kind,
                            &record.format,
                        );
                        cipher
                            .decrypt(&binding, ciphertext)
                            .map_err(|error| integrity_failure(&audit.label, error))?
                    }
                    TokenTarget::Field(name) => {
                        let field = self
                            .store
                            .field(customer.as_str(), name)
                            .await?
                            .ok_or_else(unknown)?;
                        // The field must be the one this token stands for, of
                        // the kind the token was disclosed as; in the bound
                        // layout its ciphertext checks both too.
                        if field.token != token.as_str() || field.kind != record.kind {
                            return Err(VaultError::integrity(format!(
                                "the token's record does not match field \"{name}\""
                            )));
                        }
                        let binding =
                            sealing.field(customer.as_str(), name, &record.kind, token.as_str());
                        cipher
                            .decrypt(&binding, &field.ciphertext)
                            .map_err(|error| integrity_failure(name, error))?
                    }
                };
                let text = std::str::from_utf8(&plaintext)
                    .map_err(|_| VaultError::internal("stored value is not UTF-8"))?;
                reveal(shown, kind, text)?
            }
            Shown::TokenOnly | Shown::Denied => None,
        };
        Ok(DetokenizedValue {
            token: token.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detokenized_value_prints_everything_but_the_value() {
        let resolved = DetokenizedValue {
            token: "tok_abc".into(),
            customer_id: "cust-1".into(),
            kind: FieldKind::Email,
            value: Some("jane@example.com".into()),
            shown: Shown::Plaintext,
            error: None,
        };
        let printed = format!("{resolved:?} {resolved:#?}");
        assert!(!printed.contains("jane@example.com"), "{printed}");
        assert!(
            printed.contains("tok_abc") && printed.contains("cust-1"),
            "{printed}"
        );
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn a_results_reply_bytes_bound_its_encoded_size_in_the_response() {
        use prost::Message;
        let longest = |len| "x".repeat(len);
        let error = VaultError::invalid(longest(300));
        let resolution = Resolution {
            customer_id: longest(128),
            label: String::new(),
            result: Ok(DetokenizedValue {
                token: longest(1024),
                customer_id: longest(128),
                kind: FieldKind::Generic,
                value: Some(longest(4096)),
                shown: Shown::Plaintext,
                error: None,
            }),
        };
        // Every field set at its longest, an error included, and enums at
        // their largest: more than any one result really carries.
        let encoded = crate::pb::DetokenizeResponse {
            results: vec![crate::pb::DetokenizeResult {
                token: longest(1024),
                customer_id: longest(128),
                kind: i32::from(u8::MAX),
                value: longest(4096),
                disclosure: i32::from(u8::MAX),
                error: Some(crate::pb::ItemError {
                    code: 16,
                    message: error.to_string(),
                }),
            }],
        }
        .encoded_len();
        let bound = resolution.reply_bytes(&longest(1024)) + error.to_string().len();
        assert!(encoded <= bound, "{encoded} > {bound}");
        let refused = Resolution {
            result: Err(error),
            ..resolution
        };
        assert!(refused.reply_bytes("tok") >= "tok".len() + 300);
    }
}
