//! Group commit: writers apply their change in memory, then wait for one shared
//! flush + fdatasync that started after their change. Under load one sync serves
//! every writer that arrived while the previous sync ran, so durability costs one
//! disk sync per group, not per request.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::StoreError;

/// Makes everything applied so far durable (flush + fdatasync of the engine's files).
pub type SyncFn = Box<dyn Fn() -> std::io::Result<()> + Send>;

#[derive(Clone, Debug, Default)]
struct Durable {
    /// Every ticket up to this one is on stable storage.
    ticket: u64,
    /// Set for good when a sync fails: nothing written after that can be promised.
    failure: Option<String>,
}

#[derive(Default)]
struct Requests {
    last_ticket: u64,
    syncs: u64,
    stopping: bool,
}

struct Shared {
    requests: Mutex<Requests>,
    wake: Condvar,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    durable: watch::Receiver<Durable>,
    syncer: Option<JoinHandle<()>>,
}

impl GroupCommit {
    pub fn start(sync: SyncFn) -> std::io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
        });
        let (durable_tx, durable) = watch::channel(Durable::default());
        let thread_shared = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || run_syncer(&thread_shared, &sync, &durable_tx))?;
        Ok(GroupCommit {
            shared,
            durable,
            syncer: Some(syncer),
        })
    }

    /// Waits until everything applied before this call is on stable storage.
    /// Call it after the change is applied in memory.
    pub async fn wait_durable(&self) -> Result<(), StoreError> {
        let ticket = {
            let mut requests = lock(&self.shared.requests);
            requests.last_ticket += 1;
            requests.last_ticket
        };
        self.shared.wake.notify_one();
        let mut durable = self.durable.clone();
        let state = durable
            .wait_for(|d| d.ticket >= ticket || d.failure.is_some())
            .await
            .map_err(|_| StoreError::NotDurable("the sync thread stopped".into()))?;
        match &state.failure {
            Some(failure) => Err(StoreError::NotDurable(failure.clone())),
            None => Ok(()),
        }
    }

    /// How many syncs ran so far (a group of writers shares one).
    pub fn syncs(&self) -> u64 {
        lock(&self.shared.requests).syncs
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.requests).stopping = true;
        self.shared.wake.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run_syncer(shared: &Shared, sync: &SyncFn, durable_tx: &watch::Sender<Durable>) {
    let mut synced_ticket = 0;
    loop {
        let target = {
            let mut requests = lock(&shared.requests);
            while requests.last_ticket == synced_ticket && !requests.stopping {
                requests = shared
                    .wake
                    .wait(requests)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if requests.last_ticket == synced_ticket {
                return; // stopping, and nothing left to sync
            }
            requests.syncs += 1;
            requests.last_ticket
        };
        // Every ticket up to `target` was taken after its change was applied, so
        // this sync covers them all.
        match sync() {
            Ok(()) => {
                synced_ticket = target;
                durable_tx.send_modify(|d| d.ticket = target);
            }
            Err(error) => {
                tracing::error!(%error, "store sync failed; refusing further writes");
                durable_tx.send_modify(|d| d.failure = Some(error.to_string()));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_writer_waits_for_a_sync_that_started_after_it() {
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&syncs);
        let group = GroupCommit::start(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .unwrap();
        group.wait_durable().await.unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        group.wait_durable().await.unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_syncs() {
        let group = Arc::new(
            GroupCommit::start(Box::new(|| {
                std::thread::sleep(Duration::from_millis(5));
                Ok(())
            }))
            .unwrap(),
        );
        let writers: Vec<_> = (0..64)
            .map(|_| {
                let group = Arc::clone(&group);
                tokio::spawn(async move { group.wait_durable().await })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        let syncs = group.syncs();
        assert!((1..64).contains(&syncs), "64 writers needed {syncs} syncs");
    }

    #[tokio::test]
    async fn a_failed_sync_fails_this_and_every_later_write() {
        let group =
            GroupCommit::start(Box::new(|| Err(std::io::Error::other("disk gone")))).unwrap();
        assert!(matches!(
            group.wait_durable().await,
            Err(StoreError::NotDurable(_))
        ));
        assert!(matches!(
            group.wait_durable().await,
            Err(StoreError::NotDurable(_))
        ));
    }
}
