//! Promises CONTRIBUTING.md makes about what CI refuses, checked by running
//! the CI script itself on a repository made for the test.

use std::path::Path;
use std::process::{Command, Output};

fn git(repo: &Path, args: &[&str]) -> Output {
    let output = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    output
}

fn commit(repo: &Path, subject: &str) {
    git(repo, &["commit", "-q", "--allow-empty", "-m", subject]);
}

/// Runs `.ci/commit-check` (copied into `repo`) on the commits after `since`.
fn commit_check(repo: &Path, since: &str) -> Output {
    Command::new("bash")
        .arg(repo.join(".ci/commit-check"))
        .env("COMMIT_CHECK_SINCE", since)
        .output()
        .expect("the commit check runs")
}

/// CONTRIBUTING.md: "`.ci/commit-check` (run by `.ci/run`) fails on a
/// longer subject" than 72 characters.
#[test]
fn the_commit_check_refuses_a_subject_over_72_characters_and_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    std::fs::create_dir(repo.join(".ci")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/commit-check");
    std::fs::copy(script, repo.join(".ci/commit-check")).unwrap();
    commit(
        repo,
        &"a subject from before the check began, far longer than allowed ".repeat(2),
    );
    let since = git(repo, &["rev-parse", "HEAD"]).stdout;
    let since = String::from_utf8(since).unwrap();
    let since = since.trim();

    commit(repo, &"x".repeat(72));
    let passed = commit_check(repo, since);
    assert!(passed.status.success(), "72 characters refused: {passed:?}");

    let too_long = "y".repeat(73);
    commit(repo, &too_long);
    let refused = commit_check(repo, since);
    assert!(
        !refused.status.success(),
        "73 characters passed: {refused:?}"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&too_long), "{stderr}");
    assert!(!stderr.contains(&"x".repeat(72)), "{stderr}");
}
