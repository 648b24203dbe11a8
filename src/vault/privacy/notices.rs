//! Privacy-policy versions, plain-English notices of what changed, and the
//! re-consent a changed purpose asks for.

use crate::vault::Reason;
use crate::vault::{AuditedAnswer, Call};
use std::collections::BTreeSet;

use crate::policy::{LegalBasis, Policy, Scope};
use crate::store::{AuditEntry, PolicyVersionRecord};

use crate::vault::{Attempt, Caller, CustomerId, PrivacyLedger, Vault, VaultError};

/// Longest summary of a policy change, in bytes.
const MAX_SUMMARY_LEN: usize = 4096;

/// A policy version as a client publishes it.
pub struct PolicyChange {
    pub version: String,
    pub summary: String,
    pub changed_purposes: Vec<String>,
    pub requires_reconsent: bool,
}

/// A published version the customer has not acknowledged yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub version: PolicyVersionRecord,
    /// Consent-based purposes this customer must grant again.
    pub purposes_needing_consent: Vec<String>,
}

/// The publication order of a version, if it was published.
pub fn seq_of(version: &str, versions: &[PolicyVersionRecord]) -> Option<u64> {
    versions
        .iter()
        .find(|published| published.version == version)
        .map(|published| published.seq)
}

/// The latest version that changed `purpose` and asked for consent again, when
/// a consent given under `given_under` predates it (an unpublished or empty
/// version counts as older than any).
pub fn renewal_due<'a>(
    purpose: &str,
    given_under: &str,
    versions: &'a [PolicyVersionRecord],
) -> Option<&'a PolicyVersionRecord> {
    let required = versions.iter().rev().find(|version| {
        version.requires_reconsent && version.changed_purposes.iter().any(|p| p == purpose)
    })?;
    let given_seq = seq_of(given_under, versions).unwrap_or(0);
    (given_seq < required.seq).then_some(required)
}

/// The notices of a customer with this ledger who joined at `customer_since_ms`:
/// versions published since then (a tie counts: better told twice than never)
/// and since the last one they acknowledged,
/// each with the consent-based purposes whose granted consent predates it.
pub fn pending_notices(
    ledger: &PrivacyLedger,
    customer_since_ms: i64,
    versions: &[PolicyVersionRecord],
    policy: &Policy,
) -> Vec<Notice> {
    let acknowledged_seq = ledger
        .acknowledged
        .iter()
        .filter_map(|ack| seq_of(&ack.policy_version, versions))
        .max()
        .unwrap_or(0);
    versions
        .iter()
        .filter(|version| {
            version.seq > acknowledged_seq && version.published_at_ms >= customer_since_ms
        })
        .map(|version| Notice {
            purposes_needing_consent: version
                .changed_purposes
                .iter()
                .filter(|purpose| {
                    version.requires_reconsent
                        && policy
                            .purpose(purpose)
                            .is_some_and(|known| known.basis == LegalBasis::Consent)
                        && ledger.current_for(purpose).is_some_and(|consent| {
                            consent.granted
                                && seq_of(&consent.policy_version, versions).unwrap_or(0)
                                    < version.seq
                        })
                })
                .cloned()
                .collect(),
            version: version.clone(),
        })
        .collect()
}

impl crate::vault::Privacy<'_> {
    /// Publishes a new policy version; versions are never reused.
    pub async fn publish_policy(
        &self,
        call: &Call<'_>,
        change: PolicyChange,
    ) -> Result<PolicyVersionRecord, VaultError> {
        call.caller.require_scope(Scope::PrivacyAdmin)?;
        Vault::validate_policy_change(&call.caller.policy, &change)?;
        self.retry_commit(|| self.try_publish(&change, &call.event))
            .await
    }

    /// Every published version, oldest first.
    pub async fn policy_versions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<PolicyVersionRecord>, VaultError> {
        caller.require_scope(Scope::PrivacyAdmin)?;
        Ok(self.store.policy_versions().await?)
    }

    /// The versions published since the customer last acknowledged one (or
    /// joined), oldest first, with the consents they must renew.
    pub async fn list_notices(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
    ) -> Result<Vec<Notice>, VaultError> {
        call.caller.require_scope(Scope::ConsentWrite)?;
        let (ledger, customer_since_ms) = self.ledger_of(customer).await?;
        let versions = self.store.policy_versions().await?;
        Ok(pending_notices(
            &ledger,
            customer_since_ms,
            &versions,
            &call.caller.policy,
        ))
    }

    /// Records that the customer saw `version` (and so every earlier one).
    pub async fn acknowledge_notice(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        version: &str,
    ) -> Result<(), VaultError> {
        call.caller.require_scope(Scope::ConsentWrite)?;
        let versions = self.store.policy_versions().await?;
        if seq_of(version, &versions).is_none() {
            return Err(VaultError::new(
                Reason::PolicyVersionNotFound,
                "no published policy version has this name",
            ));
        }
        self.retry_commit(|| self.try_acknowledge(customer, version, &call.event))
            .await
    }
}

/// The notices name nothing the request did not.
impl AuditedAnswer for Vec<Notice> {
    fn note_in(&self, _event: &mut AuditEntry) {}
}

impl Vault {
    fn validate_policy_change(policy: &Policy, change: &PolicyChange) -> Result<(), VaultError> {
        let version_ok = !change.version.is_empty()
            && change.version.len() <= 64
            && change
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !version_ok {
            return Err(VaultError::invalid(
                "version must be 1-64 letters, digits, '.', '_' or '-'",
            ));
        }
        if change.summary.trim().is_empty()
            || change.summary.len() > MAX_SUMMARY_LEN
            || change.summary.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(VaultError::invalid(format!(
                "summary must be plain text of 1-{MAX_SUMMARY_LEN} bytes"
            )));
        }
        for purpose in &change.changed_purposes {
            if policy.purpose(purpose).is_none() {
                return Err(VaultError::invalid(format!(
                    "changed_purposes: {}",
                    crate::vault::unknown_purpose(purpose)
                )));
            }
        }
        Ok(())
    }

    async fn try_publish(
        &self,
        change: &PolicyChange,
        audit: &AuditEntry,
    ) -> Result<PolicyVersionRecord, Attempt> {
        let versions = self.store.policy_versions().await?;
        if seq_of(&change.version, &versions).is_some() {
            return Err(already_published(&change.version).into());
        }
        let purposes: BTreeSet<&String> = change.changed_purposes.iter().collect();
        let record = PolicyVersionRecord {
            seq: versions.len() as u64 + 1,
            version: change.version.clone(),
            summary: change.summary.clone(),
            changed_purposes: purposes.into_iter().cloned().collect(),
            requires_reconsent: change.requires_reconsent,
            published_at_ms: self.now_ms(),
        };
        // `Taken` means a concurrent publish won: the retry re-reads and names
        // the version as already published when it was this one.
        self.store
            .publish_policy_version(record.clone(), audit.clone())
            .await
            .map_err(Attempt::Commit)?;
        Ok(record)
    }

    async fn try_acknowledge(
        &self,
        customer: &CustomerId,
        version: &str,
        audit: &AuditEntry,
    ) -> Result<(), Attempt> {
        let mut record = self.existing_customer(customer.as_str()).await?;
        if crate::vault::sealing::Sealing::of(&record)? == crate::vault::sealing::Sealing::Unbound {
            record = self.migrate_binding(customer).await?;
        }
        let cipher = self.keys.cipher(customer, &record).await?;
        let mut ledger = PrivacyLedger::open(customer, &record, &cipher)?;
        ledger.acknowledged.push(crate::vault::Acknowledgement {
            policy_version: version.to_owned(),
            at_ms: self.now_ms(),
        });
        ledger.compact(self.limits.ledger_history);
        let mut change = crate::store::CustomerChange {
            customer_id: customer.as_str().to_owned(),
            expected_revision: Some(record.revision),
            audit: Some(audit.clone()),
            ..Default::default()
        };
        record.revision += 1;
        ledger.seal_into(customer, &mut record, &cipher)?;
        change.customer = Some(record);
        self.store.commit(change).await?;
        Ok(())
    }
}

fn already_published(version: &str) -> VaultError {
    VaultError::new(
        Reason::PolicyVersionExists,
        format!("policy version \"{version}\" is already published; versions are never reused"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::dev_policy_toml;
    use crate::vault::{Acknowledgement, ConsentEvent};

    fn version(seq: u64, changed: &[&str], reconsent: bool, at_ms: i64) -> PolicyVersionRecord {
        PolicyVersionRecord {
            seq,
            version: format!("v{seq}"),
            summary: format!("what changed in v{seq}"),
            changed_purposes: changed.iter().map(|p| (*p).to_owned()).collect(),
            requires_reconsent: reconsent,
            published_at_ms: at_ms,
        }
    }

    fn granted(purpose: &str, under: &str) -> ConsentEvent {
        ConsentEvent {
            purpose: purpose.into(),
            granted: true,
            policy_version: under.into(),
            source: "app".into(),
            recorded_at_ms: 0,
        }
    }

    /// The dev policy: "marketing" rests on consent, "support" does not.
    fn policy() -> Policy {
        Policy::parse(&dev_policy_toml(&"0".repeat(64))).expect("the dev policy parses")
    }

    #[test]
    fn renewal_is_due_only_for_a_consent_older_than_the_version_that_asked_again() {
        let versions = [
            version(1, &[], false, 10),
            version(2, &["marketing"], true, 20),
            version(3, &["marketing"], false, 30),
        ];
        let due = |under: &str| renewal_due("marketing", under, &versions).map(|v| v.seq);
        assert_eq!(due("v1"), Some(2));
        assert_eq!(due(""), Some(2), "no version counts as older than any");
        assert_eq!(due("unpublished"), Some(2));
        assert_eq!(due("v2"), None);
        assert_eq!(
            due("v3"),
            None,
            "v3 changed the purpose without asking again"
        );
        assert_eq!(renewal_due("support", "v1", &versions), None);
    }

    #[test]
    fn notices_start_at_joining_and_after_the_last_acknowledgement() {
        let versions = [
            version(1, &[], false, 10),
            version(2, &[], false, 20),
            version(3, &[], false, 30),
        ];
        let seqs = |ledger: &PrivacyLedger, since_ms| -> Vec<u64> {
            pending_notices(ledger, since_ms, &versions, &policy())
                .iter()
                .map(|notice| notice.version.seq)
                .collect()
        };
        let mut ledger = PrivacyLedger::default();
        assert_eq!(seqs(&ledger, 0), [1, 2, 3]);
        assert_eq!(seqs(&ledger, 20), [2, 3], "a tie with joining is told");
        ledger.acknowledged.push(Acknowledgement {
            policy_version: "v2".into(),
            at_ms: 25,
        });
        assert_eq!(seqs(&ledger, 0), [3]);
    }

    #[test]
    fn a_notice_asks_again_only_for_granted_consent_purposes_it_changed() {
        let versions = [
            version(1, &[], false, 10),
            version(2, &["marketing", "support"], true, 20),
        ];
        let mut ledger = PrivacyLedger::default();
        ledger.consents.push(granted("marketing", "v1"));
        ledger.consents.push(granted("support", "v1"));
        let notices = pending_notices(&ledger, 15, &versions, &policy());
        assert_eq!(notices.len(), 1);
        // "support" rests on legitimate interest: no consent to renew.
        assert_eq!(notices[0].purposes_needing_consent, ["marketing"]);

        ledger.consents.push(granted("marketing", "v2"));
        let notices = pending_notices(&ledger, 15, &versions, &policy());
        assert!(notices[0].purposes_needing_consent.is_empty());
    }
}

/// The operations, on a real vault whose clock the tests move.
#[cfg(test)]
mod operation_tests {
    use std::time::Duration;

    use crate::vault::testing::TestVault;
    use crate::vault::{
        Action, ConsentRequest, CustomerId, FieldKind, Notice, PolicyChange, VaultError,
    };

    async fn publish(test: &TestVault, version: &str, changed: &[&str]) -> Result<(), VaultError> {
        let dev = test.dev();
        let change = PolicyChange {
            version: version.into(),
            summary: "What changed.".into(),
            changed_purposes: changed.iter().map(|&purpose| purpose.to_owned()).collect(),
            requires_reconsent: !changed.is_empty(),
        };
        let call = test.call(&dev, Action::PublishPolicy, "");
        call.run(|call| async move { test.vault.privacy().publish_policy(&call, change).await })
            .await?;
        Ok(())
    }

    async fn notices(test: &TestVault, customer_id: &str) -> Vec<Notice> {
        let dev = test.dev();
        let call = test.call(&dev, Action::ListNotices, customer_id);
        call.read(|call| async move {
            let customer = CustomerId::parse(customer_id)?;
            test.vault.privacy().list_notices(&call, &customer).await
        })
        .await
        .unwrap()
    }

    async fn acknowledge(
        test: &TestVault,
        customer_id: &str,
        version: &str,
    ) -> Result<(), VaultError> {
        let dev = test.dev();
        let call = test.call(&dev, Action::AcknowledgeNotice, customer_id);
        call.run(|call| async move {
            let customer = CustomerId::parse(customer_id)?;
            (test.vault.privacy())
                .acknowledge_notice(&call, &customer, version)
                .await
        })
        .await
    }

    async fn grant_marketing(test: &TestVault, customer_id: &str, version: &str) {
        let dev = test.dev();
        let consent = ConsentRequest {
            purpose: "marketing".into(),
            granted: true,
            policy_version: version.into(),
            source: "test".into(),
        };
        let call = test.call(&dev, Action::SetConsent, customer_id);
        call.run(|call| async move {
            let customer = CustomerId::parse(customer_id)?;
            (test.vault.privacy())
                .set_consent(&call, &customer, consent)
                .await
        })
        .await
        .unwrap();
    }

    fn versions(notices: &[Notice]) -> Vec<&str> {
        notices
            .iter()
            .map(|notice| notice.version.version.as_str())
            .collect()
    }

    #[tokio::test]
    async fn only_versions_published_after_a_customer_joined_are_pending() {
        let test = &TestVault::open().await;
        publish(test, "2025-01", &[]).await.unwrap();
        test.advance(Duration::from_secs(60));
        test.put("cust-1", ("email", FieldKind::Email, "ann@example.com"))
            .await
            .unwrap();
        assert_eq!(versions(&notices(test, "cust-1").await), Vec::<&str>::new());
        grant_marketing(test, "cust-1", "2025-01").await;

        test.advance(Duration::from_secs(60));
        publish(test, "2025-06", &["marketing"]).await.unwrap();
        let pending = notices(test, "cust-1").await;
        assert_eq!(versions(&pending), ["2025-06"]);
        // Granted under the earlier version: to be asked again.
        assert_eq!(pending[0].purposes_needing_consent, ["marketing"]);
    }

    #[tokio::test]
    async fn acknowledging_a_version_clears_it_and_every_earlier_one() {
        let test = &TestVault::open().await;
        test.put("cust-1", ("email", FieldKind::Email, "ann@example.com"))
            .await
            .unwrap();
        for version in ["2025-01", "2025-06"] {
            test.advance(Duration::from_secs(60));
            publish(test, version, &[]).await.unwrap();
        }
        assert_eq!(
            versions(&notices(test, "cust-1").await),
            ["2025-01", "2025-06"]
        );

        acknowledge(test, "cust-1", "2025-06").await.unwrap();
        assert_eq!(versions(&notices(test, "cust-1").await), Vec::<&str>::new());
    }

    #[tokio::test]
    async fn an_unpublished_version_cannot_be_acknowledged() {
        let test = &TestVault::open().await;
        test.put("cust-1", ("email", FieldKind::Email, "ann@example.com"))
            .await
            .unwrap();
        let refused = acknowledge(test, "cust-1", "2099-01").await.unwrap_err();
        assert_eq!(refused.code_name(), "NOT_FOUND", "{refused}");
    }
}
