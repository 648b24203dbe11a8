//! Customer data: writing, reading and deleting fields, tokenizing and
//! detokenizing values, searching by blind index, and the request ids that make
//! retries safe.

pub(super) mod detokenize;
pub(super) mod fields;
pub(super) mod request_ids;
pub(super) mod search;
pub(super) mod token_deletion;
pub(super) mod tokenize;
