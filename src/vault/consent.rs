//! Consent: opt-ins and opt-outs per purpose, kept encrypted under the
//! customer's own key (they are the customer's data), and enforced for every
//! purpose whose legal basis is consent.

use serde::{Deserialize, Serialize};

use crate::crypto::{Binding, DataCipher};
use crate::policy::{LegalBasis, Purpose, Scope};
use crate::store::{CustomerRecord, PolicyVersionRecord};

use super::{notices, now_ms, Attempt, Caller, CustomerId, Vault, VaultError};

/// Longest accepted policy version and consent source, in bytes.
const MAX_LABEL_LEN: usize = 128;
/// Where the ledger's ciphertext belongs (its associated data).
const LEDGER_LABEL: &str = "privacy-ledger";

/// One opt-in or opt-out, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEvent {
    pub purpose: String,
    pub granted: bool,
    pub policy_version: String,
    pub source: String,
    pub recorded_at_ms: i64,
}

/// A policy version the customer acknowledged having seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub policy_version: String,
    pub at_ms: i64,
}

/// The customer's privacy choices: every consent event, oldest first, and the
/// policy notices they acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    pub consents: Vec<ConsentEvent>,
    pub acknowledged: Vec<Acknowledgement>,
}

impl PrivacyLedger {
    /// The customer's ledger, decrypted (empty when they never chose anything).
    pub fn open(
        customer: &CustomerId,
        record: &CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<PrivacyLedger, VaultError> {
        let Some(ciphertext) = &record.privacy else {
            return Ok(PrivacyLedger::default());
        };
        let plaintext = cipher.decrypt(&ledger_binding(customer), ciphertext)?;
        postcard::from_bytes(&plaintext)
            .map_err(|_| VaultError::Internal("privacy ledger does not decode".into()))
    }

    /// Encrypts the ledger into the customer's record.
    pub fn seal_into(
        &self,
        customer: &CustomerId,
        record: &mut CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<(), VaultError> {
        let plaintext = zeroize::Zeroizing::new(
            postcard::to_stdvec(self)
                .map_err(|_| VaultError::Internal("privacy ledger does not encode".into()))?,
        );
        record.privacy = Some(cipher.encrypt(&ledger_binding(customer), &plaintext));
        record.encryptions += 1;
        Ok(())
    }

    /// The latest event per purpose, in the order purposes were first chosen.
    pub fn current(&self) -> Vec<&ConsentEvent> {
        let mut latest: Vec<&ConsentEvent> = Vec::new();
        for event in &self.consents {
            match latest.iter_mut().find(|seen| seen.purpose == event.purpose) {
                Some(seen) => *seen = event,
                None => latest.push(event),
            }
        }
        latest
    }

    pub fn current_for(&self, purpose: &str) -> Option<&ConsentEvent> {
        self.consents
            .iter()
            .rev()
            .find(|event| event.purpose == purpose)
    }
}

fn ledger_binding(customer: &CustomerId) -> Binding<'_> {
    Binding::Record {
        customer_id: customer.as_str(),
        label: LEDGER_LABEL,
    }
}

/// Why a use of `purpose` is refused for a customer with this ledger, if it is:
/// no consent, a withdrawn one, or one given under a policy version older than
/// the latest that changed the purpose and asked for consent again. Purposes
/// with another legal basis need no consent.
pub fn consent_refusal(
    purpose: &Purpose,
    ledger: &PrivacyLedger,
    versions: &[PolicyVersionRecord],
) -> Option<VaultError> {
    if purpose.basis != LegalBasis::Consent {
        return None;
    }
    let name = &purpose.name;
    match ledger.current_for(name) {
        Some(event) if event.granted => {
            let renewal = notices::renewal_due(name, &event.policy_version, versions)?;
            Some(VaultError::denied(format!(
                "consent for purpose \"{name}\" must be renewed under policy version \"{}\": \
                 it was given under an earlier version",
                renewal.version
            )))
        }
        Some(_) => Some(VaultError::denied(format!(
            "consent for purpose \"{name}\" was withdrawn by the customer"
        ))),
        None => Some(VaultError::denied(format!(
            "consent for purpose \"{name}\" is missing: the customer has not opted in"
        ))),
    }
}

/// A consent change as a client asks for it.
pub struct ConsentRequest {
    pub customer_id: String,
    pub purpose: String,
    pub granted: bool,
    pub policy_version: String,
    pub source: String,
}

impl Vault {
    /// Checks that this customer allows `purpose` (a no-op unless its basis is consent).
    pub(super) async fn check_consent(
        &self,
        purpose: &Purpose,
        customer: &CustomerId,
        record: &CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<(), VaultError> {
        if purpose.basis != LegalBasis::Consent {
            return Ok(());
        }
        let ledger = PrivacyLedger::open(customer, record, cipher)?;
        let versions = self.store.policy_versions().await?;
        match consent_refusal(purpose, &ledger, &versions) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Records an opt-in or opt-out; it takes effect on the very next call.
    pub async fn set_consent(
        &self,
        caller: &Caller,
        request: ConsentRequest,
    ) -> Result<ConsentEvent, VaultError> {
        let entry = self.audit_entry(
            caller,
            "SetConsent",
            &request.customer_id,
            &[],
            &request.purpose,
        );
        let result = self.try_set_consent(caller, &request, &entry).await;
        self.audit_refusal(entry, result).await
    }

    async fn try_set_consent(
        &self,
        caller: &Caller,
        request: &ConsentRequest,
        entry: &crate::store::AuditEntry,
    ) -> Result<ConsentEvent, VaultError> {
        caller.require_scope(Scope::ConsentWrite)?;
        let customer = CustomerId::parse(&request.customer_id)?;
        let purpose = self
            .policy
            .purpose(&request.purpose)
            .ok_or_else(|| super::unknown_purpose(&request.purpose))?;
        if purpose.basis != LegalBasis::Consent {
            return Err(VaultError::invalid(format!(
                "purpose \"{}\" is based on {}, not consent",
                purpose.name,
                purpose.basis.name()
            )));
        }
        check_label("policy_version", &request.policy_version)?;
        let versions = self.store.policy_versions().await?;
        if !request.policy_version.is_empty()
            && !versions.is_empty()
            && notices::seq_of(&request.policy_version, &versions).is_none()
        {
            return Err(VaultError::invalid(format!(
                "policy_version \"{}\" has not been published",
                request.policy_version
            )));
        }
        check_label("source", &request.source)?;
        let event = ConsentEvent {
            purpose: purpose.name.clone(),
            granted: request.granted,
            policy_version: request.policy_version.clone(),
            source: request.source.clone(),
            recorded_at_ms: now_ms(),
        };
        self.retry_commit(|| self.try_record_consent(&customer, &event, entry))
            .await?;
        Ok(event)
    }

    async fn try_record_consent(
        &self,
        customer: &CustomerId,
        event: &ConsentEvent,
        entry: &crate::store::AuditEntry,
    ) -> Result<(), Attempt> {
        let mut writable = self
            .customer_for_write(customer, event.recorded_at_ms)
            .await?;
        let mut ledger = PrivacyLedger::open(customer, &writable.record, &writable.cipher)?;
        ledger.consents.push(event.clone());
        ledger.seal_into(customer, &mut writable.record, &writable.cipher)?;
        let mut change = writable.change(customer);
        change.audit = Some(entry.clone());
        writable.finish(&mut change);
        self.store.commit(change).await?;
        Ok(())
    }

    /// The customer's consents: the current state per purpose, or every event.
    pub async fn list_consents(
        &self,
        caller: &Caller,
        customer_id: &str,
        include_history: bool,
    ) -> Result<Vec<ConsentEvent>, VaultError> {
        let entry = self.audit_entry(caller, "ListConsents", customer_id, &[], "");
        let result = async {
            caller.require_scope(Scope::ConsentWrite)?;
            let customer = CustomerId::parse(customer_id)?;
            let (ledger, _) = self.ledger_of(&customer).await?;
            Ok(if include_history {
                ledger.consents
            } else {
                ledger.current().into_iter().cloned().collect()
            })
        }
        .await;
        self.audit_outcome(entry, result).await
    }

    /// A customer's ledger and when they joined; NOT_FOUND for a customer the
    /// vault does not hold.
    pub(super) async fn ledger_of(
        &self,
        customer: &CustomerId,
    ) -> Result<(PrivacyLedger, i64), VaultError> {
        let record = self
            .store
            .customer(customer.as_str())
            .await?
            .ok_or_else(|| VaultError::not_found("customer not found"))?;
        let cipher = self.keys.cipher(customer, &record).await?;
        Ok((
            PrivacyLedger::open(customer, &record, &cipher)?,
            record.created_at_ms,
        ))
    }

    /// The purposes of the policy, for anyone authenticated.
    pub fn list_purposes(&self) -> &[Purpose] {
        self.policy.purposes()
    }
}

fn check_label(what: &str, value: &str) -> Result<(), VaultError> {
    if value.len() > MAX_LABEL_LEN || value.chars().any(char::is_control) {
        return Err(VaultError::invalid(format!(
            "{what} must be at most {MAX_LABEL_LEN} bytes without control characters"
        )));
    }
    Ok(())
}
