use std::sync::Arc;

use crate::policy::{Principal, Scope};

use super::VaultError;

/// Who is asking, as the gRPC layer authenticated them, and the id that ties the
/// call's log lines and audit events together.
#[derive(Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub request_id: String,
}

impl Caller {
    pub fn name(&self) -> &str {
        self.principal.name()
    }

    pub fn require_scope(&self, scope: Scope) -> Result<(), VaultError> {
        if self.principal.has_scope(scope) {
            Ok(())
        } else {
            Err(VaultError::denied(format!(
                "principal \"{}\" lacks the scope {}",
                self.name(),
                scope.name()
            )))
        }
    }
}
