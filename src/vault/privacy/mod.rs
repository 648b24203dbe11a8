//! The customer's rights: consent, policy notices and re-consent, erasure with
//! its receipt, and export.

pub(super) mod consent;
pub(super) mod erasure;
pub(super) mod export;
pub(super) mod notices;

/// The customer's rights (`PrivacyService`): consent, notices, export and erasure. A view of the vault that
/// offers only this capability's operations.
pub struct Privacy<'a> {
    vault: &'a super::Vault,
}

impl<'a> Privacy<'a> {
    pub(super) fn of(vault: &'a super::Vault) -> Self {
        Privacy { vault }
    }
}

impl std::ops::Deref for Privacy<'_> {
    type Target = super::Vault;

    fn deref(&self) -> &super::Vault {
        self.vault
    }
}
