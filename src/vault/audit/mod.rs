//! The audit trail of every call that touches a customer: who, what, which
//! fields (never values), for which purpose, and how it ended. Writes record
//! their event in the same commit as the change; reads append theirs before
//! the caller sees the answer; refusals are recorded at once or counted into
//! a later event (`refusals.rs`).

pub(super) mod action;
pub(super) mod call;
pub(super) mod refusals;
pub(super) mod trim;

/// The audit log (`AuditService`): listing, verification and trimming. A view of the vault that
/// offers only this capability's operations.
pub struct Audit<'a> {
    vault: &'a super::Vault,
}

impl<'a> Audit<'a> {
    pub(super) fn of(vault: &'a super::Vault) -> Self {
        Audit { vault }
    }
}

impl std::ops::Deref for Audit<'_> {
    type Target = super::Vault;

    fn deref(&self) -> &super::Vault {
        self.vault
    }
}

use crate::vault::Action;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::Scope;
use crate::store::{hex, AuditEntry, AuditQuery, AuditRecord};

use super::{CallNames, Caller, CustomerId, FieldName, Reason, Vault, VaultError};

/// Events returned by one ListAuditEvents call when the caller sets no limit,
/// and the most it may ask for: on the stream, and in one page.
const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 10_000;
const MAX_PAGE_LIMIT: usize = 1_000;
/// Events read per step while verifying the chain.
const VERIFY_PAGE: usize = 10_000;
/// Events one VerifyAuditLog call checks at most (and when not told), so
/// that it ends well within the call deadline however long the log grows.
const MAX_VERIFY_EVENTS: u64 = 100_000;

/// The result of walking (part of) the hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainVerification {
    pub intact: bool,
    /// Events checked by this call.
    pub events_checked: u64,
    pub first_bad_seq: u64,
    pub head_hash: String,
    /// Whether the walk is over: a break was found, or the head reached.
    pub complete: bool,
    /// When not complete: the last event checked, to go on from.
    pub next_after_seq: u64,
    /// Where the held log starts: the last event trimmed from it (0 and the
    /// genesis hash before any trim), as its archive ends.
    pub anchor_seq: u64,
    pub anchor_hash: String,
}

/// Where a verification starts and how far it may go.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyFrom {
    /// The last event an earlier call checked (0: the start of the log).
    pub after_seq: u64,
    /// Events to check at most (0: the most one call checks).
    pub max_events: u32,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub customer_id: String,
    pub principal: String,
    pub since_ms: Option<i64>,
    pub limit: u32,
    /// Only events after this sequence number (a page token).
    pub after_seq: u64,
}

/// One page of events, and whether more may match after it.
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub events: Vec<AuditRecord>,
    pub more: bool,
}

/// The limit a listing asked for, within `max`.
fn list_limit(asked: u32, max: usize) -> usize {
    match asked as usize {
        0 => DEFAULT_LIST_LIMIT,
        limit => limit.min(max),
    }
}

impl crate::vault::Audit<'_> {
    /// Audit events, oldest first, filtered by customer, principal and time.
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        filter: AuditFilter,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        caller.require_scope(Scope::AuditRead)?;
        let limit = list_limit(filter.limit, MAX_LIST_LIMIT);
        Ok(self.store.audit_events(&audit_query(filter, limit)).await?)
    }

    /// One page of `list_audit_events`, at most `MAX_PAGE_LIMIT` events, and
    /// whether more match after it.
    pub async fn list_audit_page(
        &self,
        caller: &Caller,
        filter: AuditFilter,
    ) -> Result<AuditPage, VaultError> {
        caller.require_scope(Scope::AuditRead)?;
        let limit = list_limit(filter.limit, MAX_PAGE_LIMIT);
        // One more than the page: whether it exists says if another page does.
        let mut events = self
            .store
            .audit_events(&audit_query(filter, limit + 1))
            .await?;
        let more = events.len() > limit;
        events.truncate(limit);
        Ok(AuditPage { events, more })
    }

    /// Walks the chain from `from.after_seq` (whose event must still be there
    /// with the hash it had; 0: from the anchor, where the held log starts)
    /// for at most `from.max_events` events, up to the head as it was when the
    /// call began, and reports the first event whose link or hash is wrong,
    /// or where to go on from. The first held event must link to the anchor.
    pub async fn verify_audit_log(
        &self,
        caller: &Caller,
        from: VerifyFrom,
    ) -> Result<ChainVerification, VaultError> {
        caller.require_scope(Scope::AuditRead)?;
        let max_events = match u64::from(from.max_events) {
            0 => MAX_VERIFY_EVENTS,
            max => max.min(MAX_VERIFY_EVENTS),
        };
        // Events appended while the walk runs come after this head: they are
        // for the next verification, never mistaken for a cut-off chain. The
        // anchor is read after it: a trim in between moves both, and the
        // head stays past the anchor.
        let (head_seq, head_hash) = self.store.audit_head().await?;
        let anchor = self.store.audit_anchor().await?;
        if from.after_seq > head_seq {
            return Err(VaultError::invalid(format!(
                "after_seq {} is past the newest audit event, {head_seq}",
                from.after_seq
            )));
        }
        if from.after_seq != 0 && from.after_seq < anchor.seq {
            return Err(trimmed_through(anchor.seq, from.after_seq));
        }
        let verification = |intact: bool, events_checked: u64| ChainVerification {
            intact,
            events_checked,
            first_bad_seq: 0,
            head_hash: hex(&head_hash),
            complete: true,
            next_after_seq: 0,
            anchor_seq: anchor.seq,
            anchor_hash: hex(&anchor.hash),
        };
        let broken = |first_bad_seq: u64, events_checked: u64| ChainVerification {
            first_bad_seq,
            ..verification(false, events_checked)
        };
        let mut last_seq = from.after_seq.max(anchor.seq);
        let mut prev_hash = anchor.hash;
        if last_seq > anchor.seq {
            let query = AuditQuery {
                after_seq: last_seq - 1,
                limit: 1,
                ..AuditQuery::default()
            };
            match self.store.audit_events(&query).await?.first() {
                Some(event) if event.seq == last_seq && event.hash == event.computed_hash() => {
                    prev_hash = event.hash;
                }
                _ => {
                    return self
                        .unless_trimmed_since(anchor.seq, broken(last_seq, 0))
                        .await
                }
            }
        }
        let mut checked = 0;
        while last_seq < head_seq && checked < max_events {
            let wanted = (head_seq - last_seq).min(max_events - checked);
            let query = AuditQuery {
                after_seq: last_seq,
                limit: (wanted as usize).min(VERIFY_PAGE),
                ..AuditQuery::default()
            };
            let page = self.store.audit_events(&query).await?;
            if page.is_empty() {
                break;
            }
            for event in page {
                checked += 1;
                let expected_seq = last_seq + 1;
                let intact = event.seq == expected_seq
                    && event.prev_hash == prev_hash
                    && event.hash == event.computed_hash();
                if !intact {
                    let result = broken(expected_seq, checked);
                    return self.unless_trimmed_since(anchor.seq, result).await;
                }
                prev_hash = event.hash;
                last_seq = expected_seq;
            }
        }
        if last_seq < head_seq && checked == max_events {
            return Ok(ChainVerification {
                complete: false,
                next_after_seq: last_seq,
                ..verification(true, checked)
            });
        }
        // Events missing before the head, or a head pointing elsewhere: the
        // chain was cut or its head rewritten.
        if last_seq != head_seq || prev_hash != head_hash {
            let result = broken(last_seq + 1, checked);
            return self.unless_trimmed_since(anchor.seq, result).await;
        }
        Ok(verification(true, checked))
    }
}

impl Vault {
    /// An event of work the vault does by itself (principal `pii-vault`), such as
    /// a scheduled rotation; `request_id` says what started it.
    pub(super) fn system_entry(
        &self,
        action: Action,
        customer_id: &str,
        request_id: &str,
    ) -> AuditEntry {
        AuditEntry {
            at_ms: self.now_ms(),
            principal: "pii-vault".into(),
            action: action.name().into(),
            customer_id: customer_id.into(),
            outcome: "ok".into(),
            request_id: request_id.into(),
            ..AuditEntry::default()
        }
    }

    /// An event for this call, outcome "ok" until told otherwise. Only
    /// well-formed ids and names are recorded: the log never holds raw input.
    fn audit_entry(&self, caller: &Caller, action: Action, names: CallNames<'_>) -> AuditEntry {
        let declared = |purpose: &String| caller.policy.purpose(purpose).is_some();
        AuditEntry {
            at_ms: self.now_ms(),
            principal: caller.name().to_owned(),
            action: action.name().to_owned(),
            customer_id: CustomerId::parse(names.customer_id)
                .map(|id| id.to_string())
                .unwrap_or_default(),
            fields: (names.fields.iter())
                .filter(|name| FieldName::parse(name).is_ok())
                .chain(names.purposes.iter().filter(|purpose| declared(purpose)))
                .cloned()
                .collect(),
            purpose: caller
                .policy
                .purpose(names.purpose)
                .map(|known| known.name.clone())
                .unwrap_or_default(),
            outcome: "ok".to_owned(),
            request_id: caller.request_id.clone(),
            source: caller.source,
        }
    }

    /// For writes, whose success is audited in their own commit: records a refusal.
    async fn audit_refusal<T>(
        &self,
        entry: AuditEntry,
        result: Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                self.record_refusal(with_outcome(entry, &error)).await?;
                Err(error)
            }
        }
    }

    /// For reads: records the outcome before the caller sees the answer, so no
    /// value leaves the vault unaudited.
    async fn audit_outcome<T>(
        &self,
        entry: AuditEntry,
        result: Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        match &result {
            Ok(_) => self.append_audit(vec![entry]).await?,
            Err(error) => self.record_refusal(with_outcome(entry, error)).await?,
        }
        result
    }

    /// Records a refusal now, or counts it into an event written later.
    async fn record_refusal(&self, refusal: AuditEntry) -> Result<(), VaultError> {
        if self.refusals.admit(&refusal, Instant::now()) {
            self.append_audit(vec![refusal]).await?;
        }
        Ok(())
    }

    /// `events` less the refusals among them that are counted for later.
    pub(super) fn to_record_now(&self, events: Vec<AuditEntry>) -> Vec<AuditEntry> {
        let now = Instant::now();
        events
            .into_iter()
            .filter(|event| event.outcome == "ok" || self.refusals.admit(event, now))
            .collect()
    }

    /// Writes the events of counted refusals whose window has ended (all of
    /// them when `all`, at shutdown); an event whose write fails is tried
    /// again next time.
    pub async fn write_counted_refusals(&self, all: bool) -> Result<(), VaultError> {
        let _writing = self.refusals.writing.lock().await;
        let due = self.refusals.take_due(Instant::now(), self.now_ms(), all);
        if due.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.append_audit(due.clone()).await {
            let dropped = self.refusals.put_back(due);
            if dropped > 0 {
                tracing::error!(
                    dropped,
                    "counted refusals lost: too many wait to be written"
                );
            }
            return Err(error);
        }
        Ok(())
    }

    /// For as long as the vault serves: writes counted refusals as their
    /// windows end.
    pub async fn write_counted_refusals_as_windows_end(self: Arc<Self>) {
        let tick =
            (self.refusals.window() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            if let Err(error) = self.write_counted_refusals(false).await {
                tracing::warn!(%error, "could not write counted refusals; will try again");
            }
        }
    }

    pub(super) async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), VaultError> {
        Ok(self.store.append_audit(entries).await?)
    }

    /// A break found while a trim deleted the events being walked is no
    /// break: the caller is told to verify again.
    async fn unless_trimmed_since(
        &self,
        anchor_seq: u64,
        result: ChainVerification,
    ) -> Result<ChainVerification, VaultError> {
        let now = self.store.audit_anchor().await?;
        if now.seq != anchor_seq {
            return Err(VaultError::new(
                Reason::AuditEventsTrimmed,
                format!(
                    "the audit events up to {} were trimmed while the log was verified; \
                     verify again",
                    now.seq
                ),
            ));
        }
        Ok(result)
    }
}

/// A resume point among the events a trim deleted.
fn trimmed_through(anchor_seq: u64, after_seq: u64) -> VaultError {
    VaultError::new(
        Reason::AuditEventsTrimmed,
        format!(
            "after_seq {after_seq}: the audit events up to {anchor_seq} were trimmed (they are \
             in the audit archive); verify from 0, which starts at the anchor"
        ),
    )
    .in_field("after_seq")
}

/// The store query for a listing of at most `limit` events.
fn audit_query(filter: AuditFilter, limit: usize) -> AuditQuery {
    let non_empty = |text: String| (!text.is_empty()).then_some(text);
    AuditQuery {
        customer_id: non_empty(filter.customer_id),
        principal: non_empty(filter.principal),
        since_ms: filter.since_ms,
        after_seq: filter.after_seq,
        limit,
    }
}

pub(super) fn with_outcome(mut entry: AuditEntry, error: &VaultError) -> AuditEntry {
    entry.outcome = error.code_name().to_owned();
    entry
}
