//! What a value is: field kinds (normalization, masks, validation) and tokens
//! (random, format-preserving, deterministic).

pub mod kinds;
pub mod tokens;
