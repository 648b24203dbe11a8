//! An export's access history: the customer's audit events, newest first, a
//! page at a time, so that no history is too long to export and none is ever
//! cut silently. A page ends at the requested number of events or when one
//! more would not fit the document's byte budget; the page then carries a
//! token for the next one.

use crate::vault::Action;
use crate::vault::Reason;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::AuditRecord;

use super::rfc3339;
use crate::vault::{CustomerId, Vault, VaultError};

/// Which page of the access history to export.
#[derive(Clone, Debug, Default)]
pub struct AccessHistoryRequest {
    /// Empty: the page that starts at the newest event; otherwise the
    /// `next_page_token` of an earlier export of the same customer.
    pub page_token: String,
    /// At most this many events; 0 (or more than the vault's page) means the
    /// vault's page.
    pub page_size: u32,
}

#[derive(Serialize)]
pub struct ExportedAccess {
    pub at: String,
    pub principal: String,
    pub action: String,
    pub fields: Vec<String>,
    pub purpose: String,
    pub outcome: String,
}

/// Which part of the access history a document holds (in the JSON as
/// `access_history_page`).
#[derive(Clone, Debug, Serialize)]
pub struct AccessHistoryPage {
    pub order: &'static str,
    /// Holds the newest event (no page token was given).
    pub first_page: bool,
    /// Holds the oldest event: nothing older was left out.
    pub last_page: bool,
    /// For the next, older page; none on the last page.
    pub next_page_token: Option<String>,
    /// The audit events up to this seq were trimmed from the live log into
    /// the operator's audit archive: older accesses are there, not here. 0
    /// when nothing was ever trimmed.
    pub audit_trimmed_through_seq: u64,
}

impl AccessHistoryPage {
    pub fn new(first_page: bool, last_page: bool, next_page_token: Option<String>) -> Self {
        AccessHistoryPage {
            order: "newest_first",
            first_page,
            last_page,
            next_page_token,
            audit_trimmed_through_seq: 0,
        }
    }
}

/// A page of events, newest first, and where it sits in the history.
pub(super) struct AccessPage {
    pub events: Vec<ExportedAccess>,
    pub page: AccessHistoryPage,
}

const TOKEN_PREFIX: &str = "aht_";
/// Customer tag, the customer's creation time and the sequence number the next
/// page starts below: 8 bytes each.
const TOKEN_BYTES: usize = 24;

/// What ties a page token to the customer it was issued for: their id and
/// their creation time, so a token never reaches into the history of the
/// customer the same id named before an erasure.
#[derive(Clone, Copy)]
pub(super) struct Incarnation<'a> {
    pub customer: &'a CustomerId,
    pub created_at_ms: i64,
}

impl Incarnation<'_> {
    fn token(&self, before_seq: u64) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.extend_from_slice(&self.tag());
        bytes.extend_from_slice(&self.created_at_ms.to_be_bytes());
        bytes.extend_from_slice(&before_seq.to_be_bytes());
        format!("{TOKEN_PREFIX}{}", data_encoding::HEXLOWER.encode(&bytes))
    }

    /// The longest token this customer can be given, to budget a document for it.
    pub fn longest_token(&self) -> String {
        self.token(u64::MAX)
    }

    /// The sequence number a page starts below, from a token issued for this
    /// customer. The message never repeats the token.
    fn parse_token(&self, token: &str) -> Result<u64, VaultError> {
        let foreign = || {
            VaultError::invalid(
                "access_history_page_token: not a page token this vault issued; \
                 export again without one",
            )
        };
        let bytes = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|hex| data_encoding::HEXLOWER.decode(hex.as_bytes()).ok())
            .filter(|bytes| bytes.len() == TOKEN_BYTES)
            .ok_or_else(foreign)?;
        let (tag, rest) = bytes.split_at(8);
        let (created_at_ms, before_seq) = rest.split_at(8);
        let created_at_ms = i64::from_be_bytes(created_at_ms.try_into().map_err(|_| foreign())?);
        let before_seq = u64::from_be_bytes(before_seq.try_into().map_err(|_| foreign())?);
        if tag != self.tag() || created_at_ms != self.created_at_ms {
            return Err(VaultError::invalid(
                "access_history_page_token: issued for another customer, or for this id \
                 before it was erased; export again without one",
            ));
        }
        Ok(before_seq)
    }

    fn tag(&self) -> [u8; 8] {
        let digest = Sha256::new()
            .chain_update(b"pii-vault export page token\0")
            .chain_update(self.customer.as_str().as_bytes())
            .finalize();
        let mut tag = [0; 8];
        tag.copy_from_slice(&digest[..8]);
        tag
    }
}

impl Vault {
    /// One page of the customer's access history, newest first, whose events
    /// take at most `byte_budget` bytes of the JSON document.
    pub(super) async fn access_page(
        &self,
        incarnation: Incarnation<'_>,
        request: &AccessHistoryRequest,
        byte_budget: usize,
    ) -> Result<AccessPage, VaultError> {
        let first_page = request.page_token.is_empty();
        let before_seq = if first_page {
            u64::MAX
        } else {
            incarnation.parse_token(&request.page_token)?
        };
        let most = match request.page_size as usize {
            0 => self.limits.export_access_page,
            asked => asked.min(self.limits.export_access_page),
        }
        .max(1);
        // One more than the page, to know whether anything is left after it.
        let records = self
            .store
            .customer_audit_events_before(incarnation.customer.as_str(), before_seq, most + 1)
            .await?;
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut oldest_seq = before_seq;
        let mut last_page = true;
        for record in records {
            // Older events belong to the customer this id named before.
            if is_erasure(&record) {
                break;
            }
            let seq = record.seq;
            let access = exported_access(record);
            let cost = json_cost(&access)?;
            if events.len() == most || bytes + cost > byte_budget {
                last_page = false;
                break;
            }
            bytes += cost;
            oldest_seq = seq;
            events.push(access);
        }
        if events.is_empty() && !last_page {
            return Err(VaultError::new(
                Reason::ExportTooLarge,
                format!(
                    "this customer's export cannot hold even one access event within the \
                 {} bytes an export may take",
                    self.limits.max_export_bytes
                ),
            ));
        }
        Ok(AccessPage {
            events,
            page: AccessHistoryPage::new(
                first_page,
                last_page,
                (!last_page).then(|| incarnation.token(oldest_seq)),
            ),
        })
    }
}

/// An erasure that went through: the events before it are another person's.
fn is_erasure(record: &AuditRecord) -> bool {
    record.action == Action::DeleteCustomer.name() && record.outcome == "ok"
}

fn exported_access(record: AuditRecord) -> ExportedAccess {
    ExportedAccess {
        at: rfc3339(record.at_ms),
        principal: record.principal,
        action: record.action,
        fields: record.fields,
        purpose: record.purpose,
        outcome: record.outcome,
    }
}

/// Bytes an event adds to the pretty-printed document: its own pretty form,
/// every line indented two levels deeper (4 spaces) inside `access_history`,
/// and the ",\n" that separates it from the next.
fn json_cost(access: &ExportedAccess) -> Result<usize, VaultError> {
    let alone = serde_json::to_vec_pretty(access)
        .map_err(|_| VaultError::internal("access event does not serialize"))?;
    let lines = alone.iter().filter(|&&byte| byte == b'\n').count() + 1;
    Ok(alone.len() + 4 * lines + 2)
}

/// What the array's brackets take once it holds events: "[\n" and "\n  ]"
/// instead of "[]".
pub(super) const NON_EMPTY_ARRAY_COST: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn access(fields: &[&str]) -> ExportedAccess {
        ExportedAccess {
            at: "2026-12-03T10:00:00.123Z".into(),
            principal: "checkout".into(),
            action: Action::GetFields.name().into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            purpose: "billing".into(),
            outcome: "ok".into(),
        }
    }

    #[derive(Serialize)]
    struct Document {
        customer_id: &'static str,
        access_history: Vec<ExportedAccess>,
    }

    fn size(access_history: Vec<ExportedAccess>) -> usize {
        let document = Document {
            customer_id: "cust-1",
            access_history,
        };
        serde_json::to_vec_pretty(&document).unwrap().len()
    }

    #[test]
    fn the_cost_of_events_is_exactly_what_they_add_to_the_document() {
        for history in [
            vec![access(&[])],
            vec![access(&["email"]), access(&[]), access(&["a", "b", "c"])],
        ] {
            let costs: usize = history.iter().map(|a| json_cost(a).unwrap()).sum();
            let added = size(history) - size(Vec::new());
            // The last event has no separator after it.
            assert_eq!(added, costs + NON_EMPTY_ARRAY_COST - 2);
        }
    }

    fn incarnation(customer: &CustomerId, created_at_ms: i64) -> Incarnation<'_> {
        Incarnation {
            customer,
            created_at_ms,
        }
    }

    #[test]
    fn a_page_token_reads_back_only_for_its_own_customer_and_incarnation() {
        let ann = CustomerId::parse("ann").unwrap();
        let bob = CustomerId::parse("bob").unwrap();
        let token = incarnation(&ann, 1_000).token(42);
        assert_eq!(incarnation(&ann, 1_000).parse_token(&token).unwrap(), 42);
        assert_eq!(token.len(), incarnation(&ann, 1_000).longest_token().len());
        for (other, message) in [
            (incarnation(&bob, 1_000), "another customer"),
            (incarnation(&ann, 2_000), "another customer"),
        ] {
            let refused = other.parse_token(&token).unwrap_err();
            assert!(refused.to_string().contains(message), "{refused}");
        }
        for forged in ["", "aht_", "aht_zz", &token[..token.len() - 2], "tok_abc"] {
            let refused = incarnation(&ann, 1_000).parse_token(forged).unwrap_err();
            assert_eq!(refused.code_name(), "INVALID_ARGUMENT", "{refused}");
        }
    }
}
