//! The audit chain as every engine extends it. A write's events take the
//! sequence numbers after the chain's head, each linked to the hash before
//! it, and an erasure's receipt names the event that records it. The hash of
//! an event is `AuditRecord::chain`'s (`audit.rs`), which stored chains pin.

use super::audit::{AuditEntry, AuditHead, AuditRecord};
use super::records::{hex, CustomerChange, Erasure, ReceiptRecord};

/// One write that takes its place in the audit chain, as an engine's group
/// commit queues it: changes applied all or none, the events that record
/// them, and for an erasure its proof.
pub struct ChainedWrite<C> {
    pub changes: Vec<C>,
    pub entries: Vec<AuditEntry>,
    pub proof: Option<ErasureProof>,
}

/// What an erasure leaves behind: its receipt, and the customer id it marks
/// as erased.
#[derive(Clone, Debug)]
pub struct ErasureProof {
    pub customer_id: String,
    pub receipt: ReceiptRecord,
}

/// A write's events as chained after a head, with its proof stamped.
pub struct Chained {
    pub records: Vec<AuditRecord>,
    /// The receipt names the hash of the write's first event.
    pub proof: Option<ErasureProof>,
}

impl Chained {
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        self.records.iter().map(|record| record.hash).collect()
    }
}

impl<C> Default for ChainedWrite<C> {
    fn default() -> Self {
        ChainedWrite {
            changes: Vec::new(),
            entries: Vec::new(),
            proof: None,
        }
    }
}

impl<C> ChainedWrite<C> {
    /// Events that record no change (reads, refusals).
    pub fn of_entries(entries: Vec<AuditEntry>) -> ChainedWrite<C> {
        ChainedWrite {
            entries,
            ..ChainedWrite::default()
        }
    }

    /// Whether the write stores nothing (a job that only waits for a sync).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.entries.is_empty() && self.proof.is_none()
    }

    /// The same write with each change converted (encoded for an engine).
    pub fn try_map<D, E>(
        self,
        convert: impl FnMut(C) -> Result<D, E>,
    ) -> Result<ChainedWrite<D>, E> {
        Ok(ChainedWrite {
            changes: self
                .changes
                .into_iter()
                .map(convert)
                .collect::<Result<_, _>>()?,
            entries: self.entries,
            proof: self.proof,
        })
    }

    /// Chains the write's events after `head`, which moves past them.
    pub fn chain(&self, head: &mut AuditHead) -> Chained {
        let records = chain_after(head, self.entries.iter().cloned());
        let proof = self.proof.as_ref().map(|proof| {
            let audit_hash = records.first().map(|first| hex(&first.hash));
            ErasureProof {
                customer_id: proof.customer_id.clone(),
                receipt: ReceiptRecord {
                    audit_hash: audit_hash.unwrap_or_default(),
                    ..proof.receipt.clone()
                },
            }
        });
        Chained { records, proof }
    }
}

impl ChainedWrite<CustomerChange> {
    /// Changes with the events they carry, taken out to be chained in order.
    pub fn of_changes(mut changes: Vec<CustomerChange>) -> ChainedWrite<CustomerChange> {
        let entries = changes
            .iter_mut()
            .filter_map(|change| change.audit.take())
            .collect();
        ChainedWrite {
            changes,
            entries,
            proof: None,
        }
    }

    pub fn of_erasure(erasure: Erasure) -> ChainedWrite<CustomerChange> {
        let proof = ErasureProof {
            customer_id: erasure.removal.customer_id.clone(),
            receipt: erasure.receipt,
        };
        ChainedWrite {
            changes: vec![erasure.removal.into()],
            entries: vec![erasure.audit],
            proof: Some(proof),
        }
    }
}

/// Chains `entries` after `head`, which moves past them.
pub fn chain_after(
    head: &mut AuditHead,
    entries: impl IntoIterator<Item = AuditEntry>,
) -> Vec<AuditRecord> {
    entries
        .into_iter()
        .map(|entry| {
            let record = AuditRecord::chain(entry, head.seq, head.hash);
            *head = AuditHead {
                seq: record.seq,
                hash: record.hash,
            };
            record
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::CustomerRemoval;
    use crate::store::GENESIS_HASH;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            action: action.into(),
            customer_id: "cust-1".into(),
            ..AuditEntry::default()
        }
    }

    #[test]
    fn a_writes_events_follow_the_head_and_move_it() {
        let mut head = AuditHead {
            seq: 41,
            hash: [5; 32],
        };
        let records = chain_after(&mut head, [entry("PutFields"), entry("GetFields")]);
        assert_eq!((records[0].seq, records[1].seq), (42, 43));
        assert_eq!(records[0].prev_hash, [5; 32]);
        assert_eq!(records[1].prev_hash, records[0].hash);
        assert_eq!(head.seq, 43);
        assert_eq!(head.hash, records[1].hash);
        for record in &records {
            assert_eq!(record.computed_hash(), record.hash);
        }
    }

    #[test]
    fn an_erasures_receipt_names_the_hash_of_its_event() {
        let receipt = ReceiptRecord {
            receipt_id: "rcpt-1".into(),
            customer_id: "cust-1".into(),
            deleted_at_ms: 1,
            reason: "asked".into(),
            fields_erased: 0,
            tokens_erased: 0,
            data_keys_destroyed: Vec::new(),
            wrapped_under: [1].into(),
            audit_hash: String::new(),
        };
        let write = ChainedWrite::of_erasure(Erasure {
            removal: CustomerRemoval {
                customer_id: "cust-1".into(),
                ..CustomerRemoval::default()
            },
            receipt,
            audit: entry("DeleteCustomer"),
        });
        let mut head = AuditHead::default();
        let chained = write.chain(&mut head);
        let proof = chained.proof.expect("a proof");
        assert_eq!(proof.customer_id, "cust-1");
        assert_eq!(proof.receipt.audit_hash, hex(&chained.records[0].hash));
        assert_eq!(chained.records[0].prev_hash, GENESIS_HASH);
        assert!(write.changes[0].customer.is_none());
    }

    #[test]
    fn changes_give_up_their_events_in_order() {
        let change = |action: &str| CustomerChange {
            audit: Some(entry(action)),
            ..CustomerChange::default()
        };
        let write =
            ChainedWrite::of_changes(vec![change("a"), CustomerChange::default(), change("b")]);
        let actions: Vec<_> = write.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["a", "b"]);
        assert!(write.changes.iter().all(|change| change.audit.is_none()));
    }
}
