//! PutFields, GetFields and DeleteFields: a customer's named profile fields.

use crate::vault::Reason;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::policy::Purpose;
use crate::policy::Scope;
use crate::store::{
    AuditEntry, CustomerChange, CustomerRecord, FieldRecord, IndexEntry, TokenRecord, TokenTarget,
};

use crate::vault::sealing::{advance_revision, Sealing};
use crate::vault::tokenize::{check_deterministic, TokenMinter};
use crate::vault::{
    reveal, shown_for, stored_kind, Attempt, AuditedAnswer, Call, Caller, CustomerId, FieldKind,
    FieldName, Limits, Normalized, Shown, TokenFormat, Vault, VaultError,
};

/// One field as a client sent it.
pub struct FieldInput {
    pub name: String,
    pub kind: FieldKind,
    pub value: String,
}

/// A field after validation: its name parsed and its value normalized.
struct ValidField {
    name: FieldName,
    kind: FieldKind,
    normalized: Normalized,
}

/// Everything one PutFields writes, for each try at committing it.
#[derive(Clone, Copy)]
struct FieldWrite<'a> {
    customer: &'a CustomerId,
    fields: &'a [ValidField],
    format: TokenFormat,
    purpose: &'a Purpose,
    audit: &'a AuditEntry,
    /// The revision the caller read (0: none yet), when it asked for a check.
    expected_revision: Option<u64>,
}

/// What a PutFields wrote: each field's token, and the customer's revision now.
pub struct FieldsWritten {
    pub tokens: BTreeMap<String, String>,
    pub revision: u64,
}

/// The fields a GetFields returns, and the customer's revision they were read at.
pub struct FieldsRead {
    pub fields: Vec<FieldView>,
    pub revision: u64,
}

/// One field as a caller may see it. Its `Debug` leaves the value out.
pub struct FieldView {
    pub name: String,
    pub kind: FieldKind,
    pub value: Option<String>,
    pub token: String,
    pub shown: Shown,
    pub error: Option<VaultError>,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for FieldView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldView")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("value", &crate::vault::redacted(&self.value))
            .field("token", &self.token)
            .field("shown", &self.shown)
            .field("error", &self.error)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish()
    }
}

impl crate::vault::Data<'_> {
    /// Stores (inserts or replaces) fields of one customer; returns each field's
    /// token. Any invalid field rejects the whole request with nothing written,
    /// and so does a customer no longer at `expected_revision` (ABORTED).
    pub async fn put_fields(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        inputs: Vec<FieldInput>,
        purpose: &str,
        format: TokenFormat,
        expected_revision: Option<u64>,
    ) -> Result<FieldsWritten, VaultError> {
        let caller = call.caller;
        caller.require_scope(Scope::DataWrite)?;
        let purpose = self.check_purpose(caller, purpose)?;
        let fields = self.validate_fields(inputs)?;
        if format == TokenFormat::Deterministic {
            let asked = fields.iter().map(|field| {
                let what = format!("field \"{}\" ({})", field.name, field.kind.name());
                (what, Some(field.name.as_str()), field.kind)
            });
            let count = check_deterministic(caller, asked)?;
            self.spend_detokenize_budget(caller, count)?;
        }
        let write = FieldWrite {
            customer,
            fields: &fields,
            format,
            purpose,
            audit: &call.event,
            expected_revision,
        };
        self.retry_commit(|| self.try_put_fields(&write)).await
    }

    /// Reads fields of one customer (all of them when `field_names` is
    /// empty), each disclosed as the caller's policy allows.
    pub async fn get_fields(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        field_names: &[String],
        purpose: &str,
    ) -> Result<FieldsRead, VaultError> {
        call.caller.require_scope(Scope::DataRead)?;
        self.abuse.read(call.caller)?;
        let purpose = self.check_purpose(call.caller, purpose)?;
        Limits::check_count(
            "field_names",
            field_names.len(),
            self.limits.max_fields_per_request,
        )?;
        let wanted = field_names
            .iter()
            .map(|name| FieldName::parse(name))
            .collect::<Result<Vec<_>, _>>()?;
        let record = self.existing_customer(customer.as_str()).await?;
        let stored: BTreeMap<String, FieldRecord> = self
            .store
            .fields(customer.as_str())
            .await?
            .into_iter()
            .collect();
        let selected: Vec<(String, Option<FieldRecord>)> = if wanted.is_empty() {
            stored
                .into_iter()
                .map(|(name, field)| (name, Some(field)))
                .collect()
        } else {
            wanted
                .into_iter()
                .map(|name| {
                    // `get`, not `remove`: a name asked for twice is there both times.
                    let field = stored.get(name.as_str()).cloned();
                    (name.as_str().to_owned(), field)
                })
                .collect()
        };
        let cipher = self.keys.cipher(customer, &record).await?;
        self.check_consent(purpose, customer, &record, &cipher)
            .await?;
        let sealing = Sealing::of(&record)?;
        let fields = selected
            .into_iter()
            .map(|(name, field)| match field {
                Some(field) => {
                    let opener = Opener {
                        customer,
                        cipher: &cipher,
                        sealing,
                    };
                    self.view_field(call.caller, &opener, name, field)
                }
                None => Ok(missing_field(name)),
            })
            .collect::<Result<_, _>>()?;
        Ok(FieldsRead {
            fields,
            revision: record.revision,
        })
    }

    /// Deletes named fields (their values, tokens and index entries) of one customer.
    pub async fn delete_fields(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        field_names: &[String],
    ) -> Result<u32, VaultError> {
        call.caller.require_scope(Scope::DataWrite)?;
        if field_names.is_empty() {
            return Err(VaultError::invalid_field(
                "field_names",
                "field_names: name at least one field",
            ));
        }
        Limits::check_count(
            "field_names",
            field_names.len(),
            self.limits.max_fields_per_request,
        )?;
        let names = field_names
            .iter()
            .map(|name| FieldName::parse(name))
            .collect::<Result<BTreeSet<_>, _>>()?;
        self.retry_commit(|| self.try_delete_fields(customer, &names, &call.event))
            .await
    }
}

/// An "all fields" read names in its event the fields it returned.
impl AuditedAnswer for FieldsRead {
    fn note_in(&self, event: &mut AuditEntry) {
        event.fields = self.fields.iter().map(|view| view.name.clone()).collect();
    }
}

impl Vault {
    fn validate_fields(&self, inputs: Vec<FieldInput>) -> Result<Vec<ValidField>, VaultError> {
        if inputs.is_empty() {
            return Err(VaultError::invalid(
                "fields: at least one field is required",
            ));
        }
        Limits::check_count("fields", inputs.len(), self.limits.max_fields_per_request)?;
        let today = self.today();
        let mut seen = BTreeSet::new();
        inputs
            .into_iter()
            .map(|input| {
                let name = FieldName::parse(&input.name)?;
                if !seen.insert(name.clone()) {
                    return Err(VaultError::invalid(format!(
                        "field \"{name}\" appears twice"
                    )));
                }
                let normalized = input.kind.normalize(&input.value, today).map_err(|error| {
                    VaultError::invalid(format!(
                        "field \"{name}\" ({}): {error}",
                        input.kind.name()
                    ))
                })?;
                Ok(ValidField {
                    name,
                    kind: input.kind,
                    normalized,
                })
            })
            .collect()
    }

    async fn try_put_fields(&self, write: &FieldWrite<'_>) -> Result<FieldsWritten, Attempt> {
        let FieldWrite {
            customer,
            fields,
            format,
            ..
        } = *write;
        let now = self.now_ms();
        let id = customer.as_str();
        let mut writable = self.customer_for_write(customer, now).await?;
        let current = writable.expected_revision.unwrap_or(0);
        if write
            .expected_revision
            .is_some_and(|expected| expected != current)
        {
            return Err(VaultError::new(
                Reason::RevisionMismatch,
                format!(
                    "the customer is at revision {current}, not the expected {}: read it again \
                 and retry",
                    write.expected_revision.unwrap_or(0)
                ),
            )
            .into());
        }
        self.check_consent(write.purpose, customer, &writable.record, &writable.cipher)
            .await?;
        let existing: HashMap<String, FieldRecord> = match writable.expected_revision {
            Some(_) => self.store.fields(id).await?.into_iter().collect(),
            None => HashMap::new(),
        };
        refuse_kind_changes(fields, &existing)?;
        let added = fields
            .iter()
            .filter(|field| !existing.contains_key(field.name.as_str()))
            .count();
        if existing.len() + added > self.limits.max_fields_per_customer {
            return Err(VaultError::new(Reason::CustomerFieldLimit, format!(
                "a customer may hold at most {} fields; this one holds {} and the request adds {added}",
                self.limits.max_fields_per_customer,
                existing.len()
            ))
            .into());
        }
        let mut change = writable.change(customer);
        let sealing = Sealing::of(&writable.record)?;
        let mut minter = TokenMinter::new(self, customer, &writable.token_key);
        let mut tokens = BTreeMap::new();
        for field in fields {
            let name = field.name.as_str();
            let old = existing.get(name);
            let token = match old {
                Some(old) => old.token.clone(),
                None => {
                    let scope = format!("field:{name}");
                    let what = format!("field \"{name}\" ({})", field.kind.name());
                    minter
                        .mint(&field.normalized, format, &scope, &what)
                        .await?
                        .into()
                }
            };
            let binding = sealing.field(id, name, field.kind.name(), &token);
            let ciphertext = writable
                .cipher
                .encrypt(&binding, field.normalized.as_str().as_bytes());
            writable.record.encryptions += 1;
            let blind_index = field.kind.is_searchable().then(|| {
                let (version, index) = self.keys.blind_index(name, &field.normalized);
                writable.record.wrapped_under.insert(version);
                index
            });
            if let Some(old_index) = old.and_then(|old| old.blind_index) {
                change.delete_index.push(IndexEntry {
                    field_name: name.to_owned(),
                    blind_index: old_index,
                });
            }
            if let Some(blind_index) = blind_index {
                change.put_index.push(IndexEntry {
                    field_name: name.to_owned(),
                    blind_index,
                });
            }
            let token_record = TokenRecord {
                customer_id: id.to_owned(),
                kind: field.kind.name().to_owned(),
                format: format.name().to_owned(),
                target: TokenTarget::Field(name.to_owned()),
            };
            // A replaced value keeps its token (and its kind: see refuse_kind_changes).
            if old.is_none() {
                change.new_tokens.push((token.clone(), token_record));
            }
            change.put_fields.push((
                name.to_owned(),
                FieldRecord {
                    kind: field.kind.name().to_owned(),
                    token: token.clone(),
                    ciphertext,
                    updated_at_ms: now,
                    blind_index,
                },
            ));
            tokens.insert(name.to_owned(), token);
        }
        // Deleting an index entry that is also re-added must not win.
        change
            .delete_index
            .retain(|entry| !change.put_index.contains(entry));
        change.audit = Some(write.audit.clone());
        let encryptions = writable.record.encryptions;
        let new_tokens = change.new_tokens.len();
        writable.finish(&mut change)?;
        self.store.commit(change).await?;
        (0..new_tokens).for_each(|_| self.stats.token_issued(format));
        self.rekey_if_worn(customer, encryptions).await;
        Ok(FieldsWritten {
            tokens,
            revision: current + 1,
        })
    }

    fn view_field(
        &self,
        caller: &Caller,
        opener: &Opener<'_>,
        name: String,
        field: FieldRecord,
    ) -> Result<FieldView, VaultError> {
        let kind = stored_kind(&field.kind)?;
        let shown = shown_for(caller, Some(&name), kind);
        let value = match shown {
            Shown::Plaintext | Shown::Masked => {
                let binding = opener.sealing.field(
                    opener.customer.as_str(),
                    &name,
                    &field.kind,
                    &field.token,
                );
                let plaintext = opener
                    .cipher
                    .decrypt(&binding, &field.ciphertext)
                    .map_err(|error| integrity_failure(&name, error))?;
                let text = std::str::from_utf8(&plaintext)
                    .map_err(|_| VaultError::internal("stored value is not UTF-8"))?;
                reveal(shown, kind, text)?
            }
            Shown::TokenOnly | Shown::Denied => None,
        };
        let error = (shown == Shown::Denied).then(|| {
            VaultError::new(
                Reason::FieldNotVisible,
                format!(
                    "principal \"{}\" may not see field \"{name}\"",
                    caller.name()
                ),
            )
        });
        Ok(FieldView {
            token: if shown == Shown::Denied {
                String::new()
            } else {
                field.token
            },
            name,
            kind,
            value,
            shown,
            error,
            updated_at_ms: field.updated_at_ms,
        })
    }

    async fn try_delete_fields(
        &self,
        customer: &CustomerId,
        names: &BTreeSet<FieldName>,
        audit: &AuditEntry,
    ) -> Result<u32, Attempt> {
        let id = customer.as_str();
        let mut record = self.existing_customer(id).await?;
        if Sealing::of(&record)? == Sealing::Unbound {
            record = self.migrate_binding(customer).await?;
        }
        let mut change = CustomerChange {
            customer_id: id.to_owned(),
            expected_revision: Some(record.revision),
            ..CustomerChange::default()
        };
        for name in names {
            if let Some(field) = self.store.field(id, name.as_str()).await? {
                change.delete_fields.push(name.as_str().to_owned());
                change.delete_tokens.push(field.token);
                if let Some(blind_index) = field.blind_index {
                    change.delete_index.push(IndexEntry {
                        field_name: name.as_str().to_owned(),
                        blind_index,
                    });
                }
            }
        }
        let deleted = change.delete_fields.len() as u32;
        if deleted == 0 {
            self.store.append_audit(vec![audit.clone()]).await?;
            return Ok(0);
        }
        self.commit_at_next_revision(customer, record, change, audit)
            .await?;
        Ok(deleted)
    }

    /// Commits `change` (which expects `record`'s revision) with `record`
    /// moved to its next revision and `audit` as its event. The privacy
    /// ledger is sealed to the revision, so it is re-sealed (see `sealing`).
    pub(in crate::vault) async fn commit_at_next_revision(
        &self,
        customer: &CustomerId,
        mut record: CustomerRecord,
        mut change: CustomerChange,
        audit: &AuditEntry,
    ) -> Result<(), Attempt> {
        let next = record.revision + 1;
        if record.privacy.is_some() {
            let cipher = self.keys.cipher(customer, &record).await?;
            advance_revision(customer.as_str(), &mut record, next, &cipher)?;
        } else {
            record.revision = next;
        }
        change.customer = Some(record);
        change.audit = Some(audit.clone());
        self.store.commit(change).await?;
        Ok(())
    }
}

/// What opens one customer's field values.
struct Opener<'a> {
    customer: &'a CustomerId,
    cipher: &'a crate::crypto::DataCipher,
    sealing: Sealing,
}

/// A field keeps the kind it was stored with: a new kind would drop its
/// search index and change who sees it in plaintext, so it takes a
/// DeleteFields first, on purpose, rather than a PutFields by mistake.
fn refuse_kind_changes(
    fields: &[ValidField],
    existing: &HashMap<String, FieldRecord>,
) -> Result<(), VaultError> {
    for field in fields {
        if let Some(old) = existing.get(field.name.as_str()) {
            if old.kind != field.kind.name() {
                return Err(VaultError::new(
                    Reason::FieldKindMismatch,
                    format!(
                        "field \"{}\" is stored as kind {}, not {}: delete the field first to \
                     store it as another kind",
                        field.name,
                        old.kind,
                        field.kind.name()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A stored value that does not open where its records say it belongs: it
/// was moved, relabelled or re-pointed. Names the field, never the value.
pub(in crate::vault) fn integrity_failure(
    what: &str,
    error: crate::crypto::CryptoError,
) -> VaultError {
    VaultError::integrity(format!(
        "the stored value of \"{what}\" does not open as its records describe it ({error})"
    ))
}

fn missing_field(name: String) -> FieldView {
    FieldView {
        error: Some(VaultError::new(
            Reason::FieldNotFound,
            format!("field \"{name}\" not found"),
        )),
        name,
        kind: FieldKind::Generic,
        value: None,
        token: String::new(),
        shown: Shown::Denied,
        updated_at_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_view_prints_everything_but_its_value() {
        let view = FieldView {
            name: "ssn".into(),
            kind: FieldKind::Ssn,
            value: Some("219-09-9999".into()),
            token: "tok_abc".into(),
            shown: Shown::Plaintext,
            error: None,
            updated_at_ms: 7,
        };
        let printed = format!("{view:?} {view:#?}");
        assert!(!printed.contains("219-09-9999"), "{printed}");
        assert!(
            printed.contains("ssn") && printed.contains("tok_abc"),
            "{printed}"
        );
        assert!(printed.contains("redacted"), "{printed}");
    }
}
