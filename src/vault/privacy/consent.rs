//! Consent: opt-ins and opt-outs per purpose, kept encrypted under the
//! customer's own key (they are the customer's data), and enforced for every
//! purpose whose legal basis is consent.

use crate::store::AuditEntry;
use crate::vault::Reason;
use crate::vault::{AuditedAnswer, Call};
use serde::{Deserialize, Serialize};

use crate::crypto::DataCipher;
use crate::policy::{LegalBasis, Purpose, Scope};
use crate::store::{CustomerRecord, PolicyVersionRecord};

use crate::vault::sealing::Sealing;
use crate::vault::{notices, Attempt, Caller, CustomerId, Vault, VaultError};

/// Longest accepted policy version and consent source, in bytes.
const MAX_LABEL_LEN: usize = 128;

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
    /// The ledger is sealed with the layout the record names, and in the
    /// bound layout at the record's revision.
    pub fn open(
        customer: &CustomerId,
        record: &CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<PrivacyLedger, VaultError> {
        PrivacyLedger::open_stored(customer.as_str(), record, cipher)
    }

    pub(in crate::vault) fn open_stored(
        customer_id: &str,
        record: &CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<PrivacyLedger, VaultError> {
        let Some(ciphertext) = &record.privacy else {
            return Ok(PrivacyLedger::default());
        };
        let binding = Sealing::of(record)?.ledger(customer_id, record.revision);
        let plaintext = cipher.decrypt(&binding, ciphertext).map_err(|error| {
            VaultError::integrity(format!(
                "the privacy ledger does not open for this customer record ({error})"
            ))
        })?;
        postcard::from_bytes(&plaintext)
            .map_err(|_| VaultError::internal("privacy ledger does not decode"))
    }

    /// Encrypts the ledger into the customer's record, bound (in the bound
    /// layout) to the record's revision as it is now: a change that then moves
    /// the record to its next revision re-seals it (`advance_revision`).
    pub fn seal_into(
        &self,
        customer: &CustomerId,
        record: &mut CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<(), VaultError> {
        self.seal_stored(customer.as_str(), record, cipher)
    }

    pub(in crate::vault) fn seal_stored(
        &self,
        customer_id: &str,
        record: &mut CustomerRecord,
        cipher: &DataCipher,
    ) -> Result<(), VaultError> {
        let plaintext = zeroize::Zeroizing::new(
            postcard::to_stdvec(self)
                .map_err(|_| VaultError::internal("privacy ledger does not encode"))?,
        );
        let binding = Sealing::of(record)?.ledger(customer_id, record.revision);
        record.privacy = Some(cipher.encrypt(&binding, &plaintext));
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

    /// Drops old events: keeps the current consent of every purpose, the
    /// latest acknowledgement of every policy version, and the `history`
    /// newest events of each list besides.
    pub fn compact(&mut self, history: usize) {
        keep_current_and_newest(&mut self.consents, history, |event| event.purpose.clone());
        keep_current_and_newest(&mut self.acknowledged, history, |ack| {
            ack.policy_version.clone()
        });
    }

    pub fn current_for(&self, purpose: &str) -> Option<&ConsentEvent> {
        self.consents
            .iter()
            .rev()
            .find(|event| event.purpose == purpose)
    }
}

/// Keeps, in order, the last event of each `key` and the `newest` last events.
fn keep_current_and_newest<T>(events: &mut Vec<T>, newest: usize, key: impl Fn(&T) -> String) {
    let first_newest = events.len().saturating_sub(newest);
    let mut seen = std::collections::HashSet::new();
    let mut keep: Vec<bool> = vec![false; events.len()];
    for (index, event) in events.iter().enumerate().rev() {
        keep[index] = seen.insert(key(event)) || index >= first_newest;
    }
    let mut flags = keep.into_iter();
    events.retain(|_| flags.next().unwrap_or(true));
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
            let refusal = VaultError::new(
                Reason::ConsentOutdated,
                format!(
                    "consent for purpose \"{name}\" must be renewed under policy version \"{}\": \
                     it was given under an earlier version",
                    renewal.version
                ),
            );
            Some(
                refusal
                    .with("purpose", name)
                    .with("policy_version", &renewal.version),
            )
        }
        Some(_) => Some(
            VaultError::new(
                Reason::ConsentWithdrawn,
                format!("consent for purpose \"{name}\" was withdrawn by the customer"),
            )
            .with("purpose", name),
        ),
        None => Some(
            VaultError::new(
                Reason::ConsentMissing,
                format!("consent for purpose \"{name}\" is missing: the customer has not opted in"),
            )
            .with("purpose", name),
        ),
    }
}

/// A consent change as a client asks for it.
pub struct ConsentRequest {
    pub purpose: String,
    pub granted: bool,
    pub policy_version: String,
    pub source: String,
}

impl crate::vault::Privacy<'_> {
    /// Records an opt-in or opt-out; it takes effect on the very next call.
    pub async fn set_consent(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        request: ConsentRequest,
    ) -> Result<ConsentEvent, VaultError> {
        call.caller.require_scope(Scope::ConsentWrite)?;
        let purpose = call
            .caller
            .policy
            .purpose(&request.purpose)
            .ok_or_else(|| crate::vault::unknown_purpose(&request.purpose))?;
        if purpose.basis != LegalBasis::Consent {
            return Err(VaultError::invalid(format!(
                "purpose \"{}\" is based on {}, not consent",
                purpose.name,
                purpose.basis.name()
            )));
        }
        check_label("policy_version", &request.policy_version)?;
        // A version must be published before a consent can name it, even
        // while none is: a consent naming a version published later would
        // count as given under it, though the customer never saw its notice.
        // An empty version is accepted and counts as older than any.
        let versions = self.store.policy_versions().await?;
        if !request.policy_version.is_empty()
            && notices::seq_of(&request.policy_version, &versions).is_none()
        {
            return Err(VaultError::invalid_field(
                "policy_version",
                format!(
                    "policy_version \"{}\" has not been published: publish it first \
                     (PublishPolicy), or leave policy_version empty",
                    request.policy_version
                ),
            ));
        }
        check_label("source", &request.source)?;
        let event = ConsentEvent {
            purpose: purpose.name.clone(),
            granted: request.granted,
            policy_version: request.policy_version.clone(),
            source: request.source.clone(),
            recorded_at_ms: self.now_ms(),
        };
        self.retry_commit(|| self.try_record_consent(customer, &event, &call.event))
            .await?;
        Ok(event)
    }

    /// The customer's consents: the current state per purpose, or every event.
    pub async fn list_consents(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        include_history: bool,
    ) -> Result<Vec<ConsentEvent>, VaultError> {
        call.caller.require_scope(Scope::ConsentWrite)?;
        let (ledger, _) = self.ledger_of(customer).await?;
        Ok(if include_history {
            ledger.consents
        } else {
            ledger.current().into_iter().cloned().collect()
        })
    }

    /// The purposes of the caller's policy, for anyone authenticated.
    pub fn list_purposes<'c>(&self, caller: &'c Caller) -> &'c [Purpose] {
        caller.policy.purposes()
    }
}

/// The consents name nothing the request did not.
impl AuditedAnswer for Vec<ConsentEvent> {
    fn note_in(&self, _event: &mut AuditEntry) {}
}

impl Vault {
    /// Checks that this customer allows `purpose` (a no-op unless its basis is consent).
    pub(in crate::vault) async fn check_consent(
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

    async fn try_record_consent(
        &self,
        customer: &CustomerId,
        event: &ConsentEvent,
        entry: &AuditEntry,
    ) -> Result<(), Attempt> {
        let mut writable = self
            .customer_for_write(customer, event.recorded_at_ms)
            .await?;
        let mut ledger = PrivacyLedger::open(customer, &writable.record, &writable.cipher)?;
        ledger.consents.push(event.clone());
        ledger.compact(self.limits.ledger_history);
        ledger.seal_into(customer, &mut writable.record, &writable.cipher)?;
        let mut change = writable.change(customer);
        change.audit = Some(entry.clone());
        writable.finish(&mut change)?;
        self.store.commit(change).await?;
        Ok(())
    }

    /// A customer's ledger and when they joined; NOT_FOUND for a customer the
    /// vault does not hold.
    pub(in crate::vault) async fn ledger_of(
        &self,
        customer: &CustomerId,
    ) -> Result<(PrivacyLedger, i64), VaultError> {
        let record = self.existing_customer(customer.as_str()).await?;
        let cipher = self.keys.cipher(customer, &record).await?;
        Ok((
            PrivacyLedger::open(customer, &record, &cipher)?,
            record.created_at_ms,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn consent(purpose: &str, at: i64) -> ConsentEvent {
        ConsentEvent {
            purpose: purpose.into(),
            granted: at % 2 == 0,
            policy_version: "v1".into(),
            source: "app".into(),
            recorded_at_ms: at,
        }
    }

    fn purpose(name: &str, basis: LegalBasis) -> Purpose {
        Purpose {
            name: name.into(),
            description: String::new(),
            basis,
        }
    }

    fn reason_of(refusal: Option<VaultError>) -> Option<Reason> {
        refusal.map(|error| error.reason())
    }

    #[test]
    fn consent_is_needed_only_for_consent_purposes_and_only_while_granted_and_current() {
        let marketing = purpose("marketing", LegalBasis::Consent);
        let versions = [PolicyVersionRecord {
            seq: 1,
            version: "v1".into(),
            summary: "marketing changed".into(),
            changed_purposes: vec!["marketing".into()],
            requires_reconsent: true,
            published_at_ms: 10,
        }];
        let mut ledger = PrivacyLedger::default();
        let contract = purpose("billing", LegalBasis::Contract);
        assert!(consent_refusal(&contract, &ledger, &versions).is_none());
        assert_eq!(
            reason_of(consent_refusal(&marketing, &ledger, &versions)),
            Some(Reason::ConsentMissing)
        );

        let mut given = consent("marketing", 2);
        given.policy_version = String::new();
        ledger.consents.push(given.clone());
        assert_eq!(
            reason_of(consent_refusal(&marketing, &ledger, &versions)),
            Some(Reason::ConsentOutdated),
            "given before v1 asked again"
        );

        given.policy_version = "v1".into();
        ledger.consents.push(given.clone());
        assert!(consent_refusal(&marketing, &ledger, &versions).is_none());

        given.granted = false;
        ledger.consents.push(given);
        assert_eq!(
            reason_of(consent_refusal(&marketing, &ledger, &versions)),
            Some(Reason::ConsentWithdrawn)
        );
    }

    #[test]
    fn compaction_keeps_every_current_state_and_the_newest_history() {
        let mut ledger = PrivacyLedger::default();
        ledger.consents.push(consent("marketing", 1));
        for at in 2..50 {
            ledger.consents.push(consent("analytics", at));
        }
        ledger.acknowledged = (0..30)
            .map(|i| Acknowledgement {
                policy_version: format!("v{}", i % 3),
                at_ms: i,
            })
            .collect();
        let current_before: Vec<ConsentEvent> = ledger.current().into_iter().cloned().collect();
        ledger.compact(5);
        let times: Vec<i64> = ledger.consents.iter().map(|e| e.recorded_at_ms).collect();
        assert_eq!(times, [1, 45, 46, 47, 48, 49]);
        let current_after: Vec<ConsentEvent> = ledger.current().into_iter().cloned().collect();
        assert_eq!(current_after, current_before);
        let acks: Vec<i64> = ledger.acknowledged.iter().map(|a| a.at_ms).collect();
        assert_eq!(acks, [25, 26, 27, 28, 29]);
        ledger.compact(0);
        assert_eq!(ledger.consents.len(), 2);
        assert_eq!(ledger.acknowledged.len(), 3);
    }
}

/// The operations, on a real vault.
#[cfg(test)]
mod operation_tests {
    use crate::vault::testing::TestVault;
    use crate::vault::{Action, ConsentRequest, CustomerId, FieldKind, FieldsRead, VaultError};

    async fn set_marketing(test: &TestVault, granted: bool) {
        let dev = test.dev();
        let consent = ConsentRequest {
            purpose: "marketing".into(),
            granted,
            policy_version: String::new(),
            source: "test".into(),
        };
        let call = test.call(&dev, Action::SetConsent, "cust-1");
        call.run(|call| async move {
            let customer = CustomerId::parse("cust-1")?;
            (test.vault.privacy())
                .set_consent(&call, &customer, consent)
                .await
        })
        .await
        .unwrap();
    }

    async fn read_for_marketing(test: &TestVault) -> Result<FieldsRead, VaultError> {
        test.get("cust-1", "marketing").await
    }

    #[tokio::test]
    async fn a_consent_based_purpose_works_only_while_the_customer_opts_in() {
        let test = &TestVault::open().await;
        test.put("cust-1", ("email", FieldKind::Email, "ann@example.com"))
            .await
            .unwrap();
        let before = read_for_marketing(test).await.err().unwrap();
        assert_eq!(before.code_name(), "PERMISSION_DENIED", "{before}");

        set_marketing(test, true).await;
        let read = read_for_marketing(test)
            .await
            .map_err(|error| error.to_string());
        assert_eq!(read.map(|read| read.fields.len()), Ok(1));

        set_marketing(test, false).await;
        let after = read_for_marketing(test).await.err().unwrap();
        assert_eq!(after.code_name(), "PERMISSION_DENIED", "{after}");
    }
}
