//! Votes on one thread are applied in batches: every vote must lock its
//! thread's row (that is what keeps the counts exact), so the votes of a busy
//! thread run one after the other whatever we do, and each would wait for a
//! commit (an fsync on PostgreSQL) and hold a pooled connection while it
//! queues. Instead, the votes that arrive for a thread while one of its
//! transactions runs wait here, without a connection, and the next transaction
//! applies all of them at once, in arrival order, answering each with the
//! counts right after its own vote. Across replicas the row lock still
//! serialises the batches, so nothing depends on this queue for correctness.
//!
//! A thread's queue is bounded: when votes arrive faster than its transactions
//! apply them, the ones beyond the bound are refused at once
//! (`RESOURCE_EXHAUSTED`, nothing stored) rather than held in memory without
//! limit with their callers waiting ever longer.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Status;

use crate::domain::{Ballot, Direction, Tally};
use crate::store::Store;

/// The most votes one transaction applies (it holds the thread's row lock meanwhile).
pub const MAX_VOTES_PER_TRANSACTION: usize = 256;

/// How many votes may wait for one thread's next transaction unless configured
/// (`VOTE_QUEUE_LIMIT`): some 40 transactions' worth, a few hundred kilobytes.
pub const DEFAULT_QUEUE_LIMIT: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

/// A vote waiting for its thread's next transaction.
struct Pending {
    ballot: Ballot,
    answer: oneshot::Sender<Result<Tally, Status>>,
}

type Queues = Arc<Mutex<HashMap<i64, Vec<Pending>>>>;

/// The per-thread vote queues of this process.
#[derive(Clone)]
pub struct Votes {
    store: Store,
    /// A thread has an entry while a worker applies its votes; new votes join the entry.
    queues: Queues,
    /// The most votes one thread's entry holds.
    limit: usize,
}

impl std::fmt::Debug for Votes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Votes").finish_non_exhaustive()
    }
}

impl Votes {
    /// Votes applied through `store`, at most `limit` of them waiting per thread.
    pub fn new(store: Store, limit: NonZeroUsize) -> Self {
        Self { store, queues: Arc::default(), limit: limit.get() }
    }

    /// Sets `voter`'s vote on a thread; answers with the counts right after it.
    pub async fn vote(&self, thread_id: i64, voter: String, direction: Direction) -> Result<Tally, Status> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending { ballot: Ballot { voter, direction }, answer };
        let first = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            match queues.entry(thread_id) {
                Entry::Occupied(queue) if queue.get().len() >= self.limit => {
                    return Err(Status::resource_exhausted(format!(
                        "too many votes are waiting on thread {thread_id}; try again shortly"
                    )));
                }
                Entry::Occupied(mut queue) => {
                    queue.get_mut().push(pending);
                    false
                }
                Entry::Vacant(slot) => {
                    slot.insert(vec![pending]);
                    true
                }
            }
        };
        if first {
            // A task of its own: a caller that goes away must not strand the votes queued behind it.
            tokio::spawn(drain(self.store.clone(), self.queues.clone(), thread_id));
        }
        answered.await.unwrap_or_else(|_| Err(Status::internal("the vote was not applied")))
    }
}

/// Applies the votes queued for `thread_id`, batch after batch, until none is left.
async fn drain(store: Store, queues: Queues, thread_id: i64) {
    let mut guard = Worker { queues: queues.clone(), thread_id, batch: Vec::new(), done: false };
    loop {
        guard.batch = {
            let mut queues = queues.lock().unwrap_or_else(|p| p.into_inner());
            let Some(queue) = queues.get_mut(&thread_id) else { break };
            if queue.is_empty() {
                queues.remove(&thread_id);
                break;
            }
            let n = queue.len().min(MAX_VOTES_PER_TRANSACTION);
            queue.drain(..n).collect()
        };
        let ballots: Vec<Ballot> = guard.batch.iter().map(|p| p.ballot.clone()).collect();
        let outcome = store.vote(thread_id, ballots).await;
        let batch = std::mem::take(&mut guard.batch);
        match outcome {
            Ok(tallies) => {
                for (pending, tally) in batch.into_iter().zip(tallies) {
                    let _ = pending.answer.send(Ok(tally));
                }
            }
            Err(err) => {
                let status = Status::from(err);
                for pending in batch {
                    let _ = pending.answer.send(Err(status.clone()));
                }
            }
        }
    }
    guard.done = true;
}

/// Cleans up if a worker dies mid-way (a panic): its thread's queue is
/// removed and every vote it held is answered, so that none waits forever.
struct Worker {
    queues: Queues,
    thread_id: i64,
    batch: Vec<Pending>,
    done: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let stranded = self.queues.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.thread_id);
        for pending in self.batch.drain(..).chain(stranded.into_iter().flatten()) {
            let _ = pending.answer.send(Err(Status::internal("the vote was not applied")));
        }
    }
}
