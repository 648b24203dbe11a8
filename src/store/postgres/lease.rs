//! The master-key rotation lease: a session-level advisory lock taken on a
//! connection of its own (not a pooled one), so that the lock goes with the
//! connection: when the lease is dropped, or when the process dies and
//! PostgreSQL sees its connection close.

use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{lock_ids, pg};
use crate::store::{HeldLease, RotationLease, StoreError};

/// The lease's session. Dropping the client ends the connection task, which
/// closes the session and so releases the lock.
struct Session {
    client: Client,
}

impl HeldLease for Session {
    fn is_lost(&self) -> bool {
        self.client.is_closed()
    }
}

pub async fn try_lease(
    config: &Config,
    tls: &MakeRustlsConnect,
) -> Result<Option<RotationLease>, StoreError> {
    let (client, connection) = config.connect(tls.clone()).await.map_err(pg("try lease"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the rotation lease's database connection failed");
        }
    });
    let granted: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_ids::ROTATION])
        .await
        .map_err(pg("try lease"))?
        .get(0);
    Ok(granted.then(|| RotationLease::held(Session { client })))
}
