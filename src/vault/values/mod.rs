//! What a value is: field kinds (validation into a normalized form, masks and
//! the shape of format-preserving tokens, a file per kind) and tokens (random,
//! format-preserving, deterministic). Tokens build on kinds, never the reverse.

pub mod kinds;
pub mod tokens;
