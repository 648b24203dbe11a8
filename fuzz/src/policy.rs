//! The policy file parser: any text is a policy or an error that names a line
//! of that text, and never repeats a key hash.

use pii_vault::policy::{Credential, Policy, PolicyError};

pub fn policy(data: &[u8]) {
    let text = crate::text(data);
    match Policy::parse(&text) {
        Ok(policy) => check_policy(&policy),
        Err(error) => check_error(&text, &error),
    }
}

fn check_policy(policy: &Policy) {
    assert!(!policy.purposes().is_empty(), "a policy without purposes");
    for purpose in policy.purposes() {
        assert!(
            policy.purpose(&purpose.name).is_some(),
            "purpose {:?} cannot be found by its name",
            purpose.name
        );
        assert!(!purpose.description.trim().is_empty());
    }
    assert!(
        policy.authenticate_api_key("").is_none(),
        "an empty API key authenticates"
    );
    let mut hashes = Vec::new();
    for principal in policy.principals() {
        assert!(!principal.name().trim().is_empty());
        for purpose in policy.purposes() {
            // Granted purposes are declared ones; nothing undeclared is usable.
            let _ = principal.may_use_purpose(&purpose.name);
        }
        assert!(
            !principal.may_use_purpose("*"),
            "\"*\" is a purpose of its own"
        );
        assert!(!principal.may_use_purpose(""));
        if let Credential::ApiKeySha256(hash) = principal.credential() {
            assert!(!hashes.contains(hash), "two principals share an API key");
            hashes.push(*hash);
        }
    }
}

fn check_error(text: &str, error: &PolicyError) {
    let message = error.to_string();
    let line_count = text.lines().count().max(1);
    match error {
        PolicyError::Syntax { line, .. }
        | PolicyError::Invalid {
            line: Some(line), ..
        } => {
            assert!(
                (1..=line_count + 1).contains(line),
                "line {line} of a {line_count}-line policy: {message}"
            );
            assert!(
                message.starts_with(&format!("policy line {line}: ")),
                "{message}"
            );
        }
        PolicyError::Invalid { line: None, .. } => {
            assert!(message.starts_with("policy: "), "{message}");
        }
        PolicyError::Io { .. } => panic!("parsing did I/O: {message}"),
    }
    // What stands as api_key_sha256 (a hash, or a key pasted by mistake) is
    // never repeated, unless the same text is also a name elsewhere.
    for line in text.lines() {
        let Some(value) = line
            .trim_start()
            .strip_prefix("api_key_sha256")
            .and_then(|rest| rest.trim_start().strip_prefix('='))
            .map(|rest| rest.trim().trim_matches('"'))
        else {
            continue;
        };
        if value.len() >= 16 && text.matches(value).count() == 1 {
            assert!(
                !message.contains(value),
                "the message repeats {value:?}: {message}"
            );
        }
    }
}
