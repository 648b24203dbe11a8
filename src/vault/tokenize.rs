//! Tokenize and Detokenize: standalone values behind tokens, and resolving any
//! token (field or standalone) back to a value the caller may see.

use std::collections::HashSet;

use crate::crypto::Binding;
use crate::policy::Scope;
use crate::store::{TokenRecord, TokenTarget};

use super::tokens::{self, TokenFormat};
use super::{
    now_ms, reveal, shown_for, stored_kind, today, Attempt, Caller, CustomerId, FieldKind, Limits,
    Shown, Vault, VaultError,
};

/// How many format-preserving candidates are drawn before giving up: a short
/// value's shape may have few free tokens left.
const FORMAT_PRESERVING_DRAWS: usize = 32;

pub struct TokenizeItem {
    pub value: String,
    pub kind: FieldKind,
    pub format: TokenFormat,
}

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

/// Draws the tokens of one request, so that two items of the request never get
/// the same new token and deterministic tokens are reused.
pub(super) struct TokenMinter<'a> {
    vault: &'a Vault,
    customer: &'a CustomerId,
    token_salt: [u8; 16],
    drawn: HashSet<String>,
}

/// A minted token, and whether it already exists in the store.
pub(super) struct Minted {
    pub token: String,
    pub exists: bool,
}

impl<'a> TokenMinter<'a> {
    pub fn new(vault: &'a Vault, customer: &'a CustomerId, token_salt: [u8; 16]) -> Self {
        TokenMinter {
            vault,
            customer,
            token_salt,
            drawn: HashSet::new(),
        }
    }

    /// A new token for a field (`scope` "field:<name>"); fields never share tokens.
    /// `what` names the field in error messages.
    pub async fn mint(
        &mut self,
        kind: FieldKind,
        normalized: &str,
        format: TokenFormat,
        scope: &str,
        what: &str,
    ) -> Result<String, Attempt> {
        let minted = self
            .mint_or_reuse(kind, normalized, format, scope, what)
            .await?;
        if minted.exists {
            // Only a deterministic token can exist already, and a field's scope
            // makes it unique to the field, which does not exist yet: a race.
            return Err(Attempt::Commit(crate::store::CommitError::Conflict));
        }
        Ok(minted.token)
    }

    /// A token for a value; a deterministic one may already exist and is reused.
    /// `what` names the field or batch item in error messages, as validation does.
    pub async fn mint_or_reuse(
        &mut self,
        kind: FieldKind,
        normalized: &str,
        format: TokenFormat,
        scope: &str,
        what: &str,
    ) -> Result<Minted, Attempt> {
        match format {
            TokenFormat::Random => Ok(self.fresh(tokens::random_token())),
            TokenFormat::Deterministic => {
                let mac = self.vault.keys.deterministic_token_mac(
                    self.customer,
                    &self.token_salt,
                    scope,
                    kind,
                    normalized,
                );
                let token = tokens::deterministic_token(&mac);
                let exists = !self.drawn.insert(token.clone())
                    || self.vault.store.token(&token).await?.is_some();
                Ok(Minted { token, exists })
            }
            TokenFormat::FormatPreserving => {
                for _ in 0..FORMAT_PRESERVING_DRAWS {
                    let candidate = tokens::format_preserving_token(kind, normalized)
                        .map_err(|error| VaultError::invalid(format!("{what}: {error}")))?;
                    if !self.drawn.contains(&candidate)
                        && self.vault.store.token(&candidate).await?.is_none()
                    {
                        return Ok(self.fresh(candidate));
                    }
                }
                Err(VaultError::ResourceExhausted(format!(
                    "{what}: no free format-preserving token of this {} value's shape; use a random token",
                    kind.name()
                ))
                .into())
            }
        }
    }

    fn fresh(&mut self, token: String) -> Minted {
        self.drawn.insert(token.clone());
        Minted {
            token,
            exists: false,
        }
    }
}

impl Vault {
    /// Stores standalone values of one customer and returns a token for each, in
    /// order. Any invalid item rejects the whole request with nothing written.
    pub async fn tokenize(
        &self,
        caller: &Caller,
        customer_id: &str,
        items: Vec<TokenizeItem>,
        purpose: &str,
    ) -> Result<Vec<String>, VaultError> {
        caller.require_scope(Scope::DataWrite)?;
        let customer = CustomerId::parse(customer_id)?;
        self.check_purpose(caller, purpose)?;
        if items.is_empty() {
            return Err(VaultError::invalid("items: at least one item is required"));
        }
        Limits::check_count("items", items.len(), self.limits.max_batch_items)?;
        let today = today();
        let items = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let normalized = item.kind.normalize(&item.value, today).map_err(|error| {
                    VaultError::invalid(format!("item {index} ({}): {error}", item.kind.name()))
                })?;
                Ok(TokenizeItem {
                    value: normalized,
                    ..item
                })
            })
            .collect::<Result<Vec<_>, VaultError>>()?;
        self.retry_commit(|| self.try_tokenize(&customer, &items))
            .await
    }

    async fn try_tokenize(
        &self,
        customer: &CustomerId,
        items: &[TokenizeItem],
    ) -> Result<Vec<String>, Attempt> {
        let now = now_ms();
        let id = customer.as_str();
        let mut writable = self.customer_for_write(customer, now).await?;
        let mut change = writable.change(customer);
        let mut minter = TokenMinter::new(self, customer, writable.record.token_salt);
        let mut issued = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let what = format!("item {index} ({})", item.kind.name());
            let minted = minter
                .mint_or_reuse(item.kind, &item.value, item.format, "value", &what)
                .await?;
            if !minted.exists {
                let binding = Binding::Token {
                    customer_id: id,
                    token: &minted.token,
                };
                let ciphertext = writable.cipher.encrypt(&binding, item.value.as_bytes());
                writable.record.encryptions += 1;
                let token_record = TokenRecord {
                    customer_id: id.to_owned(),
                    kind: item.kind.name().to_owned(),
                    format: item.format.name().to_owned(),
                    target: TokenTarget::Value(ciphertext),
                };
                change.new_tokens.push((minted.token.clone(), token_record));
            }
            issued.push(minted.token);
        }
        // Reusing deterministic tokens of an existing customer changes nothing.
        if !change.new_tokens.is_empty() || writable.expected_revision.is_none() {
            writable.finish(&mut change);
            self.store.commit(change).await?;
        }
        Ok(issued)
    }

    /// Resolves tokens in order; each is allowed or refused on its own.
    pub async fn detokenize(
        &self,
        caller: &Caller,
        tokens: &[String],
        purpose: &str,
    ) -> Result<Vec<DetokenizedValue>, VaultError> {
        caller.require_scope(Scope::TokensDetokenize)?;
        self.check_purpose(caller, purpose)?;
        if tokens.is_empty() {
            return Err(VaultError::invalid(
                "tokens: at least one token is required",
            ));
        }
        Limits::check_count("tokens", tokens.len(), self.limits.max_batch_items)?;
        let mut results = Vec::with_capacity(tokens.len());
        for token in tokens {
            let result = match self.resolve(caller, token).await {
                Ok(resolved) => resolved,
                Err(VaultError::Internal(message)) => return Err(VaultError::Internal(message)),
                Err(VaultError::Unavailable(message)) => {
                    return Err(VaultError::Unavailable(message))
                }
                Err(error) => refused(token, error),
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn resolve(&self, caller: &Caller, token: &str) -> Result<DetokenizedValue, VaultError> {
        tokens::validate_token(token).map_err(|error| VaultError::invalid(error.to_string()))?;
        let unknown = || VaultError::not_found("token not found");
        let record = self.store.token(token).await?.ok_or_else(unknown)?;
        let customer = CustomerId::parse(&record.customer_id)
            .map_err(|_| VaultError::Internal("stored token has a bad customer id".into()))?;
        let customer_record = self
            .store
            .customer(customer.as_str())
            .await?
            .ok_or_else(unknown)?;
        let kind = stored_kind(&record.kind)?;
        let field_name = match &record.target {
            TokenTarget::Field(name) => Some(name.as_str()),
            TokenTarget::Value(_) => None,
        };
        let shown = shown_for(caller, field_name, kind);
        if shown == Shown::Denied {
            let what = field_name.map_or(kind.name(), |name| name);
            return Err(VaultError::denied(format!(
                "principal \"{}\" may not see {what} values",
                caller.name()
            )));
        }
        let value = match shown {
            Shown::Plaintext | Shown::Masked => {
                let cipher = self.keys.cipher(&customer, &customer_record)?;
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
