//! What every session the vault opens runs with, whatever the database's or
//! role's defaults (`ALTER DATABASE ... SET`, `ALTER ROLE ... SET`) say: READ
//! COMMITTED (the chain lock is taken inside the transaction, so a snapshot
//! taken before it, as REPEATABLE READ takes one, fails every contended
//! batch with 40001), `synchronous_commit = on` (an acknowledged write must
//! be durable), and timeouts so that a stalled vault process cannot hold the
//! cluster-wide audit-chain lock for long. They travel as startup options
//! (`-c name=value`), which the server applies over those defaults.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::Config;

use super::{pg, StoreError};

/// Timeouts of the vault's PostgreSQL sessions and pool; zero turns a
/// server-side one off (PostgreSQL's meaning of 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// `statement_timeout`: most time one statement may run.
    pub statement_timeout: Duration,
    /// `lock_timeout`: most time one statement waits for a lock (the audit
    /// chain's, a customer's row).
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a session idle this long inside
    /// a transaction (its vault process frozen or cut off) is ended by the
    /// server, which releases its locks.
    pub idle_in_transaction_timeout: Duration,
    /// TCP user timeout: data unacknowledged this long ends the connection.
    /// Keepalives are sent after a third of it idle.
    pub tcp_user_timeout: Duration,
    /// Most time to open a connection, and to wait for a free one in the pool.
    pub connect_timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(15),
            tcp_user_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The pinned isolation level, as `SHOW transaction_isolation` says it.
const ISOLATION: &str = "read committed";

fn millis(duration: Duration) -> u128 {
    duration.as_millis()
}

impl SessionSettings {
    /// The server settings every session is started with.
    fn parameters(&self) -> Vec<(&'static str, String)> {
        vec![
            // The space is escaped: options are split on unescaped spaces.
            (
                "default_transaction_isolation",
                ISOLATION.replace(' ', "\\ "),
            ),
            ("synchronous_commit", "on".into()),
            (
                "statement_timeout",
                millis(self.statement_timeout).to_string(),
            ),
            ("lock_timeout", millis(self.lock_timeout).to_string()),
            (
                "idle_in_transaction_session_timeout",
                millis(self.idle_in_transaction_timeout).to_string(),
            ),
        ]
    }

    /// Adds the settings to `config`'s startup options (after the URL's own,
    /// which they override) and sets its connection-level timeouts.
    pub fn pin(&self, config: &mut Config) {
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in self.parameters() {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c {name}={value}"));
        }
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("pii-vault");
        }
        config.connect_timeout(self.connect_timeout);
        if !self.tcp_user_timeout.is_zero() {
            config.tcp_user_timeout(self.tcp_user_timeout);
            config.keepalives(true);
            config.keepalives_idle((self.tcp_user_timeout / 3).max(Duration::from_secs(1)));
            config.keepalives_interval((self.tcp_user_timeout / 9).max(Duration::from_secs(1)));
            config.keepalives_retries(3);
        }
    }

    /// Reads back what a session runs with and refuses a session that did not
    /// take the pinned settings (a pooler that drops startup options).
    pub async fn check(&self, client: &Object) -> Result<(), StoreError> {
        let row = client
            .query_one(
                "SELECT current_setting('transaction_isolation'),
                        current_setting('synchronous_commit'),
                        current_setting('statement_timeout'),
                        current_setting('lock_timeout'),
                        current_setting('idle_in_transaction_session_timeout')",
                &[],
            )
            .await
            .map_err(pg("check session settings"))?;
        let isolation: String = row.get(0);
        let synchronous_commit: String = row.get(1);
        let statement_timeout: String = row.get(2);
        let lock_timeout: String = row.get(3);
        let idle_in_transaction: String = row.get(4);
        tracing::info!(
            transaction_isolation = %isolation,
            synchronous_commit = %synchronous_commit,
            statement_timeout = %statement_timeout,
            lock_timeout = %lock_timeout,
            idle_in_transaction_session_timeout = %idle_in_transaction,
            "postgres session settings"
        );
        if isolation != ISOLATION || synchronous_commit != "on" {
            return Err(StoreError::engine_refused(format!(
                "PostgreSQL sessions run with transaction_isolation {isolation:?} and \
                 synchronous_commit {synchronous_commit:?} instead of {ISOLATION:?} and \"on\": \
                 the startup options were not applied (a pooler in transaction mode, such as \
                 PgBouncer, is not supported)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn pinned_settings_follow_the_urls_own_options_and_override_them() {
        let mut config =
            Config::from_str("host=db dbname=vault options='-c synchronous_commit=off'").unwrap();
        SessionSettings::default().pin(&mut config);
        assert_eq!(
            config.get_options(),
            Some(
                "-c synchronous_commit=off -c default_transaction_isolation=read\\ committed \
                 -c synchronous_commit=on -c statement_timeout=30000 -c lock_timeout=10000 \
                 -c idle_in_transaction_session_timeout=15000"
            )
        );
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(30))
        );
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(config.get_application_name(), Some("pii-vault"));
    }

    #[test]
    fn a_failed_statement_is_named_by_its_verb_and_table_only() {
        use super::super::statement_name;
        assert_eq!(
            statement_name("INSERT INTO tokens (token, customer_id) VALUES ($1, $2)"),
            "INSERT tokens"
        );
        assert_eq!(
            statement_name("SELECT revision FROM customers WHERE id = $1 FOR UPDATE"),
            "SELECT customers"
        );
        assert_eq!(statement_name("SELECT pg_advisory_xact_lock($1)"), "SELECT");
    }
}
