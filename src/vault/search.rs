//! FindCustomers: equality search through the keyed blind index, so the store
//! never holds a searchable plaintext.

use std::collections::BTreeSet;

use crate::policy::{LegalBasis, Purpose, Scope};

use super::{shown_for, today, Caller, CustomerId, FieldKind, FieldName, Shown, Vault, VaultError};

impl Vault {
    /// The customers whose field `field_name` holds `value` (normalized as on write).
    pub async fn find_customers(
        &self,
        caller: &Caller,
        field_name: &str,
        value: &str,
        purpose: &str,
    ) -> Result<Vec<String>, VaultError> {
        let entry = self.audit_entry(
            caller,
            "FindCustomers",
            "",
            &[field_name.to_owned()],
            purpose,
        );
        let result = self.search(caller, field_name, value, purpose).await;
        self.audit_outcome(entry, result).await
    }

    async fn search(
        &self,
        caller: &Caller,
        field_name: &str,
        value: &str,
        purpose: &str,
    ) -> Result<Vec<String>, VaultError> {
        caller.require_scope(Scope::DataRead)?;
        self.abuse.read(caller)?;
        let field = FieldName::parse(field_name)?;
        let purpose = self.check_purpose(caller, purpose)?;
        let today = today();
        // A value is looked up as every searchable kind it is valid as; the kinds'
        // shapes do not overlap, so this is at most one in practice.
        let candidates: Vec<(FieldKind, String)> = FieldKind::ALL
            .into_iter()
            .filter(|kind| kind.is_searchable())
            .filter_map(|kind| kind.normalize(value, today).ok().map(|n| (kind, n)))
            .collect();
        if candidates.is_empty() {
            return Err(VaultError::invalid(
                "value is not a valid email, phone number or SSN; only those kinds are searchable",
            ));
        }
        let mut customers = BTreeSet::new();
        for (kind, normalized) in candidates {
            if shown_for(caller, Some(field.as_str()), kind) == Shown::Denied {
                return Err(VaultError::denied(format!(
                    "principal \"{}\" may not see field \"{field}\"",
                    caller.name()
                )));
            }
            let blind_index = self.keys.blind_index(field.as_str(), kind, &normalized);
            let found = self
                .store
                .find_by_index(field.as_str(), &blind_index, self.limits.max_search_results)
                .await?;
            customers.extend(found);
        }
        let mut allowed = Vec::new();
        for customer_id in customers.into_iter().take(self.limits.max_search_results) {
            if self.consents_to(purpose, &customer_id).await? {
                allowed.push(customer_id);
            }
        }
        Ok(allowed)
    }

    /// Whether a customer found by a search may be used for `purpose`; customers
    /// who have not opted in to a consent-based purpose are left out of results.
    async fn consents_to(&self, purpose: &Purpose, customer_id: &str) -> Result<bool, VaultError> {
        if purpose.basis != LegalBasis::Consent {
            return Ok(true);
        }
        let customer = CustomerId::parse(customer_id)
            .map_err(|_| VaultError::Internal("index names a bad customer id".into()))?;
        let Some(record) = self.store.customer(customer_id).await? else {
            return Ok(false);
        };
        let cipher = self.keys.cipher(&customer, &record).await?;
        match self
            .check_consent(purpose, &customer, &record, &cipher)
            .await
        {
            Ok(()) => Ok(true),
            Err(VaultError::PermissionDenied(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }
}
