//! Group commit for PostgreSQL. Every write must take its place in the one
//! audit chain under a database-wide lock, so transactions cannot overlap and
//! PostgreSQL cannot share their disk syncs. Instead, one writer per process
//! gathers the changes that arrive while the previous batch commits and
//! applies them in one transaction, each under its own savepoint (a change
//! that conflicts is rolled back alone): one lock hold and one sync per batch.

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::commit::{apply_change, audit_head, insert_chained, lock_chain, write_receipt};
use super::{pg, pool_error};
use crate::store::chain::ChainedWrite;
use crate::store::group_commit::{gather, Answer, Hashes, JobQueue};
use crate::store::{CommitError, CustomerChange, StoreError};

/// Most jobs in one transaction: bounds how long the chain lock is held.
const MAX_BATCH: usize = 128;

type Job = crate::store::group_commit::Job<ChainedWrite<CustomerChange>>;

pub struct Batcher {
    jobs: JobQueue<ChainedWrite<CustomerChange>>,
}

impl Batcher {
    pub fn start(pool: Pool) -> Batcher {
        let (jobs, receiver) = JobQueue::new(4 * MAX_BATCH, "postgres writer");
        tokio::spawn(run(pool, receiver));
        Batcher { jobs }
    }

    /// Commits the write's changes (all or none) with its audit events and
    /// erasure proof; returns the events' hashes once the batch holding them
    /// is durable.
    pub async fn commit(&self, write: ChainedWrite<CustomerChange>) -> Answer {
        self.jobs.submit(write).await
    }
}

async fn run(pool: Pool, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let jobs = gather(first, &mut receiver, MAX_BATCH);
        commit_batch(&pool, jobs).await;
    }
}

async fn commit_batch(pool: &Pool, jobs: Vec<Job>) {
    match apply_batch(pool, &jobs).await {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                job.answer(answer);
            }
        }
        Err(error) => {
            for job in jobs {
                job.answer(Err(error.clone().into()));
            }
        }
    }
}

/// Applies every job in one transaction under the chain's lock, chaining the
/// events of those applied after the head read under it. Returns each job's
/// answer, valid once the transaction commits.
async fn apply_batch(pool: &Pool, jobs: &[Job]) -> Result<Vec<Answer>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let mut transaction = client.transaction().await.map_err(pg("apply batch"))?;
    lock_chain(&transaction).await?;
    let mut head = audit_head(&transaction).await?;
    let mut answers = Vec::with_capacity(jobs.len());
    let mut records = Vec::new();
    let mut proofs = Vec::new();
    for job in jobs {
        let write = &job.write;
        let answer = match apply_job(&mut transaction, &write.changes).await {
            Ok(()) => {
                let chained = write.chain(&mut head);
                let hashes: Hashes = chained.hashes();
                records.extend(chained.records);
                proofs.extend(chained.proof);
                Ok(hashes)
            }
            Err(refusal) => Err(refusal),
        };
        answers.push(answer);
    }
    insert_chained(&transaction, &records, head).await?;
    for proof in proofs {
        write_receipt(&transaction, &proof.customer_id, &proof.receipt).await?;
    }
    transaction.commit().await.map_err(pg("apply batch"))?;
    Ok(answers)
}

/// One job's changes under a savepoint: on any refusal the job alone is
/// undone. A job of events only needs none.
async fn apply_job(
    transaction: &mut deadpool_postgres::Transaction<'_>,
    changes: &[CustomerChange],
) -> Result<(), CommitError> {
    if changes.is_empty() {
        return Ok(());
    }
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
