//! The tracked authentications ([`Entry`], with the rare members out of
//! line in [`End`]), their index by `deferred_auth_id` ([`IdIndex`]), and the
//! timer queue: finding the next due timer and firing the due ones.

use std::cmp::Reverse;
use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::error::WaitError;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Event, Outcome, PollMachine};
use crate::secret::DeferredId;
use crate::time::UnixTime;

use super::*;

/// A tracked authentication. Small on purpose (a million of them fit in a
/// few hundred MB): the poll state is boxed (the map's spare slots then
/// cost little), and what only a finished or awaited authentication has is
/// out of line.
pub(super) struct Entry<T> {
    pub(super) auth: DeferredAuthentication,
    pub(super) machine: Box<PollMachine>,
    /// Only the heap item with this generation is live.
    pub(super) timer_gen: u32,
    /// Consecutive poll tasks of this authentication that panicked.
    pub(super) panics: u32,
    /// Why the last poll failed, while it is retried.
    pub(super) last_failure: Option<crate::proto::poll::RetryCause>,
    /// The outcome and the waiters, once there are any.
    pub(super) end: Option<Box<End<T>>>,
}

/// The rare members of an [`Entry`].
pub(super) struct End<T> {
    pub(super) outcome: Option<Outcome<T>>,
    /// Whether the outcome is stored, so that it may be handed over.
    pub(super) stored: bool,
    /// Whether the application acknowledged it.
    pub(super) acked: bool,
    pub(super) finished_at: Option<UnixTime>,
    pub(super) waiters: Vec<oneshot::Sender<Result<Outcome<T>, WaitError>>>,
}

impl<T> Entry<T> {
    pub(super) fn outcome(&self) -> Option<&Outcome<T>> {
        self.end.as_ref().and_then(|e| e.outcome.as_ref())
    }

    pub(super) fn stored(&self) -> bool {
        self.end.as_ref().is_some_and(|e| e.stored)
    }

    pub(super) fn finished_at(&self) -> Option<UnixTime> {
        self.end.as_ref().and_then(|e| e.finished_at)
    }

    pub(super) fn end_mut(&mut self) -> &mut End<T> {
        self.end.get_or_insert_with(|| {
            Box::new(End {
                outcome: None,
                stored: false,
                acked: false,
                finished_at: None,
                waiters: Vec::new(),
            })
        })
    }
}

/// The entries' keys by `deferred_auth_id`, without a copy of each id: a
/// keyed hash of the id (SipHash with random keys) to the entry, checked
/// against the entry's own id; the rare id whose hash is taken goes to a
/// second map.
pub(super) struct IdIndex {
    pub(super) by_hash: KeyMap<u64, u64>,
    pub(super) collided: HashMap<DeferredId, u64>,
    pub(super) hasher: std::collections::hash_map::RandomState,
    /// Tests: every id hashes alike, so that the collision path runs.
    #[cfg(test)]
    pub(super) all_collide: bool,
}

impl IdIndex {
    pub(super) fn new() -> Self {
        IdIndex {
            by_hash: KeyMap::default(),
            collided: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            #[cfg(test)]
            all_collide: false,
        }
    }

    pub(super) fn hash(&self, id: &DeferredId) -> u64 {
        use std::hash::BuildHasher;
        #[cfg(test)]
        if self.all_collide {
            return 7;
        }
        self.hasher.hash_one(id.secret())
    }

    pub(super) fn get<T>(&self, id: &DeferredId, entries: &KeyMap<u64, Entry<T>>) -> Option<u64> {
        if let Some(&key) = self.by_hash.get(&self.hash(id))
            && entries.get(&key).is_some_and(|e| e.auth.id() == id)
        {
            return Some(key);
        }
        if self.collided.is_empty() {
            return None;
        }
        self.collided.get(id).copied()
    }

    pub(super) fn insert(&mut self, id: &DeferredId, key: u64) {
        match self.by_hash.entry(self.hash(id)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(key);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(id.clone(), key);
            }
        }
    }

    pub(super) fn remove(&mut self, id: &DeferredId, key: u64) {
        let h = self.hash(id);
        if self.by_hash.get(&h) == Some(&key) {
            self.by_hash.remove(&h);
        } else {
            self.collided.remove(id);
        }
    }
}

impl<P: Poller> Engine<P> {
    /// The earliest live timer, unless the in-flight cap blocks new polls.
    pub(super) fn next_due(&mut self) -> Option<UnixTime> {
        if self.stopping.is_some() {
            return None;
        }
        while let Some(Reverse((t, key, generation))) = self.timers.peek().copied() {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.timer_gen == generation)
            {
                if self.in_flight.len() >= self.config.max_in_flight || self.writes_full() {
                    // Wait for a completion instead.
                    return None;
                }
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    pub(super) fn fire_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = self.clock.now();
        while let Some(Reverse((t, key, generation))) = self.timers.peek().copied() {
            if t > now || self.in_flight.len() >= self.config.max_in_flight || self.writes_full() {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.timer_gen != generation {
                continue;
            }
            if let Some(finished_at) = entry.finished_at() {
                if now >= finished_at.saturating_add(self.config.finished_retention) {
                    self.purge(key);
                }
                continue;
            }
            // The poll this timer sends (if any) was due at `t`.
            self.scheduled = Some(t);
            self.step(key, Event::Timer, now);
            self.scheduled = None;
        }
    }
}
