//! DeleteCustomer and deletion receipts: crypto-shredding of one customer.

use std::collections::BTreeSet;

use crate::policy::Scope;
use crate::store::{hex, AuditEntry, CustomerChange, IndexEntry, ReceiptRecord};

use super::{now_ms, Attempt, Caller, CustomerId, Vault, VaultError};

/// How final an erasure is (see DESIGN.md, "Erasure").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasureState {
    /// Records and wrapped DEKs removed from the live store.
    Logical,
    /// Every master key version that wrapped the customer's DEKs is destroyed too.
    Cryptographic,
}

#[derive(Clone, Debug)]
pub struct DeletionReceipt {
    pub receipt_id: String,
    pub customer_id: String,
    pub deleted_at_ms: i64,
    pub fields_erased: u32,
    pub tokens_erased: u32,
    pub data_keys_destroyed: Vec<String>,
    pub state: ErasureState,
    /// While the erasure is logical: when the next scheduled master rotation
    /// (with retirement) makes it cryptographic.
    pub cryptographic_erasure_due_ms: Option<i64>,
    pub audit_hash: String,
}

impl Vault {
    /// Erases a customer: data keys, fields, tokens and index entries in one commit.
    /// Idempotent: erasing an erased customer returns the original receipt.
    pub async fn delete_customer(
        &self,
        caller: &Caller,
        customer_id: &str,
        reason: &str,
    ) -> Result<DeletionReceipt, VaultError> {
        let entry = self.audit_entry(caller, "DeleteCustomer", customer_id, &[], "");
        let result = self.erase(caller, customer_id, reason, &entry).await;
        self.audit_refusal(entry, result).await
    }

    async fn erase(
        &self,
        caller: &Caller,
        customer_id: &str,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<DeletionReceipt, VaultError> {
        caller.require_scope(Scope::PrivacyAdmin)?;
        let customer = CustomerId::parse(customer_id)?;
        if reason.len() > self.limits.max_reason_len || reason.chars().any(char::is_control) {
            return Err(VaultError::invalid(format!(
                "reason must be at most {} bytes of text without control characters",
                self.limits.max_reason_len
            )));
        }
        let receipt = self
            .retry_commit(|| self.try_delete_customer(&customer, reason, audit))
            .await?;
        self.keys.forget(&customer);
        self.stats.erased();
        Ok(self.receipt_view(receipt))
    }

    async fn try_delete_customer(
        &self,
        customer: &CustomerId,
        reason: &str,
        audit: &AuditEntry,
    ) -> Result<ReceiptRecord, Attempt> {
        let id = customer.as_str();
        let Some(record) = self.store.customer(id).await? else {
            let receipt = self.earlier_receipt(customer).await?;
            self.store.append_audit(vec![audit.clone()]).await?;
            return Ok(receipt);
        };
        let fields = self.store.fields(id).await?;
        let tokens = self.store.customer_tokens(id).await?;
        let receipt = ReceiptRecord {
            receipt_id: super::tokens::random_id("rcpt"),
            customer_id: id.to_owned(),
            deleted_at_ms: now_ms(),
            reason: reason.to_owned(),
            fields_erased: fields.len() as u32,
            tokens_erased: tokens.len() as u32,
            data_keys_destroyed: vec![format!("{id}/dek-v{}", record.dek.version)],
            wrapped_under: record.wrapped_under.clone(),
            audit_hash: String::new(),
        };
        let change = CustomerChange {
            customer_id: id.to_owned(),
            expected_revision: Some(record.revision),
            customer: None,
            delete_index: fields
                .iter()
                .filter_map(|(name, field)| {
                    field.blind_index.map(|blind_index| IndexEntry {
                        field_name: name.clone(),
                        blind_index,
                    })
                })
                .collect(),
            delete_fields: fields.into_iter().map(|(name, _)| name).collect(),
            delete_tokens: tokens,
            receipt: Some(receipt.clone()),
            audit: Some(audit.clone()),
            ..CustomerChange::default()
        };
        let audit_hash = self.store.commit(change).await?;
        Ok(ReceiptRecord {
            audit_hash: audit_hash.as_ref().map(hex).unwrap_or_default(),
            ..receipt
        })
    }

    /// The receipt of a customer erased before, or NOT_FOUND for one never held.
    async fn earlier_receipt(&self, customer: &CustomerId) -> Result<ReceiptRecord, VaultError> {
        let receipt_id = self
            .store
            .erasure_of(customer.as_str())
            .await?
            .ok_or_else(|| VaultError::not_found("customer not found"))?;
        self.store
            .receipt(&receipt_id)
            .await?
            .ok_or_else(|| VaultError::Internal("erasure marker without a receipt".into()))
    }

    /// The current state of an erasure, by receipt id.
    pub async fn deletion_status(
        &self,
        caller: &Caller,
        receipt_id: &str,
    ) -> Result<DeletionReceipt, VaultError> {
        let mut entry = self.audit_entry(caller, "GetDeletionStatus", "", &[], "");
        let result = async {
            caller.require_scope(Scope::PrivacyAdmin)?;
            if receipt_id.is_empty() || receipt_id.len() > 64 {
                return Err(VaultError::invalid("receipt_id must be 1-64 bytes"));
            }
            let receipt = self
                .store
                .receipt(receipt_id)
                .await?
                .ok_or_else(|| VaultError::not_found("no erasure has this receipt id"))?;
            Ok(self.receipt_view(receipt))
        }
        .await;
        if let Ok(receipt) = &result {
            entry.customer_id = receipt.customer_id.clone();
        }
        self.audit_outcome(entry, result).await
    }

    fn receipt_view(&self, receipt: ReceiptRecord) -> DeletionReceipt {
        let live: BTreeSet<u32> = self.keys.master_versions().into_iter().collect();
        let state = if receipt.wrapped_under.is_disjoint(&live) {
            ErasureState::Cryptographic
        } else {
            ErasureState::Logical
        };
        let interval_ms = self.rotation_policy.master_interval_ms();
        let due = (state == ErasureState::Logical).then(|| {
            self.keys
                .last_rotation_ms()
                .saturating_add(interval_ms)
                .max(receipt.deleted_at_ms)
        });
        DeletionReceipt {
            cryptographic_erasure_due_ms: due,
            receipt_id: receipt.receipt_id,
            customer_id: receipt.customer_id,
            deleted_at_ms: receipt.deleted_at_ms,
            fields_erased: receipt.fields_erased,
            tokens_erased: receipt.tokens_erased,
            data_keys_destroyed: receipt.data_keys_destroyed,
            state,
            audit_hash: receipt.audit_hash,
        }
    }
}
