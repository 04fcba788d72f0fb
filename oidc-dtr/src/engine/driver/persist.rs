//! The store writes: the jobs the engine queues ([`PersistJob`]) and the
//! task that runs them in order.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::engine::stats::Counters;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Outcome, PollMachine};
use crate::time::UnixTime;

use super::*;

/// A write for the persistence task, in order.
pub(super) enum PersistJob<T> {
    Purge(UnixTime),
    State(DeferredAuthentication, PollMachine),
    Outcome(
        u64,
        DeferredAuthentication,
        PollMachine,
        Outcome<T>,
        UnixTime,
    ),
}

/// Runs the writes: poll states (best effort) and outcomes (durably),
/// reporting each stored outcome back to the engine. Up to `limit` run at
/// once, so that a store can group them into one transaction; writes of one
/// authentication never overlap in practice (its next state comes a poll
/// interval later; a stale state update after its outcome is refused by the
/// store and ignored).
pub(super) async fn persist_task<P: Poller>(
    poller: Weak<P>,
    mut jobs: mpsc::UnboundedReceiver<PersistJob<P::Tokens>>,
    stored: mpsc::UnboundedSender<u64>,
    counters: Arc<Counters>,
    room: Arc<tokio::sync::Notify>,
    limit: usize,
) {
    /// What a finished write was.
    enum Written {
        State,
        Purge,
        Outcome(u64),
    }
    let mut running: JoinSet<Written> = JoinSet::new();
    // The outcome writes running, by task, so that one that panicked is
    // still handed over.
    let mut outcome_tasks: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut open = true;
    loop {
        tokio::select! {
            job = jobs.recv(), if open && running.len() < limit => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                let Some(p) = poller.upgrade() else { break };
                match job {
                    PersistJob::State(auth, machine) => {
                        // A store that answers at once (`MemoryStore`) is
                        // not given a task of its own: the write is polled
                        // once here, and spawned only if it has to wait.
                        let mut write = p.persist_state(auth, machine);
                        match poll_once(&mut write) {
                            Some(Ok(())) => {
                                counters.store_dequeued();
                                room.notify_one();
                            }
                            Some(Err(_)) => {
                                // It panicked: counted as done, as a spawned
                                // write that panicked is.
                                counters.store_dequeued();
                                room.notify_one();
                            }
                            None => {
                                running.spawn(async move {
                                    write.await;
                                    Written::State
                                });
                            }
                        }
                    }
                    PersistJob::Purge(before) => {
                        running.spawn(async move {
                            p.purge_stored(before).await;
                            Written::Purge
                        });
                    }
                    PersistJob::Outcome(key, auth, machine, outcome, at) => {
                        let task = running.spawn(async move {
                            if p.persist_outcome(auth, machine, outcome, at).await {
                                Written::Outcome(key)
                            } else {
                                // Another fleet instance carries it on.
                                Written::State
                            }
                        });
                        outcome_tasks.insert(task.id(), key);
                    }
                }
            }
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let finished = match done {
                    Ok((task, written)) => {
                        outcome_tasks.remove(&task);
                        written
                    }
                    // A write that panicked: an outcome is handed over all
                    // the same (as when its store gives up).
                    Err(e) => match outcome_tasks.remove(&e.id()) {
                        Some(key) => Written::Outcome(key),
                        None => Written::State,
                    },
                };
                match finished {
                    // A purge is not counted as a queued write.
                    Written::Purge => {}
                    Written::State => counters.store_dequeued(),
                    Written::Outcome(key) => {
                        counters.store_dequeued();
                        let _ = stored.send(key);
                    }
                }
                room.notify_one();
            }
            else => break,
        }
    }
}

/// Polls a future once without a waker that does anything: `Some` if it
/// finished at once (`Err` if it panicked), `None` if it must wait (it may
/// then be polled on, with a real waker, elsewhere).
pub(super) fn poll_once<T>(f: &mut BoxFuture<T>) -> Option<std::thread::Result<T>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(&mut cx))) {
        Ok(std::task::Poll::Ready(v)) => Some(Ok(v)),
        Ok(std::task::Poll::Pending) => None,
        Err(panic) => Some(Err(panic)),
    }
}
