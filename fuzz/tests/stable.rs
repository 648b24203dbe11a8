//! The fuzz targets on stable Rust, without libFuzzer: each body runs over its
//! checked-in seed corpus (`corpus/<target>/seed-*`), then over inputs mutated
//! from it by a seeded generator, until a time or an iteration budget runs
//! out. Not coverage-guided, but the same checks on the same code.
//!
//! Budgets (per target): `PII_VAULT_FUZZ_SECONDS` (default 10) and
//! `PII_VAULT_FUZZ_ITERATIONS` (default 100000). `PII_VAULT_FUZZ_SEED` replays
//! a run. A failing input is written to `artifacts/<target>/` and can be run
//! again with `cargo +nightly fuzz run <target> artifacts/<target>/<file>`, or
//! here by copying it into the corpus.
//!
//! `cargo test --no-default-features -- --ignored write_seed_corpus` rewrites
//! the seeds from `seeds.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/seeds.rs"]
mod seeds;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seed_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = crate_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("seed-"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

/// Runs one input; on a failure keeps the input and says where.
fn execute(target: &str, body: fn(&[u8]), input: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(input))) {
        let dir = crate_dir().join("artifacts").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("crash-{:016x}", fnv1a(input));
        let path = dir.join(name);
        std::fs::write(&path, input).unwrap();
        eprintln!("{target}: failing input kept in {}", path.display());
        resume_unwind(panic);
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `target` over its seeds and mutated inputs; returns the executions.
fn fuzz(target: &str, default_seconds: u64) -> u64 {
    let body = pii_vault_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .unwrap();
    let budget =
        Duration::from_secs(env_number("PII_VAULT_FUZZ_SECONDS").unwrap_or(default_seconds));
    let max = env_number("PII_VAULT_FUZZ_ITERATIONS").unwrap_or(100_000);
    let seed = env_number("PII_VAULT_FUZZ_SEED").unwrap_or_else(rand::random);
    let corpus = seed_corpus(target);
    let started = Instant::now();
    for input in &corpus {
        execute(target, body, input);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let dictionary = seeds::dictionary(target);
    // Recent mutants are mutated further, so inputs drift from the seeds.
    let mut recent: Vec<Vec<u8>> = Vec::new();
    let mut executions = corpus.len() as u64;
    while executions < max && started.elapsed() < budget {
        let base = if !recent.is_empty() && rng.random_bool(0.3) {
            &recent[rng.random_range(0..recent.len())]
        } else {
            &corpus[rng.random_range(0..corpus.len())]
        };
        let input = mutate(base, &corpus, dictionary, &mut rng);
        execute(target, body, &input);
        executions += 1;
        if recent.len() < 64 {
            recent.push(input);
        } else {
            let slot = rng.random_range(0..recent.len());
            recent[slot] = input;
        }
    }
    println!(
        "fuzz {target}: {executions} executions clean in {:.1} s ({} seeds, seed {seed})",
        started.elapsed().as_secs_f64(),
        corpus.len()
    );
    executions
}

/// Bytes and characters that tend to matter to parsers.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"\"",
    b"'",
    b"\\",
    b"=",
    b"[",
    b"]",
    b"{",
    b"}",
    b"@",
    b"+",
    b"-",
    b"_",
    b".",
    b":",
    b"/",
    b"*",
    b"#",
    b"0",
    b"9",
    "\u{200b}".as_bytes(),
    "\u{202e}".as_bytes(),
    "\u{0430}".as_bytes(),
    "\u{ff10}".as_bytes(),
    "\u{0660}".as_bytes(),
    "\u{fffd}".as_bytes(),
    "\u{1f600}".as_bytes(),
    "ß".as_bytes(),
    b"\xc0\xaf",
    b"\xed\xa0\x80",
];

fn mutate(base: &[u8], corpus: &[Vec<u8>], dictionary: &[&[u8]], rng: &mut StdRng) -> Vec<u8> {
    let mut input = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        mutate_once(&mut input, corpus, dictionary, rng);
    }
    input.truncate(64 * 1024);
    input
}

fn mutate_once(input: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]], rng: &mut StdRng) {
    let len = input.len();
    let at = |rng: &mut StdRng| rng.random_range(0..=len);
    match rng.random_range(0..13) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = rng.random();
        }
        2 => {
            let i = at(rng);
            let piece = INTERESTING[rng.random_range(0..INTERESTING.len())];
            input.splice(i..i, piece.iter().copied());
        }
        3 if !dictionary.is_empty() => {
            let i = at(rng);
            let word = dictionary[rng.random_range(0..dictionary.len())];
            input.splice(i..i, word.iter().copied());
        }
        4 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=16)).min(len);
            input.drain(start..end);
        }
        5 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=32)).min(len);
            let piece = input[start..end].to_vec();
            let i = at(rng);
            input.splice(i..i, piece);
        }
        6 => {
            // Splice a piece of another seed in.
            let other = &corpus[rng.random_range(0..corpus.len())];
            if !other.is_empty() {
                let start = rng.random_range(0..other.len());
                let end = (start + rng.random_range(1..=64)).min(other.len());
                let i = at(rng);
                input.splice(i..i, other[start..end].iter().copied());
            }
        }
        7 if len > 0 => input.truncate(rng.random_range(0..len)),
        8 if len > 0 => {
            // A small number or a length prefix nudged.
            let i = rng.random_range(0..len);
            input[i] = input[i]
                .wrapping_add(rng.random_range(1..=4))
                .wrapping_sub(2);
        }
        9 if len > 0 => {
            // A piece repeated many times: long ids, names and values.
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=8)).min(len);
            let piece = input[start..end].to_vec();
            let i = at(rng);
            let times = rng.random_range(2..=600);
            input.splice(
                i..i,
                piece.iter().copied().cycle().take(piece.len() * times),
            );
        }
        10 => mutate_lines(input, rng),
        11 if len > 1 => {
            let (i, j) = (rng.random_range(0..len), rng.random_range(0..len));
            input.swap(i, j);
        }
        _ => {
            let i = at(rng);
            let count = rng.random_range(1..=8);
            let random: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            input.splice(i..i, random);
        }
    }
}

/// For text formats: a line dropped, doubled or moved.
fn mutate_lines(input: &mut Vec<u8>, rng: &mut StdRng) {
    let mut lines: Vec<Vec<u8>> = input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.len() < 2 {
        return;
    }
    let i = rng.random_range(0..lines.len());
    match rng.random_range(0..3) {
        0 => {
            lines.remove(i);
        }
        1 => {
            let line = lines[i].clone();
            let j = rng.random_range(0..lines.len());
            lines.insert(j, line);
        }
        _ => {
            let j = rng.random_range(0..lines.len());
            lines.swap(i, j);
        }
    }
    *input = lines.join(&b'\n');
}

#[test]
fn values() {
    fuzz("values", 10);
}

#[test]
fn ids_and_tokens() {
    fuzz("ids_and_tokens", 10);
}

#[test]
fn ciphertexts() {
    fuzz("ciphertexts", 10);
}

#[test]
fn policy() {
    fuzz("policy", 10);
}

#[test]
fn requests() {
    fuzz("requests", 10);
}

#[test]
fn grpc() {
    fuzz("grpc", 10);
}

/// The runner itself: a body that fails is reported, with its input kept.
#[test]
fn a_failing_input_fails_the_run_and_is_kept() {
    fn fails_on_x(input: &[u8]) {
        assert!(!input.contains(&b'x'), "found an x");
    }
    let result = catch_unwind(|| execute("self-check", fails_on_x, b"an x"));
    assert!(result.is_err());
    let kept = crate_dir()
        .join("artifacts/self-check")
        .join(format!("crash-{:016x}", fnv1a(b"an x")));
    assert_eq!(std::fs::read(&kept).unwrap(), b"an x");
    std::fs::remove_dir_all(crate_dir().join("artifacts/self-check")).unwrap();
}

#[test]
#[ignore = "rewrites corpus/*/seed-* from seeds.rs"]
fn write_seed_corpus() {
    for (target, seeds) in seeds::all() {
        let dir = crate_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("seed-")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (index, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{index:03}")), seed).unwrap();
        }
    }
}
