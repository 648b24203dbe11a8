//! Tokens: random, deterministic (from a MAC computed elsewhere) and
//! format-preserving (in the shape each kind draws). Collision checks belong to
//! the caller; this module only draws candidates and knows what a client may
//! send back.

use crate::vault::kinds::{FieldKind, Normalized};
use data_encoding::BASE32_NOPAD;
use rand::Rng;

/// Longest token a client may send to Detokenize.
const MAX_TOKEN_LEN: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenFormat {
    Random,
    FormatPreserving,
    Deterministic,
}

impl TokenFormat {
    pub fn name(self) -> &'static str {
        match self {
            TokenFormat::Random => "random",
            TokenFormat::FormatPreserving => "format_preserving",
            TokenFormat::Deterministic => "deterministic",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            TokenFormat::Random,
            TokenFormat::FormatPreserving,
            TokenFormat::Deterministic,
        ]
        .into_iter()
        .find(|format| format.name() == name)
    }
}

/// Why a token could not be made or was refused. Messages never contain the
/// value or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a value of kind {} has no letter or digit to shape a token from", .kind.name())]
    NoShape { kind: FieldKind },
    #[error("token is empty")]
    Empty,
    #[error("token is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("token contains a control character")]
    ControlCharacter,
}

/// A token: one this vault drew, or one a client sent that `Token::parse`
/// let in. A token stands for a value but tells nothing of it, so unlike a
/// value it may be shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(String);

impl Token {
    /// A token from a request: nothing that could corrupt a log line or a
    /// store key gets in.
    pub fn parse(raw: &str) -> Result<Token, TokenError> {
        if raw.is_empty() {
            return Err(TokenError::Empty);
        }
        if raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { max: MAX_TOKEN_LEN });
        }
        if raw.chars().any(char::is_control) {
            return Err(TokenError::ControlCharacter);
        }
        Ok(Token(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Token> for String {
    fn from(token: Token) -> String {
        token.0
    }
}

/// "tok_" + 26 lowercase base32 chars of 128 random bits.
pub fn random_token() -> Token {
    Token(random_id("tok"))
}

/// `prefix` + "_" + 26 lowercase base32 chars of 128 random bits: tokens, receipt
/// and request ids.
pub fn random_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}_{}", lower_base32(&bytes))
}

/// "dtk_" + 26 lowercase base32 chars of `mac`, which already binds the
/// customer, kind and value.
pub fn deterministic_token(mac: &[u8; 16]) -> Token {
    Token(format!("dtk_{}", lower_base32(mac)))
}

fn lower_base32(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

/// A format-preserving token for a normalized value: one random candidate of
/// its kind's shape, never the value itself. The caller checks it against
/// existing tokens and calls again on a collision.
pub fn format_preserving_token(normalized: &Normalized) -> Result<Token, TokenError> {
    let mut rng = rand::rng();
    // Every shape has at least ten possible draws and at most one equals the
    // value, so this ends after a couple of rounds at worst.
    loop {
        let Some(candidate) = normalized.format_preserving_candidate(&mut rng) else {
            let kind = normalized.kind();
            return Err(TokenError::NoShape { kind });
        };
        if candidate != normalized.as_str() {
            return Ok(Token(candidate));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const DRAWS: usize = 5000;

    fn token(kind: FieldKind, raw: &str) -> String {
        let normalized = match kind.normalize(raw, date!(2024 - 06 - 15)) {
            Ok(normalized) => normalized,
            Err(error) => panic!("{} rejected a valid value: {error}", kind.name()),
        };
        match format_preserving_token(&normalized) {
            Ok(token) => token.into(),
            Err(error) => panic!("no {} token: {error}", kind.name()),
        }
    }

    fn is_lower_base32(text: &str) -> bool {
        text.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    }

    #[test]
    fn format_names_round_trip() {
        for format in [
            TokenFormat::Random,
            TokenFormat::FormatPreserving,
            TokenFormat::Deterministic,
        ] {
            assert_eq!(TokenFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(TokenFormat::from_name("Random"), None);
    }

    #[test]
    fn random_tokens_are_tok_and_26_lowercase_base32_chars_and_differ() {
        let first = random_token();
        let body = first.as_str().strip_prefix("tok_").unwrap_or_default();
        assert_eq!(body.len(), 26, "{first}");
        assert!(is_lower_base32(body), "{first}");
        assert_ne!(first, random_token());
    }

    #[test]
    fn deterministic_tokens_are_equal_for_equal_macs_only() {
        let mac = [7u8; 16];
        let token = deterministic_token(&mac);
        assert_eq!(token, deterministic_token(&[7u8; 16]));
        assert_ne!(token, deterministic_token(&[8u8; 16]));
        let body = token.as_str().strip_prefix("dtk_").unwrap_or_default();
        assert_eq!(body.len(), 26);
        assert!(is_lower_base32(body));
        // Known answer: a format change would break every stored deterministic token.
        assert_eq!(
            deterministic_token(&[0u8; 16]).as_str(),
            format!("dtk_{}", "a".repeat(26))
        );
    }

    #[test]
    fn format_preserving_tokens_have_the_shape_of_their_kind() {
        assert_eq!(token(FieldKind::Ssn, "123-45-6789").len(), 11);
        assert_eq!(token(FieldKind::CardNumber, "4242424242424242").len(), 16);
        assert!(token(FieldKind::Email, "j@x.io").ends_with("@token.invalid"));
        assert!(token(FieldKind::Phone, "+15551234567").starts_with("+999"));
        assert_eq!(token(FieldKind::DateOfBirth, "1985-07-04").len(), 10);
    }

    #[test]
    fn shape_tokens_never_equal_the_value_even_for_one_char() {
        for _ in 0..DRAWS {
            assert_ne!(token(FieldKind::Generic, "7"), "7");
            assert_ne!(token(FieldKind::Name, "a"), "a");
        }
    }

    #[test]
    fn values_without_letters_or_digits_have_no_shape() {
        let value = FieldKind::Generic.normalize("-- ,", date!(2024 - 06 - 15));
        assert_eq!(
            value.map(|value| format_preserving_token(&value)),
            Ok(Err(TokenError::NoShape {
                kind: FieldKind::Generic
            }))
        );
    }

    #[test]
    fn token_errors_never_contain_the_value() {
        let value = "#!#!";
        let message = FieldKind::Generic
            .normalize(value, date!(2024 - 06 - 15))
            .map(|value| format_preserving_token(&value))
            .map(|token| token.map_err(|e| e.to_string()).err())
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(!message.is_empty() && !message.contains(value), "{message}");
    }

    #[test]
    fn parse_accepts_issued_tokens_and_refuses_empty_long_or_control() {
        let issued = random_token();
        assert_eq!(Token::parse(issued.as_str()), Ok(issued));
        assert_eq!(
            Token::parse("123-45-6789").map(String::from),
            Ok("123-45-6789".to_owned())
        );
        assert!(Token::parse(&"x".repeat(1024)).is_ok());
        assert_eq!(Token::parse(""), Err(TokenError::Empty));
        assert_eq!(
            Token::parse(&"x".repeat(1025)),
            Err(TokenError::TooLong { max: 1024 })
        );
        assert_eq!(Token::parse("tok_a\nb"), Err(TokenError::ControlCharacter));
    }
}
