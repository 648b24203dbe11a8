//! What an audit event says was done: one name per audited operation, so a
//! misspelt action cannot reach the log and readers of the log (exports,
//! reports) match the same names the operations write.

/// An audited operation. Its name is the gRPC method's, or, for what the
/// vault does by itself, a name of the same form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    PutFields,
    GetFields,
    DeleteFields,
    Tokenize,
    Detokenize,
    DeleteTokens,
    FindCustomers,
    SetConsent,
    ListConsents,
    ExportCustomer,
    DeleteCustomer,
    GetDeletionStatus,
    PublishPolicy,
    ListNotices,
    AcknowledgeNotice,
    RotateMasterKey,
    RotateCustomerKey,
    GetKeyStatus,
    MigrateRootOfTrust,
    TrimAuditLog,
    /// The policy file reloaded (SIGHUP or a changed file); no RPC.
    ReloadPolicy,
    /// The TLS files reloaded; no RPC.
    ReloadTls,
}

impl Action {
    pub const ALL: [Action; 22] = [
        Action::PutFields,
        Action::GetFields,
        Action::DeleteFields,
        Action::Tokenize,
        Action::Detokenize,
        Action::DeleteTokens,
        Action::FindCustomers,
        Action::SetConsent,
        Action::ListConsents,
        Action::ExportCustomer,
        Action::DeleteCustomer,
        Action::GetDeletionStatus,
        Action::PublishPolicy,
        Action::ListNotices,
        Action::AcknowledgeNotice,
        Action::RotateMasterKey,
        Action::RotateCustomerKey,
        Action::GetKeyStatus,
        Action::MigrateRootOfTrust,
        Action::TrimAuditLog,
        Action::ReloadPolicy,
        Action::ReloadTls,
    ];

    /// The name recorded in the audit log.
    pub const fn name(self) -> &'static str {
        match self {
            Action::PutFields => "PutFields",
            Action::GetFields => "GetFields",
            Action::DeleteFields => "DeleteFields",
            Action::Tokenize => "Tokenize",
            Action::Detokenize => "Detokenize",
            Action::DeleteTokens => "DeleteTokens",
            Action::FindCustomers => "FindCustomers",
            Action::SetConsent => "SetConsent",
            Action::ListConsents => "ListConsents",
            Action::ExportCustomer => "ExportCustomer",
            Action::DeleteCustomer => "DeleteCustomer",
            Action::GetDeletionStatus => "GetDeletionStatus",
            Action::PublishPolicy => "PublishPolicy",
            Action::ListNotices => "ListNotices",
            Action::AcknowledgeNotice => "AcknowledgeNotice",
            Action::RotateMasterKey => "RotateMasterKey",
            Action::RotateCustomerKey => "RotateCustomerKey",
            Action::GetKeyStatus => "GetKeyStatus",
            Action::MigrateRootOfTrust => "MigrateRootOfTrust",
            Action::TrimAuditLog => "TrimAuditLog",
            Action::ReloadPolicy => "ReloadPolicy",
            Action::ReloadTls => "ReloadTls",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the API's services, from the compiled contract.
    fn api_methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the compiled contract decodes");
        set.file
            .iter()
            .flat_map(|file| &file.service)
            .flat_map(|service| &service.method)
            .filter_map(|method| method.name.clone())
            .collect()
    }

    #[test]
    fn each_audited_call_is_named_after_its_grpc_method() {
        let methods = api_methods();
        let reloads = [Action::ReloadPolicy, Action::ReloadTls];
        for action in Action::ALL
            .into_iter()
            .filter(|action| !reloads.contains(action))
        {
            assert!(
                methods.iter().any(|method| method == action.name()),
                "{action:?} names no method of the contract"
            );
        }
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|action| action.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }
}
