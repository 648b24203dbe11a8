//! Which associated data a customer's ciphertexts are sealed with. Their
//! record says (`binding_version`), and only that layout is tried: a
//! ciphertext is never opened under one layout and then the other, so
//! relabelling a stored value cannot fall back to the layout that ignores it.

use crate::crypto::{Binding, DataCipher};
use crate::store::{CustomerRecord, BINDING_BOUND, BINDING_UNBOUND};

use crate::vault::{PrivacyLedger, VaultError};

/// Where the ledger's ciphertext belongs (its associated data).
const LEDGER_LABEL: &str = "privacy-ledger";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::vault) enum Sealing {
    /// Customer and field, token or record label only (records before format 3,
    /// until migrated).
    Unbound,
    /// Also a field's kind and token, a standalone token's kind and format,
    /// and the ledger's record revision.
    Bound,
}

impl Sealing {
    pub(in crate::vault) fn of(record: &CustomerRecord) -> Result<Sealing, VaultError> {
        match record.binding_version {
            BINDING_BOUND => Ok(Sealing::Bound),
            BINDING_UNBOUND => Ok(Sealing::Unbound),
            _ => Err(VaultError::integrity(
                "the customer record names an unknown binding version",
            )),
        }
    }

    /// A field's value: `kind` and `token` are what its field record (or the
    /// token resolving to it) says.
    pub(in crate::vault) fn field<'a>(
        self,
        customer_id: &'a str,
        field: &'a str,
        kind: &'a str,
        token: &'a str,
    ) -> Binding<'a> {
        match self {
            Sealing::Unbound => Binding::Field { customer_id, field },
            Sealing::Bound => Binding::BoundField {
                customer_id,
                field,
                kind,
                token,
            },
        }
    }

    /// A standalone token's value, with the kind and format its record says.
    pub(in crate::vault) fn token<'a>(
        self,
        customer_id: &'a str,
        token: &'a str,
        kind: &'a str,
        format: &'a str,
    ) -> Binding<'a> {
        match self {
            Sealing::Unbound => Binding::Token { customer_id, token },
            Sealing::Bound => Binding::BoundToken {
                customer_id,
                token,
                kind,
                format,
            },
        }
    }

    /// The privacy ledger of a customer record at `revision`.
    pub(in crate::vault) fn ledger(self, customer_id: &str, revision: u64) -> Binding<'_> {
        match self {
            Sealing::Unbound => Binding::Record {
                customer_id,
                label: LEDGER_LABEL,
            },
            Sealing::Bound => Binding::BoundRecord {
                customer_id,
                label: LEDGER_LABEL,
                revision,
            },
        }
    }
}

/// Moves `record` to `revision`. A bound ledger is bound to the revision, so
/// it is opened at the old one and sealed again at the new one under `cipher`
/// (the customer's current DEK): every change of the record re-seals it, and
/// an older ledger ciphertext put into a newer record does not open.
pub(in crate::vault) fn advance_revision(
    customer_id: &str,
    record: &mut CustomerRecord,
    revision: u64,
    cipher: &DataCipher,
) -> Result<(), VaultError> {
    if record.privacy.is_none() || Sealing::of(record)? == Sealing::Unbound {
        record.revision = revision;
        return Ok(());
    }
    let ledger = PrivacyLedger::open_stored(customer_id, record, cipher)?;
    record.revision = revision;
    ledger.seal_stored(customer_id, record, cipher)
}
