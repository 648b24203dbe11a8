//! FindCustomers: equality search through the keyed blind index, so the store
//! never holds a searchable plaintext. Results come a page at a time, in byte
//! order of the customer ids, and a page never ends silently: the response
//! says when more customers may match.

use crate::vault::Call;
use crate::vault::Reason;
use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::policy::{LegalBasis, Purpose, Scope};
use crate::store::AuditEntry;

use crate::vault::{
    shown_for, Caller, CustomerId, FieldKind, FieldName, Normalized, Shown, Vault, VaultError,
};

/// One FindCustomers call.
pub struct SearchRequest {
    pub field_name: String,
    pub value: String,
    pub purpose: String,
    /// 0 or more than `Limits::max_search_results`: that maximum.
    pub page_size: u32,
    /// Empty for the first page, else a `SearchPage::next_page_token`.
    pub page_token: String,
}

/// The customers of one page, and where the next page starts if any.
#[derive(Debug, Default)]
pub struct SearchPage {
    pub customer_ids: Vec<String>,
    pub next_page_token: Option<String>,
}

const TOKEN_PREFIX: &str = "fct_";

/// A page token: a tag of the search's field name and purpose, then the last
/// customer id the page examined (ids are shown to the caller anyway). The
/// value searched is not in it, not even hashed: a token may end up in logs.
fn page_token(field: &FieldName, purpose: &str, last_customer: &str) -> String {
    let mut bytes = search_tag(field, purpose).to_vec();
    bytes.extend_from_slice(last_customer.as_bytes());
    format!("{TOKEN_PREFIX}{}", data_encoding::HEXLOWER.encode(&bytes))
}

/// The customer id a page starts after: "" for the first page.
fn parse_page_token(field: &FieldName, purpose: &str, token: &str) -> Result<String, VaultError> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let foreign = || {
        VaultError::invalid(
            "page_token: not a FindCustomers page token of this search (same field_name, \
             value and purpose); search again without one",
        )
    };
    let bytes = token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|hex| data_encoding::HEXLOWER.decode(hex.as_bytes()).ok())
        .filter(|bytes| bytes.len() > 8)
        .ok_or_else(foreign)?;
    let (tag, last_customer) = bytes.split_at(8);
    if tag != search_tag(field, purpose) {
        return Err(foreign());
    }
    let last_customer = String::from_utf8(last_customer.to_vec()).map_err(|_| foreign())?;
    CustomerId::from_stored(&last_customer).map_err(|_| foreign())?;
    Ok(last_customer)
}

fn search_tag(field: &FieldName, purpose: &str) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(b"pii-vault search page token\0")
        .chain_update(field.as_str().as_bytes())
        .chain_update(b"\0")
        .chain_update(purpose.as_bytes())
        .finalize();
    let mut tag = [0; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

impl crate::vault::Data<'_> {
    /// One page of the customers whose field `field_name` holds `value`
    /// (normalized as on write).
    pub async fn find_customers(
        &self,
        call: &Call<'_>,
        request: &SearchRequest,
    ) -> Result<SearchPage, VaultError> {
        let page = self.search(call.caller, request).await?;
        // Each customer found has the search in their own history, as
        // Detokenize records each customer it touched: it confirmed their
        // value to the caller. A search that found none is one event.
        let events = if page.customer_ids.is_empty() {
            vec![call.event.clone()]
        } else {
            page.customer_ids
                .iter()
                .map(|customer_id| AuditEntry {
                    customer_id: customer_id.clone(),
                    ..call.event.clone()
                })
                .collect()
        };
        self.append_audit(events).await?;
        Ok(page)
    }
}

impl Vault {
    async fn search(
        &self,
        caller: &Caller,
        request: &SearchRequest,
    ) -> Result<SearchPage, VaultError> {
        caller.require_scope(Scope::DataRead)?;
        self.abuse.read(caller)?;
        let field = FieldName::parse(&request.field_name)?;
        let purpose = self.check_purpose(caller, &request.purpose)?;
        let after = parse_page_token(&field, &request.purpose, &request.page_token)?;
        let page_size = match request.page_size as usize {
            0 => self.limits.max_search_results,
            asked => asked.min(self.limits.max_search_results),
        }
        .max(1);
        let mut matches = self
            .matching_customers(caller, &field, &request.value, &after, page_size + 1)
            .await?;
        // One more than the page was read, to know whether a next page exists.
        let more = matches.len() > page_size;
        matches.truncate(page_size);
        let next_page_token = match matches.last() {
            Some(last) if more => Some(page_token(&field, &request.purpose, last)),
            _ => None,
        };
        let mut customer_ids = Vec::new();
        for customer_id in matches {
            if self.consents_to(purpose, &customer_id).await? {
                customer_ids.push(customer_id);
            }
        }
        Ok(SearchPage {
            customer_ids,
            next_page_token,
        })
    }

    /// The first `most` customers after `after`, in byte order, whose field
    /// holds `value` under any searchable kind and any live index key.
    async fn matching_customers(
        &self,
        caller: &Caller,
        field: &FieldName,
        value: &str,
        after: &str,
        most: usize,
    ) -> Result<Vec<String>, VaultError> {
        let today = self.today();
        // A value is looked up as every searchable kind it is valid as; the kinds'
        // shapes do not overlap, so this is at most one in practice.
        let candidates: Vec<Normalized> = FieldKind::ALL
            .into_iter()
            .filter(|kind| kind.is_searchable())
            .filter_map(|kind| kind.normalize(value, today).ok())
            .collect();
        if candidates.is_empty() {
            return Err(VaultError::invalid(
                "value is not a valid email, phone number or SSN; only those kinds are searchable",
            ));
        }
        let mut customers = BTreeSet::new();
        for normalized in candidates {
            if shown_for(caller, Some(field.as_str()), normalized.kind()) == Shown::Denied {
                return Err(VaultError::new(
                    Reason::FieldNotVisible,
                    format!(
                        "principal \"{}\" may not see field \"{field}\"",
                        caller.name()
                    ),
                ));
            }
            // Under every live index key: a rotation moves entries from the
            // old one to the new one customer by customer. Each list holds its
            // first `most`, so their union's first `most` are the right ones.
            for blind_index in self.keys.blind_indexes(field.as_str(), &normalized) {
                let found = self
                    .store
                    .find_by_index(field.as_str(), &blind_index, after, most)
                    .await?;
                customers.extend(found);
            }
        }
        Ok(customers.into_iter().take(most).collect())
    }

    /// Whether a customer found by a search may be used for `purpose`; customers
    /// who have not opted in to a consent-based purpose are left out of results.
    async fn consents_to(&self, purpose: &Purpose, customer_id: &str) -> Result<bool, VaultError> {
        if purpose.basis != LegalBasis::Consent {
            return Ok(true);
        }
        let customer = CustomerId::from_stored(customer_id)
            .map_err(|_| VaultError::internal("index names a bad customer id"))?;
        let Some(record) = self.store.customer(customer_id).await? else {
            return Ok(false);
        };
        let cipher = self.keys.cipher(&customer, &record).await?;
        match self
            .check_consent(purpose, &customer, &record, &cipher)
            .await
        {
            Ok(()) => Ok(true),
            Err(error) if error.code_name() == "PERMISSION_DENIED" => Ok(false),
            Err(error) => Err(error),
        }
    }
}
