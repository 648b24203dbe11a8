//! How a store fails. An engine's own error is kept whole, as the source of
//! a `StoreError`, so the log's cause chain reaches the sled, PostgreSQL or
//! I/O error behind a refusal; clients see only the vault's stable message.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Failures of the engine itself (disk, corruption), never of a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Engine(EngineError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("storage is not durable: a flush to disk failed earlier ({0})")]
    NotDurable(String),
    #[error(
        "the store's disk is nearly full ({free_mib} MiB free, {reserve_mib} MiB kept in \
         reserve): writes, audited reads included, resume once space is freed"
    )]
    DiskFull { free_mib: u64, reserve_mib: u64 },
}

impl StoreError {
    /// The engine failed doing `context`, for the reason `source` gives.
    pub fn engine(
        context: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Engine(EngineError {
            context: context.into(),
            source: Some(Arc::from(source.into())),
        })
    }

    /// The engine refused, with no error of its own behind it.
    pub fn engine_refused(context: impl Into<Cow<'static, str>>) -> StoreError {
        StoreError::Engine(EngineError {
            context: context.into(),
            source: None,
        })
    }
}

/// What an engine reported: what it was doing, and its own error as the
/// source. Shared, so that one failed batch answers each of its callers with
/// the same error.
#[derive(Debug, Clone)]
pub struct EngineError {
    context: Cow<'static, str>,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl fmt::Display for EngineError {
    /// The context only: the source follows in the cause chain.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "storage engine: {}", self.context)
    }
}

impl Error for EngineError {
    /// The engine's error itself (not a wrapper), so it can be downcast.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        let source: &(dyn Error + Send + Sync + 'static) = self.source.as_deref()?;
        Some(source)
    }
}

/// Why a commit was not applied. Conflicts are retried by the domain.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the customer changed since it was read")]
    Conflict,
    /// A record that must be new exists (a freshly drawn token, a policy version).
    #[error("a record that must be new already exists")]
    Taken,
    /// The change wraps a key under a master version that another process has
    /// retired: the writer must reload the keyring and try again.
    #[error("the keyring changed: a master version in use was retired")]
    StaleKeyring,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommitError {
    /// The store error of a write that has no conflict to lose (an audit
    /// append, a sync): any other refusal is the engine's fault.
    pub fn into_store_error(self) -> StoreError {
        match self {
            CommitError::Store(error) => error,
            refusal => StoreError::engine("a write that cannot conflict was refused", refusal),
        }
    }
}

/// The error and each of its sources, joined by ": ", for a message that
/// has no log's cause chain to carry them (readiness, a failed start).
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_io_error_is_the_store_errors_source() {
        let io = std::io::Error::other("No space left on device (os error 28)");
        let error = StoreError::engine("sled batch", io);
        assert_eq!(error.to_string(), "storage engine: sled batch");
        let source = error.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error");
        assert!(io.to_string().contains("os error 28"));
        assert_eq!(
            with_causes(&error),
            "storage engine: sled batch: No space left on device (os error 28)"
        );
    }

    #[test]
    fn a_sled_error_stays_reachable_through_a_commit_error_and_a_clone() {
        let sled = sled::Error::Unsupported("a test's refusal".into());
        let error = CommitError::from(StoreError::engine("sled", sled)).into_store_error();
        let shared = error.clone();
        for error in [error, shared] {
            let source = error.source().expect("a source");
            assert!(source.downcast_ref::<sled::Error>().is_some(), "{source:?}");
        }
    }

    #[test]
    fn a_refusal_without_an_engine_error_has_no_source() {
        let error = StoreError::engine_refused("the store writer stopped");
        assert!(error.source().is_none());
        assert_eq!(
            error.to_string(),
            "storage engine: the store writer stopped"
        );
    }
}
