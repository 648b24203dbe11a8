//! The audit log's records and hash chain. Each event's hash is SHA-256 over the
//! previous event's hash and a canonical, length-prefixed encoding of the event,
//! so changing, removing or reordering any stored event breaks every later link.
//!
//! An event may count repeated refusals instead of recording one call. The
//! count lives in the stored `outcome` text, `CODE;count=N;since_ms=T` (the
//! status code name, how many refused calls, the first one's time in
//! milliseconds since the epoch), so the record's encoding stays the one
//! every engine already holds and every stored chain still verifies. Status
//! code names and "ok" never contain `;`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An event as the domain describes it; the engine gives it its place in the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub principal: String,
    pub action: String,
    pub customer_id: String,
    /// Field names or value kinds, never values.
    pub fields: Vec<String>,
    pub purpose: String,
    /// "ok", or the refusal's status code name (with a count: `counted`).
    pub outcome: String,
    pub request_id: String,
    /// Where the call came from (an IPv4 address or an IPv6 /64), for the
    /// domain's refusal budget per address. Engines do not store it.
    pub source: Option<IpAddr>,
}

/// Refused calls counted into one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// How many refused calls the event stands for.
    pub count: u64,
    /// When the first of them happened, in milliseconds since the epoch.
    pub since_ms: i64,
}

impl AuditEntry {
    /// This refusal standing for `counted` refused calls.
    pub fn counted(mut self, counted: Counted) -> AuditEntry {
        self.outcome = format!(
            "{};count={};since_ms={}",
            self.outcome, counted.count, counted.since_ms
        );
        self
    }
}

/// A stored event: the entry, its sequence number and its links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: i64,
    pub principal: String,
    pub action: String,
    pub customer_id: String,
    pub fields: Vec<String>,
    pub purpose: String,
    pub outcome: String,
    pub request_id: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The hash "before" the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

impl AuditRecord {
    /// Chains `entry` after the event numbered `prev_seq` with hash `prev_hash`.
    pub fn chain(entry: AuditEntry, prev_seq: u64, prev_hash: [u8; 32]) -> AuditRecord {
        let mut record = AuditRecord {
            seq: prev_seq + 1,
            at_ms: entry.at_ms,
            principal: entry.principal,
            action: entry.action,
            customer_id: entry.customer_id,
            fields: entry.fields,
            purpose: entry.purpose,
            outcome: entry.outcome,
            request_id: entry.request_id,
            prev_hash,
            hash: [0; 32],
        };
        record.hash = record.computed_hash();
        record
    }

    /// "ok" or the status code name, without a count.
    pub fn outcome_code(&self) -> &str {
        self.outcome.split(';').next().unwrap_or_default()
    }

    /// The refused calls this event counts, when it counts some; `None` for
    /// an event of one call, as every event written before counting was.
    pub fn counted(&self) -> Option<Counted> {
        let mut parts = self.outcome.split(';').skip(1);
        let count = parts.next()?.strip_prefix("count=")?.parse().ok()?;
        let since_ms = parts.next()?.strip_prefix("since_ms=")?.parse().ok()?;
        parts
            .next()
            .is_none()
            .then_some(Counted { count, since_ms })
    }

    /// What `hash` must be for this record's contents and `prev_hash`.
    pub fn computed_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"piivault.audit.v1");
        hasher.update(self.prev_hash);
        hasher.update(self.seq.to_be_bytes());
        hasher.update(self.at_ms.to_be_bytes());
        for text in [
            &self.principal,
            &self.action,
            &self.customer_id,
            &self.purpose,
            &self.outcome,
            &self.request_id,
        ] {
            update_prefixed(&mut hasher, text);
        }
        hasher.update((self.fields.len() as u64).to_be_bytes());
        for field in &self.fields {
            update_prefixed(&mut hasher, field);
        }
        hasher.finalize().into()
    }
}

fn update_prefixed(hasher: &mut Sha256, text: &str) {
    hasher.update((text.len() as u64).to_be_bytes());
    hasher.update(text.as_bytes());
}

/// Where the chain ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// A trim of the audit log's oldest events (`Store::trim_audit`).
#[derive(Clone, Debug)]
pub struct AuditTrim {
    /// The anchor the caller verified the chain from: the trim is refused
    /// (`CommitError::Conflict`) if another trim moved it since.
    pub expected_anchor: AuditHead,
    /// The last event to delete, with the hash it must still have: it becomes
    /// the new anchor. It must not be the newest event.
    pub through: AuditHead,
    /// The event recording the trim, chained in the same atomic write.
    pub event: AuditEntry,
}

/// Which events `Store::audit_events` returns.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub customer_id: Option<String>,
    pub principal: Option<String>,
    pub since_ms: Option<i64>,
    /// Only events with a sequence number above this one.
    pub after_seq: u64,
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.customer_id
            .as_ref()
            .is_none_or(|customer| &record.customer_id == customer)
            && self
                .principal
                .as_ref()
                .is_none_or(|principal| &record.principal == principal)
            && self.since_ms.is_none_or(|since| record.at_ms >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at_ms: 1_700_000_000_000,
            principal: "checkout".into(),
            action: action.into(),
            customer_id: "cust-1".into(),
            fields: vec!["email".into()],
            purpose: "billing".into(),
            outcome: "ok".into(),
            request_id: "req_1".into(),
            source: None,
        }
    }

    #[test]
    fn each_event_links_to_the_one_before() {
        let first = AuditRecord::chain(entry("PutFields"), 0, GENESIS_HASH);
        let second = AuditRecord::chain(entry("GetFields"), first.seq, first.hash);
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(second.prev_hash, first.hash);
        assert_ne!(first.hash, second.hash);
    }

    #[test]
    fn changing_any_part_of_an_event_changes_its_hash() {
        let original = AuditRecord::chain(entry("GetFields"), 0, GENESIS_HASH);
        let mut altered = original.clone();
        altered.fields = vec!["ssn".into()];
        assert_ne!(altered.computed_hash(), original.hash);
        let mut altered = original.clone();
        altered.outcome = "PERMISSION_DENIED".into();
        assert_ne!(altered.computed_hash(), original.hash);
        let mut altered = original.clone();
        altered.at_ms += 1;
        assert_ne!(altered.computed_hash(), original.hash);
    }

    #[test]
    fn length_prefixes_keep_adjacent_texts_apart() {
        let mut a = entry("x");
        a.principal = "ab".into();
        a.action = "c".into();
        let mut b = entry("x");
        b.principal = "a".into();
        b.action = "bc".into();
        let a = AuditRecord::chain(a, 0, GENESIS_HASH);
        let b = AuditRecord::chain(b, 0, GENESIS_HASH);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn a_counted_refusal_keeps_its_count_in_the_outcome_text() {
        let mut refusal = entry("GetFields");
        refusal.outcome = "PERMISSION_DENIED".into();
        let counted = Counted {
            count: 57,
            since_ms: 1_700_000_000_123,
        };
        let record = AuditRecord::chain(refusal.counted(counted), 0, GENESIS_HASH);
        // The stored form is documented (docs/privacy.md, SECURITY.md): pinned here.
        assert_eq!(
            record.outcome,
            "PERMISSION_DENIED;count=57;since_ms=1700000000123"
        );
        assert_eq!(record.outcome_code(), "PERMISSION_DENIED");
        assert_eq!(record.counted(), Some(counted));
        // An old record decodes as before, and the count is covered by the hash.
        let bytes = postcard::to_stdvec(&record).unwrap();
        let decoded: AuditRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, record);
        let mut altered = record.clone();
        altered.outcome = "PERMISSION_DENIED;count=1;since_ms=1700000000123".into();
        assert_ne!(altered.computed_hash(), record.hash);
    }

    #[test]
    fn an_event_of_one_call_counts_nothing() {
        for outcome in ["ok", "NOT_FOUND", "", "NOT_FOUND;count=x;since_ms=1"] {
            let mut one = entry("GetFields");
            one.outcome = outcome.into();
            let record = AuditRecord::chain(one, 0, GENESIS_HASH);
            assert_eq!(record.counted(), None, "{outcome}");
        }
        let mut one = entry("GetFields");
        one.outcome = "NOT_FOUND".into();
        assert_eq!(
            AuditRecord::chain(one, 0, GENESIS_HASH).outcome_code(),
            "NOT_FOUND"
        );
    }

    #[test]
    fn the_hash_of_a_known_event_is_stable() {
        // Pins the canonical encoding: changing it breaks every stored chain.
        let record = AuditRecord::chain(entry("GetFields"), 0, GENESIS_HASH);
        // Computed independently with Python's hashlib from the encoding above.
        assert_eq!(
            data_encoding::HEXLOWER.encode(&record.hash),
            "ca65b2d5749780c442a7854d38bba09c308e644571753607db0d685028a6a347"
        );
    }
}
