//! The audit trail of every call that touches a customer: who, what, which
//! fields (never values), for which purpose, and how it ended. Writes record
//! their event in the same commit as the change; reads and refusals append
//! theirs before the caller sees the answer.

use crate::policy::Scope;
use crate::store::{hex, AuditEntry, AuditQuery, AuditRecord, GENESIS_HASH};

use super::{now_ms, Caller, CustomerId, FieldName, Vault, VaultError};

/// Events returned by one ListAuditEvents call when the caller sets no limit,
/// and the most it may ask for.
const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 10_000;
/// Events read per step while verifying the chain.
const VERIFY_PAGE: usize = 10_000;

/// The result of walking the hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainVerification {
    pub intact: bool,
    pub events_checked: u64,
    pub first_bad_seq: u64,
    pub head_hash: String,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub customer_id: String,
    pub principal: String,
    pub since_ms: Option<i64>,
    pub limit: u32,
}

impl Vault {
    /// An event for this call, outcome "ok" until told otherwise. Only
    /// well-formed ids and names are recorded: the log never holds raw input.
    pub(super) fn audit_entry(
        &self,
        caller: &Caller,
        action: &str,
        customer_id: &str,
        fields: &[String],
        purpose: &str,
    ) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms(),
            principal: caller.name().to_owned(),
            action: action.to_owned(),
            customer_id: CustomerId::parse(customer_id)
                .map(|id| id.to_string())
                .unwrap_or_default(),
            fields: fields
                .iter()
                .filter(|name| FieldName::parse(name).is_ok())
                .cloned()
                .collect(),
            purpose: self
                .policy
                .purpose(purpose)
                .map(|known| known.name.clone())
                .unwrap_or_default(),
            outcome: "ok".to_owned(),
            request_id: caller.request_id.clone(),
        }
    }

    /// For writes, whose success is audited in their own commit: records a refusal.
    pub(super) async fn audit_refusal<T>(
        &self,
        entry: AuditEntry,
        result: Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                self.append_audit(vec![with_outcome(entry, &error)]).await?;
                Err(error)
            }
        }
    }

    /// For reads: records the outcome before the caller sees the answer, so no
    /// value leaves the vault unaudited.
    pub(super) async fn audit_outcome<T>(
        &self,
        entry: AuditEntry,
        result: Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let entry = match &result {
            Ok(_) => entry,
            Err(error) => with_outcome(entry, error),
        };
        self.append_audit(vec![entry]).await?;
        result
    }

    pub(super) async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), VaultError> {
        Ok(self.store.append_audit(entries).await?)
    }

    /// Audit events, oldest first, filtered by customer, principal and time.
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        filter: AuditFilter,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        caller.require_scope(Scope::AuditRead)?;
        let limit = match filter.limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            limit => limit.min(MAX_LIST_LIMIT),
        };
        let non_empty = |text: String| (!text.is_empty()).then_some(text);
        let query = AuditQuery {
            customer_id: non_empty(filter.customer_id),
            principal: non_empty(filter.principal),
            since_ms: filter.since_ms,
            after_seq: 0,
            limit,
        };
        Ok(self.store.audit_events(&query).await?)
    }

    /// Walks the whole chain and reports the first event whose link or hash is wrong.
    pub async fn verify_audit_log(&self, caller: &Caller) -> Result<ChainVerification, VaultError> {
        caller.require_scope(Scope::AuditRead)?;
        let mut expected_seq = 1;
        let mut prev_hash = GENESIS_HASH;
        loop {
            let query = AuditQuery {
                after_seq: expected_seq - 1,
                limit: VERIFY_PAGE,
                ..AuditQuery::default()
            };
            let page = self.store.audit_events(&query).await?;
            let page_len = page.len();
            for record in page {
                let intact = record.seq == expected_seq
                    && record.prev_hash == prev_hash
                    && record.hash == record.computed_hash();
                if !intact {
                    return Ok(ChainVerification {
                        intact: false,
                        events_checked: expected_seq,
                        first_bad_seq: expected_seq,
                        head_hash: hex(&self.store.audit_head().await?.1),
                    });
                }
                prev_hash = record.hash;
                expected_seq += 1;
            }
            if page_len < VERIFY_PAGE {
                break;
            }
        }
        let (head_seq, head_hash) = self.store.audit_head().await?;
        let checked = expected_seq - 1;
        // A head beyond the last event, or pointing elsewhere, means events were cut off.
        let intact = head_seq == checked && head_hash == prev_hash;
        Ok(ChainVerification {
            intact,
            events_checked: checked,
            first_bad_seq: if intact { 0 } else { checked + 1 },
            head_hash: hex(&head_hash),
        })
    }
}

pub(super) fn with_outcome(mut entry: AuditEntry, error: &VaultError) -> AuditEntry {
    entry.outcome = error.code_name().to_owned();
    entry
}
