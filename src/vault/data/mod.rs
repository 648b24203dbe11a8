//! Customer data: writing, reading and deleting fields, tokenizing and
//! detokenizing values, searching by blind index, and the request ids that make
//! retries safe.

pub(super) mod detokenize;
pub(super) mod fields;
pub(super) mod request_ids;
pub(super) mod search;
pub(super) mod token_deletion;
pub(super) mod tokenize;

/// The data plane (`VaultService`): fields, tokens and search. A view of the vault that
/// offers only this capability's operations.
pub struct Data<'a> {
    vault: &'a super::Vault,
}

impl<'a> Data<'a> {
    pub(super) fn of(vault: &'a super::Vault) -> Self {
        Data { vault }
    }
}

impl std::ops::Deref for Data<'_> {
    type Target = super::Vault;

    fn deref(&self) -> &super::Vault {
        self.vault
    }
}
