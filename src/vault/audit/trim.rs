//! Retention of the audit log: TrimAuditLog deletes the oldest events once
//! they are archived (`pii-vault audit archive`), so that the log does not
//! grow without bound. The caller proves it holds what it trims by naming the
//! last event's hash; the vault keeps that event's place as the anchor the
//! held log chains from, so the archive and the live log verify as one chain.
//!
//! What the vault refuses: an event not held (trimmed already, or not yet
//! written), a hash that is not the event's, the newest event (the head is
//! always kept), and an event younger than `--audit-min-retention`, so that a
//! stolen admin credential cannot wipe recent history. A chain that does not
//! verify from the anchor through the event is DATA_LOSS, and nothing is
//! deleted.

use crate::vault::Call;
use std::time::Duration;

use crate::policy::Scope;
use crate::store::{hex, AuditHead, AuditQuery, AuditTrim, CommitError};

use crate::vault::{Reason, Vault, VaultError};

/// `--audit-min-retention`'s default: a week of history no trim can touch.
pub const DEFAULT_AUDIT_MIN_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Events read per step while re-verifying what a trim deletes.
const TRIM_VERIFY_PAGE: usize = 10_000;

/// What to trim: every event up to `through_seq`, whose hash the caller names.
#[derive(Clone, Debug)]
pub struct TrimRequest {
    pub through_seq: u64,
    /// Hex SHA-256, as events show their hash.
    pub through_hash: String,
}

/// What a trim did, and where the held log now starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrimmedLog {
    pub events_trimmed: u64,
    pub anchor_seq: u64,
    pub anchor_hash: String,
}

fn refused(message: String) -> VaultError {
    VaultError::new(Reason::AuditTrimRefused, message)
}

impl crate::vault::Audit<'_> {
    /// Deletes every audit event up to `request.through_seq` and makes it the
    /// anchor, with an event of its own, in one atomic write. Needs both
    /// keys:admin (the vault's administrative scope) and audit:read (whoever
    /// trims must be able to read, and so archive, what it trims); refusals
    /// are audited.
    pub async fn trim_audit_log(
        &self,
        call: &Call<'_>,
        request: TrimRequest,
    ) -> Result<TrimmedLog, VaultError> {
        call.caller.require_scope(Scope::KeysAdmin)?;
        call.caller.require_scope(Scope::AuditRead)?;
        let through_hash = parse_hash(&request.through_hash)?;
        // One trim at a time in this process; the store's anchor check
        // refuses one that another process ran in between.
        let _trimming = self.audit_trim_lock.lock().await;
        let through = self.check_trim(request.through_seq, through_hash).await?;
        let anchor = self.store.audit_anchor().await?;
        if let Some(bad_seq) = self.first_break(anchor, through.seq).await? {
            return Err(VaultError::integrity(format!(
                "the audit chain is broken at event {bad_seq}; nothing was trimmed"
            )));
        }
        let trim = AuditTrim {
            expected_anchor: anchor,
            through,
            event: call.event.clone(),
        };
        let events_trimmed = self
            .store
            .trim_audit(trim)
            .await
            .map_err(|error| match error {
                CommitError::Conflict => refused(format!(
                    "the audit log changed while the trim through event {} was checked \
                     (another trim ran); read the log again",
                    through.seq
                )),
                other => other.into(),
            })?;
        Ok(TrimmedLog {
            events_trimmed,
            anchor_seq: through.seq,
            anchor_hash: hex(&through.hash),
        })
    }
}

impl Vault {
    /// The event to trim through, if it is held with this hash, is not the
    /// newest and is old enough.
    async fn check_trim(
        &self,
        through_seq: u64,
        through_hash: [u8; 32],
    ) -> Result<AuditHead, VaultError> {
        let anchor = self.store.audit_anchor().await?;
        let (head_seq, _) = self.store.audit_head().await?;
        if through_seq == 0 {
            return Err(refused(
                "through_seq 0 is not held: audit events are numbered from 1".into(),
            )
            .in_field("through_seq"));
        }
        if through_seq <= anchor.seq {
            return Err(refused(format!(
                "through_seq {through_seq} is not held: the audit events up to {} were trimmed \
                 already",
                anchor.seq
            ))
            .in_field("through_seq"));
        }
        if through_seq > head_seq {
            return Err(refused(format!(
                "through_seq {through_seq} is not held: the newest audit event is {head_seq}"
            ))
            .in_field("through_seq"));
        }
        if through_seq == head_seq {
            return Err(refused(format!(
                "through_seq {through_seq} is the newest audit event: the head of the chain is \
                 always kept"
            ))
            .in_field("through_seq"));
        }
        let query = AuditQuery {
            after_seq: through_seq - 1,
            limit: 1,
            ..AuditQuery::default()
        };
        let event = self
            .store
            .audit_events(&query)
            .await?
            .into_iter()
            .next()
            .filter(|event| event.seq == through_seq)
            .ok_or_else(|| {
                refused(format!(
                    "through_seq {through_seq} is not a held audit event"
                ))
                .in_field("through_seq")
            })?;
        if event.hash != through_hash {
            return Err(refused(format!(
                "through_hash is not the hash of audit event {through_seq}"
            ))
            .in_field("through_hash"));
        }
        let retention_ms = i64::try_from(self.audit_min_retention.as_millis()).unwrap_or(i64::MAX);
        if event.at_ms > self.now_ms().saturating_sub(retention_ms) {
            return Err(refused(format!(
                "audit event {through_seq} is younger than the minimum retention of {} \
                 (--audit-min-retention): it cannot be trimmed yet",
                humantime::format_duration(self.audit_min_retention)
            ))
            .in_field("through_seq"));
        }
        Ok(AuditHead {
            seq: through_seq,
            hash: through_hash,
        })
    }

    /// The first event from the anchor through `through_seq` whose number,
    /// link or hash is wrong, if any.
    async fn first_break(
        &self,
        anchor: AuditHead,
        through_seq: u64,
    ) -> Result<Option<u64>, VaultError> {
        let mut last_seq = anchor.seq;
        let mut prev_hash = anchor.hash;
        while last_seq < through_seq {
            let query = AuditQuery {
                after_seq: last_seq,
                limit: ((through_seq - last_seq) as usize).min(TRIM_VERIFY_PAGE),
                ..AuditQuery::default()
            };
            let page = self.store.audit_events(&query).await?;
            if page.is_empty() {
                return Ok(Some(last_seq + 1));
            }
            for event in page {
                let expected_seq = last_seq + 1;
                if event.seq != expected_seq
                    || event.prev_hash != prev_hash
                    || event.hash != event.computed_hash()
                {
                    return Ok(Some(expected_seq));
                }
                prev_hash = event.hash;
                last_seq = expected_seq;
            }
        }
        Ok(None)
    }

    /// Where the held audit log starts: the last event trimmed from it, as an
    /// export states it.
    pub(in crate::vault) async fn audit_trimmed_through(&self) -> Result<u64, VaultError> {
        Ok(self.store.audit_anchor().await?.seq)
    }
}

fn parse_hash(text: &str) -> Result<[u8; 32], VaultError> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            VaultError::invalid_field(
                "through_hash",
                "through_hash must be 64 hex characters, the SHA-256 an audit event shows",
            )
        })
}
