//! Group commit for PostgreSQL. Every write must take its place in the one
//! audit chain under a database-wide lock, so transactions cannot overlap and
//! PostgreSQL cannot share their disk syncs. Instead, one writer per process
//! gathers the changes that arrive while the previous batch commits and
//! applies them in one transaction, each under its own savepoint (a change
//! that conflicts is rolled back alone): one lock hold and one sync per batch.

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::commit::{append_chained, apply_change, lock_chain, write_receipt};
use super::{pg, pool_error};
use crate::store::audit::AuditEntry;
use crate::store::{hex, CommitError, CustomerChange, ReceiptRecord, StoreError};

/// Most jobs in one transaction: bounds how long the chain lock is held.
const MAX_BATCH: usize = 128;

type Hashes = Vec<[u8; 32]>;

enum Job {
    /// Changes applied all or none, with their audit events (and an
    /// erasure's receipt, stamped with the first event's hash).
    Changes {
        changes: Vec<CustomerChange>,
        receipt: Option<ReceiptRecord>,
        reply: oneshot::Sender<Result<Hashes, CommitError>>,
    },
    /// Audit events that record no change.
    Audit {
        entries: Vec<AuditEntry>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    pub fn start(pool: Pool) -> Batcher {
        let (jobs, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, receiver));
        Batcher { jobs }
    }

    /// Commits `changes` (all or none) with their audit events; returns the
    /// events' hashes once the batch holding them is durable.
    pub async fn commit(
        &self,
        changes: Vec<CustomerChange>,
        receipt: Option<ReceiptRecord>,
    ) -> Result<Hashes, CommitError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Changes {
            changes,
            receipt,
            reply,
        };
        self.send(job).await?;
        answer.await.map_err(|_| writer_gone())?
    }

    pub async fn append(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Audit { entries, reply }).await?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).await.map_err(|_| writer_gone())
    }
}

fn writer_gone() -> StoreError {
    StoreError::engine_refused("the postgres writer stopped")
}

async fn run(pool: Pool, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&pool, jobs).await;
    }
}

/// What one job produced inside the batch: its outcome, and where its audit
/// events sit among the batch's.
struct Applied {
    outcome: Result<(), CommitError>,
    events: std::ops::Range<usize>,
}

async fn commit_batch(pool: &Pool, jobs: Vec<Job>) {
    match apply_batch(pool, &jobs).await {
        Ok((applied, hashes)) => {
            for (job, applied) in jobs.into_iter().zip(applied) {
                let job_hashes = hashes[applied.events].to_vec();
                match job {
                    Job::Changes { reply, .. } => {
                        let _ = reply.send(applied.outcome.map(|()| job_hashes));
                    }
                    Job::Audit { reply, .. } => {
                        let _ = reply.send(applied.outcome.map_err(CommitError::into_store_error));
                    }
                }
            }
        }
        Err(error) => {
            for job in jobs {
                let failed = error.clone();
                match job {
                    Job::Changes { reply, .. } => {
                        let _ = reply.send(Err(failed.into()));
                    }
                    Job::Audit { reply, .. } => {
                        let _ = reply.send(Err(failed));
                    }
                }
            }
        }
    }
}

async fn apply_batch(pool: &Pool, jobs: &[Job]) -> Result<(Vec<Applied>, Hashes), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let mut transaction = client.transaction().await.map_err(pg("apply batch"))?;
    lock_chain(&transaction).await?;
    let mut applied = Vec::with_capacity(jobs.len());
    let mut entries = Vec::new();
    let mut receipts = Vec::new();
    for job in jobs {
        let outcome = match job {
            Job::Changes { changes, .. } => apply_job(&mut transaction, changes).await,
            Job::Audit { .. } => Ok(()),
        };
        let first_event = entries.len();
        if outcome.is_ok() {
            match job {
                Job::Changes {
                    changes, receipt, ..
                } => {
                    if let (Some(receipt), Some(change)) = (receipt, changes.first()) {
                        receipts.push((entries.len(), change.customer_id.clone(), receipt.clone()));
                    }
                    for change in changes {
                        entries.extend(change.audit.clone());
                    }
                }
                Job::Audit { entries: audit, .. } => entries.extend(audit.iter().cloned()),
            }
        }
        applied.push(Applied {
            outcome,
            events: first_event..entries.len(),
        });
    }
    let records = append_chained(&transaction, entries).await?;
    let hashes: Hashes = records.iter().map(|record| record.hash).collect();
    for (event, customer_id, mut receipt) in receipts {
        // The receipt names the event that records the erasure it proves.
        receipt.audit_hash = hashes.get(event).map(hex).unwrap_or_default();
        write_receipt(&transaction, &customer_id, &receipt).await?;
    }
    transaction.commit().await.map_err(pg("apply batch"))?;
    Ok((applied, hashes))
}

/// One job's changes under a savepoint: on any refusal the job alone is undone.
async fn apply_job(
    transaction: &mut deadpool_postgres::Transaction<'_>,
    changes: &[CustomerChange],
) -> Result<(), CommitError> {
    let savepoint = transaction
        .savepoint("job")
        .await
        .map_err(pg("apply job"))?;
    for change in changes {
        if let Err(error) = apply_change(&savepoint, change).await {
            savepoint.rollback().await.map_err(pg("apply job"))?;
            return Err(error);
        }
    }
    savepoint.commit().await.map_err(pg("apply job"))?;
    Ok(())
}
