//! The queue both engines' group commits take their jobs from: a caller
//! sends its write and waits for the answer; the engine's one writer takes
//! every job that is waiting as one group, applies the group at once and
//! answers each job once the group is durable.

use tokio::sync::{mpsc, oneshot};

use super::{CommitError, StoreError};

/// The hashes of a job's audit events, in order.
pub type Hashes = Vec<[u8; 32]>;

pub type Answer = Result<Hashes, CommitError>;

/// A write and where its answer goes.
pub struct Job<W> {
    pub write: W,
    reply: oneshot::Sender<Answer>,
}

impl<W> Job<W> {
    /// A job, and the receiver its answer arrives on.
    pub fn new(write: W) -> (Job<W>, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        (Job { write, reply }, answer)
    }

    /// Whether its caller stopped waiting (its deadline passed).
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    pub fn answer(self, answer: Answer) {
        // A caller that stopped waiting has nothing to be told.
        let _ = self.reply.send(answer);
    }
}

/// The sending side, held by the engine's callers. Dropping it ends the
/// writer once it has answered every job.
pub struct JobQueue<W> {
    jobs: mpsc::Sender<Job<W>>,
    /// What a caller is told when the writer is gone.
    writer: &'static str,
}

impl<W> JobQueue<W> {
    /// A queue of at most `capacity` waiting jobs (a caller past it waits
    /// for room), and the writer's end of it.
    pub fn new(capacity: usize, writer: &'static str) -> (JobQueue<W>, mpsc::Receiver<Job<W>>) {
        let (jobs, receiver) = mpsc::channel(capacity);
        (JobQueue { jobs, writer }, receiver)
    }

    /// Queues the write and waits for the writer's answer.
    pub async fn submit(&self, write: W) -> Answer {
        let (job, answer) = Job::new(write);
        self.jobs.send(job).await.map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Jobs waiting for their group.
    pub fn queued(&self) -> u64 {
        (self.jobs.max_capacity() - self.jobs.capacity()) as u64
    }

    fn gone(&self) -> StoreError {
        StoreError::engine_refused(format!("the {} stopped", self.writer))
    }
}

/// `first` and the jobs already waiting behind it, at most `max` in all.
pub fn gather<W>(first: Job<W>, receiver: &mut mpsc::Receiver<Job<W>>, max: usize) -> Vec<Job<W>> {
    let mut group = vec![first];
    while group.len() < max {
        let Ok(job) = receiver.try_recv() else { break };
        group.push(job);
    }
    group
}
