/// Bounds on one request, so that no client can make the vault do unbounded work.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_fields_per_request: usize,
    pub max_batch_items: usize,
    pub max_search_results: usize,
    pub max_reason_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_fields_per_request: 100,
            max_batch_items: 1000,
            max_search_results: 1000,
            max_reason_len: 512,
        }
    }
}

impl Limits {
    pub fn check_count(what: &str, count: usize, max: usize) -> Result<(), super::VaultError> {
        if count > max {
            Err(super::VaultError::ResourceExhausted(format!(
                "{what}: at most {max} per request, got {count}"
            )))
        } else {
            Ok(())
        }
    }
}
