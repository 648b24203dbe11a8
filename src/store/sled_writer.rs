//! The sled engine's single writer and group commit. Every write that takes a
//! place in the audit chain goes through one thread, which gathers the jobs
//! that arrived while it handled the previous group, checks each job against
//! the state the jobs before it leave (revisions, tokens that must be new),
//! applies the whole group as one atomic sled batch, makes it durable with one
//! flush + fdatasync, and only then answers the group's callers.
//!
//! The thread owns the chain head, so the request path takes no chain lock and
//! no serializable transaction. It applies the next group only once the last
//! one is durable: every sled batch seals and writes log buffers, so one batch
//! per disk sync, however many jobs wait, costs the least CPU per request, and
//! the jobs would have waited for that sync anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sled::IVec;
use tokio::sync::mpsc;

use super::audit::{AuditHead, AuditRecord};
use super::chain::ChainedWrite;
use super::disk_reserve::DiskReserve;
use super::group_commit::{gather, Answer, Hashes, JobQueue};
use super::records::{decode, encode, engine};
use super::sled_keys::{self as keys, CustomerEntry};
use super::{CommitError, CustomerChange, CustomerRecord, FieldRecord, KeyAnchor, StoreError};

/// Most jobs in one group: bounds how long one group's callers wait for it.
const MAX_GROUP: usize = 256;
/// Most jobs waiting for their group. A caller past it waits for room (within
/// its deadline) rather than growing the queue.
const MAX_QUEUED: usize = 4 * MAX_GROUP;

/// Makes everything applied so far durable (flush + fdatasync of the engine's files).
pub type SyncFn = Box<dyn Fn() -> std::io::Result<()> + Send>;

/// Records the writer stores for one job: a chained write (its changes, audit
/// events and erasure proof), and what only this engine's writer checks.
/// An empty job only asks for a sync of what was written before it.
#[derive(Default)]
pub struct WriteJob {
    pub chained: ChainedWrite<EncodedChange>,
    /// A new key anchor: jobs after this one are checked against it.
    pub anchor: Option<KeyAnchor>,
    /// A trim of the audit log: checked against the chain as the jobs before
    /// this one leave it; its deletions are the job's `changes`.
    pub trim: Option<TrimCheck>,
}

/// What must still hold for a trim to apply: the anchor it was verified from,
/// and the event it trims through, with its hash, not the newest.
pub struct TrimCheck {
    pub expected_anchor: AuditHead,
    pub through: AuditHead,
}

type Job = super::group_commit::Job<WriteJob>;

impl WriteJob {
    /// A job that only writes and chains.
    pub fn of(chained: ChainedWrite<EncodedChange>) -> WriteJob {
        WriteJob {
            chained,
            ..WriteJob::default()
        }
    }

    /// Whether the job only asks for a sync.
    fn is_sync_only(&self) -> bool {
        self.chained.is_empty() && self.anchor.is_none() && self.trim.is_none()
    }
}

/// Why the writer refuses everything until the process restarts, once a sync failed.
type SyncFailure = Arc<Mutex<Option<String>>>;

/// When the group being written started, while one is.
type BusySince = Arc<Mutex<Option<Instant>>>;

/// A group that takes longer than this to apply and sync is taken as a store
/// that will not recover in this process: sled waits forever on a write that
/// failed for want of space, rather than failing it.
const STALLED_AFTER: Duration = Duration::from_secs(30);

pub struct ChainWriter {
    jobs: Option<JobQueue<WriteJob>>,
    thread: Option<JoinHandle<()>>,
    sync_failure: SyncFailure,
    busy_since: BusySince,
    /// `STALLED_AFTER`, shorter in tests.
    stalled_after: Duration,
}

impl ChainWriter {
    /// Starts the writer thread. It refuses writes while `reserve` says the
    /// disk is nearly full.
    pub fn start(
        tree: sled::Db,
        sync: SyncFn,
        reserve: DiskReserve,
    ) -> Result<ChainWriter, StoreError> {
        ChainWriter::start_stalling_after(tree, sync, reserve, STALLED_AFTER)
    }

    /// `start`, taking a group that has not been applied and synced within
    /// `stalled_after` as a stalled store.
    fn start_stalling_after(
        tree: sled::Db,
        sync: SyncFn,
        reserve: DiskReserve,
        stalled_after: Duration,
    ) -> Result<ChainWriter, StoreError> {
        let head = match tree.get(keys::AUDIT_HEAD).map_err(engine)? {
            Some(bytes) => decode(&bytes)?,
            None => AuditHead::default(),
        };
        let anchor = match tree.get(keys::KEY_ANCHOR).map_err(engine)? {
            Some(bytes) => decode(&bytes)?,
            None => KeyAnchor::default(),
        };
        let (jobs, mut receiver) = JobQueue::new(MAX_QUEUED, "store writer");
        let sync_failure = SyncFailure::default();
        let busy_since = BusySince::default();
        let writer = Writer {
            tree,
            sync,
            reserve,
            sync_failure: Arc::clone(&sync_failure),
            busy_since: Arc::clone(&busy_since),
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(head, anchor, &mut receiver))
            .map_err(|error| StoreError::engine("starting the store writer", error))?;
        Ok(ChainWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            sync_failure,
            busy_since,
            stalled_after,
        })
    }

    /// Jobs waiting for their group.
    pub fn queued(&self) -> u64 {
        self.jobs.as_ref().map_or(0, JobQueue::queued)
    }

    /// Why writes are refused for good: a sync failed, or a group has been
    /// written for longer than a healthy disk ever takes.
    pub fn failure(&self) -> Option<String> {
        if let Some(failure) = lock(&self.sync_failure).clone() {
            return Some(failure);
        }
        let busy_since = *lock(&self.busy_since);
        busy_since
            .filter(|since| since.elapsed() > self.stalled_after)
            .map(|since| {
                format!(
                    "a write to disk has not finished in {} s",
                    since.elapsed().as_secs()
                )
            })
    }

    /// Applies the job (all or nothing) once it is its turn and returns the
    /// hashes of its audit events once it is on stable storage.
    pub async fn write(&self, write: WriteJob) -> Answer {
        self.jobs
            .as_ref()
            .ok_or_else(writer_gone)?
            .submit(write)
            .await
    }

    /// Returns once everything written before the call is on stable storage.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.write(WriteJob::default())
            .await
            .map(drop)
            .map_err(CommitError::into_store_error)
    }
}

impl Drop for ChainWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered every job.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::engine_refused("the store writer stopped")
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A plain value, consistent after any panic.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the writer thread owns.
struct Writer {
    tree: sled::Db,
    sync: SyncFn,
    reserve: DiskReserve,
    sync_failure: SyncFailure,
    busy_since: BusySince,
}

impl Writer {
    fn run(&self, mut head: AuditHead, mut anchor: KeyAnchor, receiver: &mut mpsc::Receiver<Job>) {
        let mut disk_was_full = false;
        while let Some(first) = receiver.blocking_recv() {
            let jobs = gather(first, receiver, MAX_GROUP);
            let failure = lock(&self.sync_failure).clone();
            let room = self.reserve.check();
            note_disk_change(&mut disk_was_full, &room);
            let answers = match (failure, room) {
                (Some(failure), _) => not_durable(jobs.len(), &failure),
                (None, Err(full)) => refuse_writes(&jobs, &full),
                (None, Ok(())) => {
                    *lock(&self.busy_since) = Some(Instant::now());
                    let (group_head, outcomes) = apply_group(&self.tree, head, &mut anchor, &jobs);
                    head = group_head;
                    let synced = (self.sync)();
                    *lock(&self.busy_since) = None;
                    match synced {
                        Ok(()) => outcomes,
                        Err(error) => {
                            tracing::error!(%error, "store sync failed; refusing further writes until the vault restarts");
                            let failure = error.to_string();
                            *lock(&self.sync_failure) = Some(failure.clone());
                            not_durable(jobs.len(), &failure)
                        }
                    }
                }
            };
            for (job, answer) in jobs.into_iter().zip(answers) {
                job.answer(answer);
            }
        }
    }
}

/// Logs when the disk becomes nearly full and when it has room again.
fn note_disk_change(was_full: &mut bool, room: &Result<(), StoreError>) {
    match room {
        Err(full) if !*was_full => tracing::error!(%full, "refusing writes"),
        Ok(()) if *was_full => tracing::info!("the store's disk has room again; taking writes"),
        _ => {}
    }
    *was_full = room.is_err();
}

/// Every job that writes is refused with `full`; a job that only asks for a
/// sync has nothing to wait for (every group was synced before its answer).
fn refuse_writes(jobs: &[Job], full: &StoreError) -> Vec<Answer> {
    jobs.iter()
        .map(|job| {
            if job.write.is_sync_only() {
                Ok(Vec::new())
            } else {
                Err(full.clone().into())
            }
        })
        .collect()
}

fn not_durable(jobs: usize, failure: &str) -> Vec<Answer> {
    (0..jobs)
        .map(|_| Err(StoreError::NotDurable(failure.to_owned()).into()))
        .collect()
}

/// Stages every job of the group in order and applies what was accepted in
/// one batch. Returns the chain head after the group and each job's outcome.
/// `anchor` is the one the writer checks against, changed by the group's jobs
/// (and restored if the group fails).
fn apply_group(
    tree: &sled::Db,
    head: AuditHead,
    anchor: &mut KeyAnchor,
    jobs: &[Job],
) -> (AuditHead, Vec<Answer>) {
    let mut group = Staged::default();
    let mut group_head = head;
    let anchor_before = anchor.clone();
    let outcomes: Vec<_> = jobs
        .iter()
        .map(|job| {
            if job.is_abandoned() {
                // Its caller gave up (its deadline passed): its outcome is
                // unknown to the caller either way, and skipping it saves the work.
                return Err(StoreError::engine_refused("the caller gave up").into());
            }
            stage_job(tree, &mut group, &mut group_head, anchor, &job.write)
        })
        .collect();
    if group.writes.is_empty() {
        return (group_head, outcomes);
    }
    match tree.apply_batch(group.into_batch()) {
        Ok(()) => (group_head, outcomes),
        Err(error) => {
            tracing::error!(%error, "store batch failed; its writes were refused");
            *anchor = anchor_before;
            let failed = engine(error);
            let refused = outcomes
                .iter()
                .map(|_| Err(failed.clone().into()))
                .collect();
            (head, refused)
        }
    }
}

/// Writes staged but not yet applied, readable by the checks of later jobs.
#[derive(Default)]
struct Staged {
    /// `None` removes the key.
    writes: HashMap<Vec<u8>, Option<IVec>>,
}

impl Staged {
    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// The value of `key` as the staged layers (innermost first) and then the tree hold it.
fn current(tree: &sled::Db, layers: &[&Staged], key: &[u8]) -> Result<Option<IVec>, StoreError> {
    for layer in layers {
        if let Some(value) = layer.writes.get(key) {
            return Ok(value.clone());
        }
    }
    tree.get(key).map_err(engine)
}

/// Checks and stages one job on top of `group`. A refused job stages nothing.
fn stage_job(
    tree: &sled::Db,
    group: &mut Staged,
    head: &mut AuditHead,
    anchor: &mut KeyAnchor,
    job: &WriteJob,
) -> Result<Hashes, CommitError> {
    let mut own = Staged::default();
    if let Some(trim) = &job.trim {
        check_trim(tree, group, *head, trim)?;
        own.writes.insert(
            keys::AUDIT_ANCHOR.to_vec(),
            Some(encode(&trim.through)?.into()),
        );
    }
    for change in &job.chained.changes {
        let customer = check(tree, &[&own, group], anchor, change)?;
        stage_change(&mut own, change, customer)?;
    }
    let (hashes, job_head) = stage_audit(&mut own, *head, job)?;
    if let Some(new_anchor) = &job.anchor {
        own.writes
            .insert(keys::KEY_ANCHOR.to_vec(), Some(encode(new_anchor)?.into()));
        *anchor = new_anchor.clone();
    }
    group.writes.extend(own.writes);
    *head = job_head;
    Ok(hashes)
}

/// Checks the change against the current state; returns the customer's current
/// entry, onto which the change's fields go. A record whose keys are wrapped
/// under a version being retired (or destroyed) is refused: it was built from
/// a keyring older than the retirement, and would be unreadable after it.
fn check(
    tree: &sled::Db,
    layers: &[&Staged],
    anchor: &KeyAnchor,
    change: &EncodedChange,
) -> Result<Option<CustomerEntry>, CommitError> {
    let mut entry = None;
    if let Some(customer) = &change.customer {
        if let Some(record) = &customer.record {
            let versions = [
                Some(record.dek.master_version),
                record.token_key.as_ref().map(|key| key.master_version),
            ];
            if !versions.into_iter().flatten().all(|v| anchor.admits(v)) {
                return Err(CommitError::StaleKeyring);
            }
        }
        entry = current(tree, layers, &customer.key)?
            .map(|bytes| decode::<CustomerEntry>(&bytes))
            .transpose()?;
        let current_revision = entry.as_ref().map(|entry| entry.record.revision);
        if current_revision != customer.expected_revision {
            return Err(CommitError::Conflict);
        }
    }
    for key in &change.must_be_new {
        if current(tree, layers, key)?.is_some() {
            return Err(CommitError::Taken);
        }
    }
    Ok(entry)
}

/// A trim applies only to the chain it was verified against: the same
/// anchor, its last event still held with the same hash, and a newer event.
fn check_trim(
    tree: &sled::Db,
    group: &Staged,
    head: AuditHead,
    trim: &TrimCheck,
) -> Result<(), CommitError> {
    let anchor = current(tree, &[group], keys::AUDIT_ANCHOR)?
        .map(|bytes| decode::<AuditHead>(&bytes))
        .transpose()?
        .unwrap_or_default();
    let through = current(tree, &[group], &keys::audit_event(trim.through.seq))?
        .map(|bytes| decode::<AuditRecord>(&bytes))
        .transpose()?;
    let held = through.is_some_and(|event| event.hash == trim.through.hash);
    if anchor != trim.expected_anchor || !held || head.seq <= trim.through.seq {
        return Err(CommitError::Conflict);
    }
    Ok(())
}

fn stage_change(
    staged: &mut Staged,
    change: &EncodedChange,
    entry: Option<CustomerEntry>,
) -> Result<(), StoreError> {
    for key in &change.removes {
        staged.writes.insert(key.clone(), None);
    }
    for (key, value) in &change.inserts {
        staged
            .writes
            .insert(key.clone(), Some(IVec::from(value.as_slice())));
    }
    if let Some(customer) = &change.customer {
        let value = match &customer.record {
            Some(record) => {
                let mut fields = entry.map(|entry| entry.fields).unwrap_or_default();
                for name in &customer.delete_fields {
                    fields.remove(name);
                }
                fields.extend(customer.put_fields.iter().cloned());
                let entry = CustomerEntry {
                    record: record.clone(),
                    fields,
                };
                Some(IVec::from(encode(&entry)?))
            }
            None => None,
        };
        staged.writes.insert(customer.key.clone(), value);
    }
    Ok(())
}

/// Chains the job's events after `head` and stages them, the new head and the
/// erasure's proof. Returns the events' hashes and the head after them.
fn stage_audit(
    staged: &mut Staged,
    mut head: AuditHead,
    job: &WriteJob,
) -> Result<(Hashes, AuditHead), StoreError> {
    let chained = job.chained.chain(&mut head);
    for record in &chained.records {
        if !record.customer_id.is_empty() {
            let index_key = keys::customer_audit_event(&record.customer_id, record.seq);
            staged.writes.insert(index_key, Some(IVec::default()));
        }
        let encoded = encode(record)?;
        staged
            .writes
            .insert(keys::audit_event(record.seq), Some(encoded.into()));
    }
    if !chained.records.is_empty() {
        staged
            .writes
            .insert(keys::AUDIT_HEAD.to_vec(), Some(encode(&head)?.into()));
    }
    if let Some(proof) = &chained.proof {
        let receipt = &proof.receipt;
        let erased = keys::erasure(&proof.customer_id);
        let receipt_id = IVec::from(receipt.receipt_id.as_bytes());
        staged.writes.insert(erased, Some(receipt_id));
        let key = keys::receipt(&receipt.receipt_id);
        staged.writes.insert(key, Some(encode(receipt)?.into()));
    }
    Ok((chained.hashes(), head))
}

/// The format name of a random token's record (`TokenFormat::Random`).
const RANDOM_FORMAT: &str = "random";

/// A change as keys and encoded records, so the writer thread only checks and
/// moves bytes, apart from the one customer entry it merges the fields into.
pub struct EncodedChange {
    /// Absent for changes that concern no customer (policy versions).
    customer: Option<CustomerUpdate>,
    inserts: Vec<(Vec<u8>, Vec<u8>)>,
    must_be_new: Vec<Vec<u8>>,
    removes: Vec<Vec<u8>>,
}

/// The customer whose revision is compared, their new record and field changes.
struct CustomerUpdate {
    key: Vec<u8>,
    expected_revision: Option<u64>,
    /// `None` removes the customer with every field.
    record: Option<CustomerRecord>,
    put_fields: Vec<(String, FieldRecord)>,
    delete_fields: Vec<String>,
}

impl EncodedChange {
    /// Keys to remove, of no customer (a trim's audit events).
    pub fn removals(removes: Vec<Vec<u8>>) -> EncodedChange {
        EncodedChange {
            customer: None,
            inserts: Vec::new(),
            must_be_new: Vec::new(),
            removes,
        }
    }

    /// Records that must all be new (a policy version's keys).
    pub fn new_records(inserts: Vec<(Vec<u8>, Vec<u8>)>) -> EncodedChange {
        EncodedChange {
            customer: None,
            must_be_new: inserts.iter().map(|(key, _)| key.clone()).collect(),
            inserts,
            removes: Vec::new(),
        }
    }

    /// Encodes the change's records; its audit event is for the job to chain.
    pub fn encode(change: CustomerChange) -> Result<EncodedChange, StoreError> {
        let id = change.customer_id.as_str();
        let mut inserts = Vec::new();
        let mut removes = Vec::new();
        for (token, record) in change.new_tokens.iter().chain(&change.put_tokens) {
            inserts.push((keys::token(token), encode(record)?));
            inserts.push((keys::customer_token(id, token), Vec::new()));
        }
        // A random token is trusted to be new: 128 random bits collide with
        // a chance below 10^-18 at 10^10 tokens, and checking costs the one
        // writer thread a read per token. Format-preserving tokens, drawn
        // from a small space, are checked.
        let must_be_new = change
            .new_tokens
            .iter()
            .filter(|(_, record)| record.format != RANDOM_FORMAT)
            .map(|(token, _)| keys::token(token))
            .collect();
        for token in &change.delete_tokens {
            removes.push(keys::token(token));
            removes.push(keys::customer_token(id, token));
        }
        for entry in &change.put_index {
            let key = keys::index(&entry.field_name, &entry.blind_index, id);
            inserts.push((key, Vec::new()));
        }
        for entry in &change.delete_index {
            removes.push(keys::index(&entry.field_name, &entry.blind_index, id));
        }
        Ok(EncodedChange {
            customer: Some(CustomerUpdate {
                key: keys::customer(id),
                expected_revision: change.expected_revision,
                record: change.customer,
                put_fields: change.put_fields,
                delete_fields: change.delete_fields,
            }),
            inserts,
            must_be_new,
            removes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::fixtures::{customer_record, field_record};
    use crate::store::{AuditEntry, TokenRecord, TokenTarget};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn tree() -> sled::Db {
        sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled")
    }

    /// A job that moves `customer_id` from `expected` to `expected + 1`,
    /// drawing a format-preserving `token` (which must be new), with one
    /// audit event.
    fn job(customer_id: &str, expected: Option<u64>, token: &str) -> WriteJob {
        job_drawing(customer_id, expected, token, "format_preserving")
    }

    /// `job`, drawing a token of `format`.
    fn job_drawing(
        customer_id: &str,
        expected: Option<u64>,
        token: &str,
        format: &str,
    ) -> WriteJob {
        let change = CustomerChange {
            customer_id: customer_id.into(),
            expected_revision: expected,
            customer: Some(customer_record(expected.map_or(1, |r| r + 1))),
            new_tokens: vec![(
                token.into(),
                TokenRecord {
                    customer_id: customer_id.into(),
                    kind: "ssn".into(),
                    format: format.into(),
                    target: TokenTarget::Value(vec![1, 2, 3]),
                },
            )],
            ..CustomerChange::default()
        };
        WriteJob::of(ChainedWrite {
            changes: vec![EncodedChange::encode(change).expect("encodes")],
            entries: vec![AuditEntry {
                customer_id: customer_id.into(),
                action: "Tokenize".into(),
                ..AuditEntry::default()
            }],
            proof: None,
        })
    }

    /// Runs the jobs as one group, as the writer thread does when they arrive
    /// together, and returns each job's outcome and the new head.
    fn group(tree: &sled::Db, head: AuditHead, jobs: Vec<WriteJob>) -> (Vec<bool>, AuditHead) {
        // Callers that wait for their answers: a job whose caller left is skipped.
        let (jobs, _callers): (Vec<_>, Vec<_>) = jobs.into_iter().map(Job::new).unzip();
        let (head, outcomes) = apply_group(tree, head, &mut KeyAnchor::default(), &jobs);
        (outcomes.iter().map(Result::is_ok).collect(), head)
    }

    /// A sync that flushes `tree` and counts how often it ran.
    fn counting_sync(tree: &sled::Db) -> (SyncFn, Arc<AtomicU64>) {
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&syncs);
        let tree = tree.clone();
        let sync: SyncFn = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            tree.flush().map(|_| ()).map_err(std::io::Error::other)
        });
        (sync, syncs)
    }

    fn revision(tree: &sled::Db, customer_id: &str) -> Option<u64> {
        let bytes = tree.get(keys::customer(customer_id)).expect("reads")?;
        Some(
            decode::<CustomerEntry>(&bytes)
                .expect("decodes")
                .record
                .revision,
        )
    }

    #[test]
    fn a_drawn_token_is_checked_to_be_new_unless_it_is_random() {
        let tree = tree();
        let (outcomes, head) = group(
            &tree,
            AuditHead::default(),
            vec![
                job_drawing("c1", None, "907-29-8900", "format_preserving"),
                job_drawing("c2", None, "907-29-8900", "format_preserving"),
                job_drawing("c3", None, "tok_a", "random"),
                job_drawing("c4", None, "tok_a", "random"),
            ],
        );
        assert_eq!(outcomes, vec![true, false, true, true]);
        // The second random draw of the same 128 bits (which never happens)
        // would take the token over: no read was spent to check it.
        let record = tree
            .get(keys::token("tok_a"))
            .expect("reads")
            .expect("kept");
        assert_eq!(
            decode::<TokenRecord>(&record).expect("decodes").customer_id,
            "c4"
        );
        assert_eq!(head.seq, 3);
    }

    #[test]
    fn a_later_job_in_a_group_sees_the_earlier_ones() {
        let tree = tree();
        let (outcomes, head) = group(
            &tree,
            AuditHead::default(),
            vec![
                job("alice", None, "tok-1"),
                // Read the same state as the first: must lose.
                job("alice", None, "tok-2"),
                // Read what the first wrote: wins.
                job("alice", Some(1), "tok-3"),
                // Draws a token the first job took in this group.
                job("bob", None, "tok-1"),
                job("bob", None, "tok-4"),
            ],
        );
        assert_eq!(outcomes, [true, false, true, false, true]);
        assert_eq!(revision(&tree, "alice"), Some(2));
        assert_eq!(revision(&tree, "bob"), Some(1));
        // Refused jobs left nothing behind, not even their events.
        assert!(tree.get(keys::token("tok-2")).expect("reads").is_none());
        assert_eq!(head.seq, 3);
        let stored: AuditHead = decode(&tree.get(keys::AUDIT_HEAD).unwrap().unwrap()).unwrap();
        assert_eq!(stored, head);
    }

    /// A job that moves `customer_id` from `expected` to `expected + 1`,
    /// putting and deleting fields (no tokens, no audit event).
    fn fields_job(
        customer_id: &str,
        expected: Option<u64>,
        put: &[(&str, &str)],
        delete: &[&str],
    ) -> WriteJob {
        let change = CustomerChange {
            customer_id: customer_id.into(),
            expected_revision: expected,
            customer: Some(customer_record(expected.map_or(1, |r| r + 1))),
            put_fields: put
                .iter()
                .map(|(name, token)| ((*name).to_owned(), field_record(token)))
                .collect(),
            delete_fields: delete.iter().map(|name| (*name).to_owned()).collect(),
            ..CustomerChange::default()
        };
        WriteJob::of(ChainedWrite {
            changes: vec![EncodedChange::encode(change).expect("encodes")],
            ..ChainedWrite::default()
        })
    }

    fn stored_fields(tree: &sled::Db, customer_id: &str) -> Vec<(String, String)> {
        let bytes = tree.get(keys::customer(customer_id)).unwrap().unwrap();
        let entry: CustomerEntry = decode(&bytes).unwrap();
        entry
            .fields
            .into_iter()
            .map(|(name, field)| (name, field.token))
            .collect()
    }

    #[test]
    fn field_changes_merge_into_the_entry_across_jobs_and_groups() {
        let tree = tree();
        let (outcomes, head) = group(
            &tree,
            AuditHead::default(),
            vec![
                fields_job(
                    "ann",
                    None,
                    &[("email", "e1"), ("name", "n1"), ("phone", "p1")],
                    &[],
                ),
                // Sees the first job's entry: replaces one field, deletes one,
                // adds one, keeps one.
                fields_job(
                    "ann",
                    Some(1),
                    &[("email", "e2"), ("ssn", "s1")],
                    &["phone"],
                ),
            ],
        );
        assert_eq!(outcomes, [true, true]);
        let expected = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(name, token)| ((*name).to_owned(), (*token).to_owned()))
                .collect()
        };
        assert_eq!(
            stored_fields(&tree, "ann"),
            expected(&[("email", "e2"), ("name", "n1"), ("ssn", "s1")])
        );
        // A later group starts from the stored entry.
        let (outcomes, _) = group(
            &tree,
            head,
            vec![fields_job("ann", Some(2), &[("phone", "p2")], &["ssn"])],
        );
        assert_eq!(outcomes, [true]);
        assert_eq!(
            stored_fields(&tree, "ann"),
            expected(&[("email", "e2"), ("name", "n1"), ("phone", "p2")])
        );
        assert_eq!(revision(&tree, "ann"), Some(3));
    }

    #[test]
    fn the_chain_continues_across_groups_without_gaps() {
        let tree = tree();
        let (_, head) = group(&tree, AuditHead::default(), vec![job("a", None, "t1")]);
        let (_, head) = group(
            &tree,
            head,
            vec![job("b", None, "t2"), job("c", None, "t3")],
        );
        assert_eq!(head.seq, 3);
        let mut prev = crate::store::GENESIS_HASH;
        for seq in 1..=3 {
            let bytes = tree.get(keys::audit_event(seq)).unwrap().unwrap();
            let record: AuditRecord = decode(&bytes).unwrap();
            assert_eq!(record.prev_hash, prev);
            assert_eq!(record.computed_hash(), record.hash);
            prev = record.hash;
        }
        assert_eq!(prev, head.hash);
    }

    #[test]
    fn a_trim_applies_only_to_the_anchor_it_was_checked_against_even_within_a_group() {
        let tree = tree();
        let (_, head) = group(
            &tree,
            AuditHead::default(),
            vec![
                job("a", None, "t1"),
                job("b", None, "t2"),
                job("c", None, "t3"),
            ],
        );
        let event = |seq: u64| -> AuditRecord {
            decode(&tree.get(keys::audit_event(seq)).unwrap().unwrap()).unwrap()
        };
        let through = AuditHead {
            seq: 2,
            hash: event(2).hash,
        };
        let trim_job = || WriteJob {
            chained: ChainedWrite {
                changes: vec![EncodedChange::removals(vec![
                    keys::audit_event(1),
                    keys::audit_event(2),
                ])],
                entries: vec![AuditEntry {
                    action: "TrimAuditLog".into(),
                    ..AuditEntry::default()
                }],
                proof: None,
            },
            trim: Some(TrimCheck {
                expected_anchor: AuditHead::default(),
                through,
            }),
            ..WriteJob::default()
        };
        // The second sees the anchor the first moved, and is refused.
        let (outcomes, head) = group(&tree, head, vec![trim_job(), trim_job()]);
        assert_eq!(outcomes, [true, false]);
        let anchor: AuditHead = decode(&tree.get(keys::AUDIT_ANCHOR).unwrap().unwrap()).unwrap();
        assert_eq!(anchor, through);
        assert!(tree.get(keys::audit_event(1)).unwrap().is_none());
        assert!(tree.get(keys::audit_event(2)).unwrap().is_none());
        assert_eq!(event(3).prev_hash, through.hash);
        assert_eq!((head.seq, event(4).action.as_str()), (4, "TrimAuditLog"));
        // Through the head: refused.
        let at_head = WriteJob {
            trim: Some(TrimCheck {
                expected_anchor: through,
                through: head,
            }),
            ..WriteJob::default()
        };
        assert_eq!(group(&tree, head, vec![at_head]).0, [false]);
    }

    #[tokio::test]
    async fn the_thread_answers_jobs_and_stops_when_dropped() {
        let tree = tree();
        let (sync, syncs) = counting_sync(&tree);
        let writer = ChainWriter::start(tree.clone(), sync, DiskReserve::none()).unwrap();
        let hashes = writer.write(job("a", None, "t1")).await.unwrap();
        assert_eq!(hashes.len(), 1);
        assert_eq!(
            syncs.load(Ordering::SeqCst),
            1,
            "answered only after a sync"
        );
        assert!(matches!(
            writer.write(job("a", None, "t2")).await,
            Err(CommitError::Conflict)
        ));
        drop(writer);
        // A new writer picks the chain up where the stored head left it.
        let (sync, _) = counting_sync(&tree);
        let writer = ChainWriter::start(tree.clone(), sync, DiskReserve::none()).unwrap();
        writer.write(job("b", None, "t3")).await.unwrap();
        let head: AuditHead = decode(&tree.get(keys::AUDIT_HEAD).unwrap().unwrap()).unwrap();
        assert_eq!(head.seq, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_share_syncs() {
        let tree = tree();
        let (sync, syncs) = counting_sync(&tree);
        let writer = Arc::new(ChainWriter::start(tree.clone(), sync, DiskReserve::none()).unwrap());
        let jobs: Vec<_> = (0..64)
            .map(|i| {
                let writer = Arc::clone(&writer);
                tokio::spawn(async move {
                    let customer = format!("c{i}");
                    writer.write(job(&customer, None, &format!("t{i}"))).await
                })
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!((1..64).contains(&syncs), "64 jobs needed {syncs} syncs");
        let head: AuditHead = decode(&tree.get(keys::AUDIT_HEAD).unwrap().unwrap()).unwrap();
        assert_eq!(head.seq, 64);
    }

    /// The rotation race: a customer whose key was wrapped under a version
    /// that is being retired is refused once the anchor says so, even when
    /// its revision check passes, and the anchor survives a restart.
    #[tokio::test]
    async fn a_key_under_a_retiring_version_is_refused_after_the_anchor() {
        let tree = tree();
        let (sync, _) = counting_sync(&tree);
        let writer = ChainWriter::start(tree.clone(), sync, DiskReserve::none()).unwrap();
        let retiring = KeyAnchor {
            retiring: [1].into(),
            ..KeyAnchor::default()
        };
        let anchor_job = WriteJob {
            anchor: Some(retiring.clone()),
            ..WriteJob::default()
        };
        writer.write(anchor_job).await.unwrap();
        // customer_record wraps both keys under version 1.
        let refused = writer.write(job("carol", None, "tok-9")).await;
        assert!(matches!(refused, Err(CommitError::StaleKeyring)));
        assert_eq!(revision(&tree, "carol"), None);
        let mut rewrapped = job("carol", None, "tok-9");
        let record = rewrapped.chained.changes[0]
            .customer
            .as_mut()
            .and_then(|customer| customer.record.as_mut())
            .unwrap();
        record.dek.master_version = 2;
        if let Some(key) = record.token_key.as_mut() {
            key.master_version = 2;
        }
        writer.write(rewrapped).await.unwrap();
        assert_eq!(revision(&tree, "carol"), Some(1));
        drop(writer);
        let (sync, _) = counting_sync(&tree);
        let writer = ChainWriter::start(tree.clone(), sync, DiskReserve::none()).unwrap();
        let after_restart = writer.write(job("dave", None, "tok-10")).await;
        assert!(matches!(after_restart, Err(CommitError::StaleKeyring)));
    }

    /// A sync that holds the writer thread until the gate opens, so jobs pile
    /// up behind the group it syncs; it counts the syncs that began.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        entered: AtomicU64,
    }

    impl Gate {
        fn sync(self: &Arc<Self>, tree: &sled::Db) -> SyncFn {
            let gate = Arc::clone(self);
            let tree = tree.clone();
            Box::new(move || {
                gate.entered.fetch_add(1, Ordering::SeqCst);
                let mut open = lock(&gate.open);
                while !*open {
                    open = gate
                        .opened
                        .wait(open)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                drop(open);
                tree.flush().map(|_| ()).map_err(std::io::Error::other)
            })
        }

        fn open(&self) {
            *lock(&self.open) = true;
            self.opened.notify_all();
        }
    }

    /// Opens the gate when dropped, so a failing test does not leave the
    /// writer thread blocked and its drop (which joins the thread) hanging.
    /// Declared after the writer, it is dropped before it.
    struct OpenOnDrop(Arc<Gate>);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    /// Polls `condition` until it holds; the deadline only detects a hang.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn spawn_write(
        writer: &Arc<ChainWriter>,
        write: WriteJob,
    ) -> tokio::task::JoinHandle<Result<Hashes, CommitError>> {
        let writer = Arc::clone(writer);
        tokio::spawn(async move { writer.write(write).await })
    }

    /// A writer whose syncs wait for the gate, holding `held` in its first
    /// group once it returns.
    async fn held_writer(
        tree: &sled::Db,
        stalled_after: Duration,
        held: WriteJob,
    ) -> (
        Arc<ChainWriter>,
        Arc<Gate>,
        tokio::task::JoinHandle<Result<Hashes, CommitError>>,
    ) {
        let gate = Arc::new(Gate::default());
        let writer = ChainWriter::start_stalling_after(
            tree.clone(),
            gate.sync(tree),
            DiskReserve::none(),
            stalled_after,
        )
        .unwrap();
        let writer = Arc::new(writer);
        let first = spawn_write(&writer, held);
        eventually("the writer syncs its first group", || {
            gate.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        (writer, gate, first)
    }

    /// docs/operations.md: "at most 1,024 writes wait for the sled store (more
    /// wait for room within their deadline)".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_max_queued_a_write_waits_for_room_and_one_that_gives_up_there_writes_nothing() {
        let tree = tree();
        let (writer, gate, first) =
            held_writer(&tree, STALLED_AFTER, job("first", None, "t-first")).await;
        let _open = OpenOnDrop(Arc::clone(&gate));
        let queued: Vec<_> = (0..MAX_QUEUED)
            .map(|i| spawn_write(&writer, job(&format!("c{i}"), None, &format!("t{i}"))))
            .collect();
        eventually("the queue is full", || writer.queued() == MAX_QUEUED as u64).await;
        // A caller whose deadline passes while it waits for room: its job
        // never enters the queue.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            writer.write(job("late", None, "t-late")),
        )
        .await;
        assert!(gave_up.is_err(), "answered while the writer was held");
        // A patient caller waits outside the queue, which does not grow.
        let patient = spawn_write(&writer, job("patient", None, "t-patient"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(writer.queued(), MAX_QUEUED as u64, "the queue grew");
        assert!(!patient.is_finished());
        gate.open();
        first.await.unwrap().unwrap();
        for job in queued {
            job.await.unwrap().unwrap();
        }
        patient.await.unwrap().unwrap();
        assert_eq!(revision(&tree, "patient"), Some(1));
        assert_eq!(revision(&tree, "late"), None);
        assert!(tree.get(keys::token("t-late")).unwrap().is_none());
        let head: AuditHead = decode(&tree.get(keys::AUDIT_HEAD).unwrap().unwrap()).unwrap();
        assert_eq!(head.seq, MAX_QUEUED as u64 + 2);
        assert_eq!(writer.queued(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_gave_up_before_the_writer_reached_it_is_not_written() {
        let tree = tree();
        let (writer, gate, first) =
            held_writer(&tree, STALLED_AFTER, job("first", None, "t-first")).await;
        let _open = OpenOnDrop(Arc::clone(&gate));
        let abandoned = spawn_write(&writer, job("bob", None, "t-bob"));
        eventually("bob's job is queued", || writer.queued() == 1).await;
        // Its caller goes away (as a call whose deadline passed does),
        // dropping the receiver of its answer.
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        let kept = spawn_write(&writer, job("carol", None, "t-carol"));
        eventually("carol's job is queued", || writer.queued() == 2).await;
        gate.open();
        first.await.unwrap().unwrap();
        kept.await.unwrap().unwrap();
        assert_eq!(revision(&tree, "bob"), None);
        assert!(tree.get(keys::token("t-bob")).unwrap().is_none());
        assert_eq!(revision(&tree, "carol"), Some(1));
        // Nor did it take a place in the audit chain.
        let head: AuditHead = decode(&tree.get(keys::AUDIT_HEAD).unwrap().unwrap()).unwrap();
        assert_eq!(head.seq, 2);
    }

    /// docs/operations.md: "a write to disk that has not finished in 30 s
    /// leaves sled unable to promise anything more": the writer reports it as
    /// its failure, which the store's health turns into `Failed` (and the
    /// vault into exit status 74).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_not_synced_within_the_stall_limit_is_reported_as_the_writers_failure() {
        let tree = tree();
        let stalled_after = Duration::from_millis(300);
        let gate = Arc::new(Gate::default());
        gate.open();
        let writer = ChainWriter::start_stalling_after(
            tree.clone(),
            gate.sync(&tree),
            DiskReserve::none(),
            stalled_after,
        )
        .unwrap();
        // A healthy writer, idle or after a group, reports nothing.
        assert_eq!(writer.failure(), None);
        writer.write(job("a", None, "t-a")).await.unwrap();
        tokio::time::sleep(stalled_after * 2).await;
        assert_eq!(writer.failure(), None, "an idle writer is not stalled");
        drop(writer);

        let (writer, gate, stuck) = held_writer(&tree, stalled_after, job("b", None, "t-b")).await;
        let _open = OpenOnDrop(Arc::clone(&gate));
        eventually("the writer reports the stall", || {
            writer.failure().is_some()
        })
        .await;
        let failure = writer.failure().unwrap();
        assert!(
            failure.starts_with("a write to disk has not finished in"),
            "{failure}"
        );
        gate.open();
        stuck.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_group_and_every_later_job() {
        let tree = tree();
        let writer = ChainWriter::start(
            tree.clone(),
            Box::new(|| Err(std::io::Error::other("disk gone"))),
            DiskReserve::none(),
        )
        .unwrap();
        for (customer, token) in [("a", "t1"), ("b", "t2")] {
            assert!(matches!(
                writer.write(job(customer, None, token)).await,
                Err(CommitError::Store(StoreError::NotDurable(_)))
            ));
        }
        assert!(matches!(
            writer.sync().await,
            Err(StoreError::NotDurable(_))
        ));
        // The first job was applied before its sync failed; nothing after it was.
        assert!(tree.get(keys::token("t2")).unwrap().is_none());
    }
}
