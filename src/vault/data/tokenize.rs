//! Tokenize and Detokenize: standalone values behind tokens, and resolving any
//! token (field or standalone) back to a value the caller may see.

use crate::vault::Reason;
use std::collections::HashSet;

use crate::crypto::TokenKey;

use crate::policy::{Purpose, Scope};
use crate::store::{AuditEntry, TokenRecord, TokenTarget};
use crate::vault::sealing::Sealing;

use crate::vault::request_ids::RequestId;
use crate::vault::tokens::{self, Token, TokenFormat};
use crate::vault::{
    shown_for, Attempt, Call, Caller, CustomerId, FieldKind, Limits, Normalized, Shown, Vault,
    VaultError,
};

/// How many format-preserving candidates are drawn before giving up: a short
/// value's shape may have few free tokens left.
const FORMAT_PRESERVING_DRAWS: usize = 32;

pub struct TokenizeItem {
    pub value: String,
    pub kind: FieldKind,
    pub format: TokenFormat,
}

/// A Tokenize item after validation: its value normalized.
pub(in crate::vault) struct ValidItem {
    pub value: Normalized,
    pub format: TokenFormat,
}

/// Draws the tokens of one request, so that two items of the request never get
/// the same new token and deterministic tokens are reused.
pub(in crate::vault) struct TokenMinter<'a> {
    vault: &'a Vault,
    customer: &'a CustomerId,
    token_key: &'a TokenKey,
    drawn: HashSet<Token>,
}

/// A minted token, and whether it already exists in the store.
pub(in crate::vault) struct Minted {
    pub token: Token,
    pub exists: bool,
}

impl<'a> TokenMinter<'a> {
    pub fn new(vault: &'a Vault, customer: &'a CustomerId, token_key: &'a TokenKey) -> Self {
        TokenMinter {
            vault,
            customer,
            token_key,
            drawn: HashSet::new(),
        }
    }

    /// A new token for a field (`scope` "field:<name>"); fields never share tokens.
    /// `what` names the field in error messages.
    pub async fn mint(
        &mut self,
        normalized: &Normalized,
        format: TokenFormat,
        scope: &str,
        what: &str,
    ) -> Result<Token, Attempt> {
        let minted = self.mint_or_reuse(normalized, format, scope, what).await?;
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
        normalized: &Normalized,
        format: TokenFormat,
        scope: &str,
        what: &str,
    ) -> Result<Minted, Attempt> {
        let kind = normalized.kind();
        match format {
            TokenFormat::Random => Ok(self.fresh(tokens::random_token())),
            TokenFormat::Deterministic => {
                let mac = self.token_key.deterministic_token(
                    self.customer.as_str(),
                    scope,
                    kind.name(),
                    normalized.as_str(),
                );
                let token = tokens::deterministic_token(&mac);
                let exists = !self.drawn.insert(token.clone())
                    || self.vault.store.token(token.as_str()).await?.is_some();
                Ok(Minted { token, exists })
            }
            TokenFormat::FormatPreserving => {
                for _ in 0..FORMAT_PRESERVING_DRAWS {
                    let candidate = tokens::format_preserving_token(normalized)
                        .map_err(|error| VaultError::invalid(format!("{what}: {error}")))?;
                    if !self.drawn.contains(&candidate)
                        && self.vault.store.token(candidate.as_str()).await?.is_none()
                    {
                        return Ok(self.fresh(candidate));
                    }
                }
                Err(VaultError::new(Reason::TokenSpaceExhausted, format!(
                    "{what}: no free format-preserving token of this {} value's shape; use a random token",
                    kind.name()
                ))
                .into())
            }
        }
    }

    fn fresh(&mut self, token: Token) -> Minted {
        self.drawn.insert(token.clone());
        Minted {
            token,
            exists: false,
        }
    }
}

/// A deterministic token is a function of the value: whoever holds one and
/// may ask for deterministic tokens can test guesses by comparing (about
/// 45,000 for a date of birth). So asking for one is a read of the value,
/// allowed only to a principal that may detokenize and sees the value in
/// plaintext, whether or not the token exists yet: refusing only existing
/// ones would make the refusal the answer. `asked` is each value's label for
/// messages, its field name (none for a standalone value) and kind; returns
/// how many were asked for, which the caller spends from the detokenize
/// budget once the request is valid.
pub(in crate::vault) fn check_deterministic<'a>(
    caller: &Caller,
    asked: impl IntoIterator<Item = (String, Option<&'a str>, FieldKind)>,
) -> Result<usize, VaultError> {
    let mut count = 0;
    for (what, field, kind) in asked {
        if !caller.principal.has_scope(Scope::TokensDetokenize) {
            let refusal = VaultError::new(
                Reason::ScopeMissing,
                format!(
                    "{what}: a deterministic token confirms a guessed value, so it needs the scope {} \
                     that principal \"{}\" lacks; use a random or format-preserving token",
                    Scope::TokensDetokenize.name(),
                    caller.name()
                ),
            );
            return Err(refusal.with("scope", Scope::TokensDetokenize.name()));
        }
        if shown_for(caller, field, kind) != Shown::Plaintext {
            return Err(VaultError::new(
                Reason::FieldNotVisible,
                format!(
                    "{what}: a deterministic token confirms a guessed value, and principal \"{}\" \
                 may not see it in plaintext; use a random or format-preserving token",
                    caller.name()
                ),
            ));
        }
        count += 1;
    }
    Ok(count)
}

impl crate::vault::Data<'_> {
    /// Stores standalone values of one customer and returns a token for each, in
    /// order. Any invalid item rejects the whole request with nothing written.
    /// A non-empty `request_id` makes a retry of the request return the same
    /// tokens (see `request_ids`).
    pub async fn tokenize(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        items: Vec<TokenizeItem>,
        purpose: &str,
        request_id: &str,
    ) -> Result<Vec<String>, VaultError> {
        let (caller, audit) = (call.caller, &call.event);
        caller.require_scope(Scope::DataWrite)?;
        let purpose = self.check_purpose(caller, purpose)?;
        let request_id = RequestId::parse(request_id, caller.name())?;
        if items.is_empty() {
            return Err(VaultError::invalid_field(
                "items",
                "items: at least one item is required",
            ));
        }
        Limits::check_count("items", items.len(), self.limits.max_batch_items)?;
        let deterministic = check_deterministic(
            caller,
            items
                .iter()
                .enumerate()
                .filter(|(_, item)| item.format == TokenFormat::Deterministic)
                .map(|(index, item)| {
                    (
                        format!("item {index} ({})", item.kind.name()),
                        None,
                        item.kind,
                    )
                }),
        )?;
        let today = self.today();
        let items = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let normalized = item.kind.normalize(&item.value, today).map_err(|error| {
                    VaultError::invalid(format!("item {index} ({}): {error}", item.kind.name()))
                })?;
                Ok(ValidItem {
                    value: normalized,
                    format: item.format,
                })
            })
            .collect::<Result<Vec<_>, VaultError>>()?;
        if deterministic > 0 {
            self.spend_detokenize_budget(caller, deterministic)?;
        }
        self.retry_commit(|| {
            self.try_tokenize(customer, &items, purpose, request_id.as_ref(), audit)
        })
        .await
    }
}

impl Vault {
    async fn try_tokenize(
        &self,
        customer: &CustomerId,
        items: &[ValidItem],
        purpose: &Purpose,
        request_id: Option<&RequestId<'_>>,
        audit: &AuditEntry,
    ) -> Result<Vec<String>, Attempt> {
        let now = self.now_ms();
        let id = customer.as_str();
        let mut writable = self.customer_for_write(customer, now).await?;
        self.check_consent(purpose, customer, &writable.record, &writable.cipher)
            .await?;
        let request = request_id.map(|request_id| {
            let digest = request_id.digest(&writable.token_key, id, &purpose.name, items);
            (request_id, digest)
        });
        if let Some((request_id, digest)) = &request {
            if let Some(tokens) = request_id.remembered(&writable.record, digest)? {
                // A retry: its first call committed these tokens.
                self.store.append_audit(vec![audit.clone()]).await?;
                return Ok(tokens);
            }
        }
        let mut change = writable.change(customer);
        let mut minter = TokenMinter::new(self, customer, &writable.token_key);
        let mut issued = Vec::with_capacity(items.len());
        let mut new_formats = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let kind = item.value.kind();
            let what = format!("item {index} ({})", kind.name());
            let minted = minter
                .mint_or_reuse(&item.value, item.format, "value", &what)
                .await?;
            if !minted.exists {
                let binding = Sealing::of(&writable.record)?.token(
                    id,
                    minted.token.as_str(),
                    kind.name(),
                    item.format.name(),
                );
                let ciphertext = writable
                    .cipher
                    .encrypt(&binding, item.value.as_str().as_bytes());
                writable.record.encryptions += 1;
                let token_record = TokenRecord {
                    customer_id: id.to_owned(),
                    kind: kind.name().to_owned(),
                    format: item.format.name().to_owned(),
                    target: TokenTarget::Value(ciphertext),
                };
                change
                    .new_tokens
                    .push((minted.token.clone().into(), token_record));
                new_formats.push(item.format);
            }
            issued.push(minted.token.into());
        }
        if !change.new_tokens.is_empty() && writable.expected_revision.is_some() {
            self.check_token_cap(id, change.new_tokens.len()).await?;
        } else if change.new_tokens.len() > self.limits.max_tokens_per_customer {
            return Err(self.token_cap_refusal(0, change.new_tokens.len()).into());
        }
        if let Some((request_id, digest)) = request {
            request_id.remember(&mut writable.record, digest, &issued);
        }
        // Reusing deterministic tokens of an existing customer without a
        // request id changes nothing.
        if !change.new_tokens.is_empty()
            || writable.expected_revision.is_none()
            || request_id.is_some()
        {
            change.audit = Some(audit.clone());
            let encryptions = writable.record.encryptions;
            writable.finish(&mut change)?;
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

    /// Refuses `added` more standalone tokens for a customer who would then
    /// hold more than the cap: every token of theirs is re-encrypted in the
    /// one commit of a re-key and deleted in the one commit of an erasure.
    async fn check_token_cap(&self, id: &str, added: usize) -> Result<(), Attempt> {
        // Every field has exactly one token; the rest are standalone.
        let all = self.store.customer_tokens(id).await?.len();
        let fields = self.store.fields(id).await?.len();
        let held = all.saturating_sub(fields);
        if held + added > self.limits.max_tokens_per_customer {
            return Err(self.token_cap_refusal(held, added).into());
        }
        Ok(())
    }

    fn token_cap_refusal(&self, held: usize, added: usize) -> VaultError {
        let max = self.limits.max_tokens_per_customer;
        VaultError::new(
            Reason::CustomerTokenLimit,
            format!(
                "a customer may hold at most {max} standalone tokens (--max-tokens-per-customer); \
                 this one holds {held} and the request adds {added}"
            ),
        )
        .with("limit", max.to_string())
    }
}
