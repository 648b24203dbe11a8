//! Tokenize and Detokenize: standalone values behind tokens, and resolving any
//! token (field or standalone) back to a value the caller may see.

use std::collections::HashSet;

use crate::crypto::Binding;
use crate::policy::{Purpose, Scope};
use crate::store::{AuditEntry, TokenRecord, TokenTarget};

use super::tokens::{self, TokenFormat};
use super::{now_ms, today, Attempt, Caller, CustomerId, FieldKind, Limits, Vault, VaultError};

/// How many format-preserving candidates are drawn before giving up: a short
/// value's shape may have few free tokens left.
const FORMAT_PRESERVING_DRAWS: usize = 32;

pub struct TokenizeItem {
    pub value: String,
    pub kind: FieldKind,
    pub format: TokenFormat,
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
        let kinds: Vec<String> = items
            .iter()
            .map(|item| item.kind.name().to_owned())
            .collect();
        let entry = self.audit_entry(caller, "Tokenize", customer_id, &kinds, purpose);
        let result = self
            .store_values(caller, customer_id, items, purpose, &entry)
            .await;
        self.audit_refusal(entry, result).await
    }

    async fn store_values(
        &self,
        caller: &Caller,
        customer_id: &str,
        items: Vec<TokenizeItem>,
        purpose: &str,
        audit: &AuditEntry,
    ) -> Result<Vec<String>, VaultError> {
        caller.require_scope(Scope::DataWrite)?;
        let customer = CustomerId::parse(customer_id)?;
        let purpose = self.check_purpose(caller, purpose)?;
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
        self.retry_commit(|| self.try_tokenize(&customer, &items, purpose, audit))
            .await
    }

    async fn try_tokenize(
        &self,
        customer: &CustomerId,
        items: &[TokenizeItem],
        purpose: &Purpose,
        audit: &AuditEntry,
    ) -> Result<Vec<String>, Attempt> {
        let now = now_ms();
        let id = customer.as_str();
        let mut writable = self.customer_for_write(customer, now).await?;
        self.check_consent(purpose, customer, &writable.record, &writable.cipher)
            .await?;
        let mut change = writable.change(customer);
        let mut minter = TokenMinter::new(self, customer, writable.record.token_salt);
        let mut issued = Vec::with_capacity(items.len());
        let mut new_formats = Vec::new();
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
                new_formats.push(item.format);
            }
            issued.push(minted.token);
        }
        // Reusing deterministic tokens of an existing customer changes nothing.
        if !change.new_tokens.is_empty() || writable.expected_revision.is_none() {
            change.audit = Some(audit.clone());
            let encryptions = writable.record.encryptions;
            writable.finish(&mut change);
            self.store.commit(change).await?;
            for format in new_formats {
                self.stats.token_issued(format);
            }
            self.rekey_if_worn(customer, encryptions).await;
        } else {
            self.store.append_audit(vec![audit.clone()]).await?;
        }
        Ok(issued)
    }
}
