//! The bodies of pii-vault's fuzz targets. Each takes arbitrary bytes, feeds
//! them to one layer of the vault, and panics when an invariant breaks (a
//! panic of the code under test is a failure too). libFuzzer calls them from
//! `fuzz_targets/`; `tests/stable.rs` calls the same functions on stable Rust
//! over the seed corpus and mutated inputs.
#![forbid(unsafe_code)]

mod ciphertexts;
mod grpc;
mod ids;
mod policy;
mod requests;
mod values;

pub use ciphertexts::ciphertexts;
pub use grpc::grpc;
pub use ids::ids_and_tokens;
pub use policy::policy;
pub use requests::requests;
pub use values::values;

/// A target's body: any bytes in, a panic when an invariant breaks.
pub type Body = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/` file and corpus folder.
pub const TARGETS: [(&str, Body); 6] = [
    ("values", values),
    ("ids_and_tokens", ids_and_tokens),
    ("ciphertexts", ciphertexts),
    ("policy", policy),
    ("requests", requests),
    ("grpc", grpc),
];

/// Bytes as text the way the gRPC layer would have them: proto3 strings are
/// UTF-8, so invalid bytes become U+FFFD rather than being skipped.
pub(crate) fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A message fit to show a client: bounded, one line, no control characters.
#[track_caller]
pub(crate) fn assert_clear_message(message: &str) {
    assert!(
        message.len() <= 512,
        "a {}-byte message: {:?}",
        message.len(),
        message.chars().take(80).collect::<String>()
    );
    assert!(
        !message.chars().any(char::is_control),
        "control character in message {message:?}"
    );
}

/// A refusal must not repeat the input. Fixed messages hold numbers of at most
/// four digits (limits, "0000"), so any run of five or more digits of the
/// input showing up in the message was copied from it.
#[track_caller]
pub(crate) fn assert_no_echo(message: &str, input: &str) {
    for run in input
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() >= 5)
    {
        assert!(
            !message.contains(run),
            "{message:?} repeats {run:?} of the input"
        );
    }
}

/// A scratch directory for a target's static state (a store, key files). It
/// lives as long as the process, so it is never dropped: instead, directories
/// that processes now gone left behind are removed when a new one is made.
/// On tmpfs where there is one, as every audited call of the vault syncs.
pub(crate) fn scratch_dir(label: &str) -> tempfile::TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let prefix = "pii-vault-fuzz-";
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = owner {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-{label}-", std::process::id()))
        .tempdir_in(base)
        .expect("scratch directory")
}
