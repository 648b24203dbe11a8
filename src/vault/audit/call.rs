//! The audited scope of one call. The edge opens it from the request's raw
//! names before it parses anything, then parses and runs the operation inside
//! it; however the call ends (a malformed id, an unknown kind, a refused
//! purpose, a store failure), it ends in the audit log exactly once. The
//! operations take parsed types and the call's event, and never frame their
//! own auditing.

use std::future::Future;

use crate::store::AuditEntry;

use super::super::{Action, Caller, Vault, VaultError};

/// What a call names before it is parsed: the audit event records whichever
/// of these are well formed, and nothing else of the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallNames<'a> {
    pub customer_id: &'a str,
    pub fields: &'a [String],
    pub purpose: &'a str,
    /// Purposes a call is about (a policy change), recorded as its fields.
    pub purposes: &'a [String],
}

impl<'a> CallNames<'a> {
    /// A call that names only a customer.
    pub fn customer(customer_id: &'a str) -> Self {
        CallNames {
            customer_id,
            ..CallNames::default()
        }
    }
}

/// A call whose outcome the audit log will hold; see the module comment.
pub struct AuditedCall<'a> {
    vault: &'a Vault,
    caller: &'a Caller,
    event: AuditEntry,
}

/// What an operation runs with inside an audited scope: who calls, and the
/// call's event, which a write commits together with its change.
pub struct Call<'a> {
    pub caller: &'a Caller,
    pub event: AuditEntry,
}

impl Vault {
    /// Opens the audited scope of a call to `action`.
    pub fn audited<'a>(
        &'a self,
        caller: &'a Caller,
        action: Action,
        names: CallNames<'_>,
    ) -> AuditedCall<'a> {
        let event = self.audit_entry(caller, action, names);
        AuditedCall {
            vault: self,
            caller,
            event,
        }
    }
}

impl<'a> AuditedCall<'a> {
    /// Runs an operation that records its success itself: a write in the
    /// commit of its change, a batch read in one event per customer it
    /// touched. A refusal is recorded here.
    pub async fn run<T, Op, Fut>(self, op: Op) -> Result<T, VaultError>
    where
        Op: FnOnce(Call<'a>) -> Fut,
        Fut: Future<Output = Result<T, VaultError>>,
    {
        let result = op(self.call()).await;
        self.vault.audit_refusal(self.event, result).await
    }

    /// Runs a read, and records its outcome before the caller sees the
    /// answer, so that no value leaves the vault unaudited.
    pub async fn read<T, Op, Fut>(self, op: Op) -> Result<T, VaultError>
    where
        T: AuditedAnswer,
        Op: FnOnce(Call<'a>) -> Fut,
        Fut: Future<Output = Result<T, VaultError>>,
    {
        let result = op(self.call()).await;
        let mut event = self.event;
        if let Ok(answer) = &result {
            answer.note_in(&mut event);
        }
        self.vault.audit_outcome(event, result).await
    }

    fn call(&self) -> Call<'a> {
        Call {
            caller: self.caller,
            event: self.event.clone(),
        }
    }
}

/// The answer of a read, which may tell the audit event more than the
/// request named. Each read's answer says so on purpose: an "all fields"
/// read and an export name the fields they disclosed, a receipt names its
/// customer.
pub trait AuditedAnswer {
    fn note_in(&self, event: &mut AuditEntry);
}
