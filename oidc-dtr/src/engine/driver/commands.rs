//! What the driver task does for each request of the handle (track,
//! restore, ping, wake, cancel, wait, status, forget, shutdown ...).

use std::cmp::Reverse;

use crate::error::WaitError;
use crate::ping::PingVerdict;
use crate::proto::poll::{Action, Event, PollMachine, PollResult};
use crate::secret::{DeferredId, SecretHash};

use super::*;

impl<P: Poller> Engine<P> {
    pub(super) fn command(&mut self, cmd: Command<P::Tokens>) {
        let now = self.clock.now();
        match cmd {
            Command::Track(auth, mut machine, reply) => {
                if self.keys.get(auth.id(), &self.entries).is_some() {
                    let _ = reply.send(false);
                    return;
                }
                if let Some(o) = self.orphans.values_mut().find(|o| o.auth.id() == auth.id()) {
                    // Its poll of a lost lease is in flight: taken on after
                    // the answer (one poll of an id in flight at a time).
                    machine.recover_after_restart(now, self.rng.as_ref());
                    o.reclaimed = Some((auth, machine));
                    let _ = reply.send(true);
                    return;
                }
                machine.recover_after_restart(now, self.rng.as_ref());
                let key = self.insert(*auth, *machine);
                let _ = reply.send(true);
                if let Some(e) = self
                    .entries
                    .get(&key)
                    .filter(|e| e.machine.held_tokens().is_some())
                {
                    Self::announce_held(&self.events, e);
                }
                self.step(key, Event::Timer, now);
            }
            Command::Restore(auth, mut machine, outcome, reply) => {
                if self.keys.get(auth.id(), &self.entries).is_some() {
                    let _ = reply.send(false);
                    return;
                }
                if outcome.is_none()
                    && let Some(o) = self.orphans.values_mut().find(|o| o.auth.id() == auth.id())
                {
                    // Claimed again while the poll of the lost lease is in
                    // flight: taken on after its answer.
                    o.reclaimed = Some((auth, machine));
                    let _ = reply.send(true);
                    return;
                }
                let _ = reply.send(true);
                match outcome {
                    Some((outcome, finished_at)) => {
                        let key = self.insert(*auth, *machine);
                        self.counters.finished(outcome.kind(), true);
                        if let Some(e) = self.entries.get_mut(&key) {
                            let end = e.end_mut();
                            end.outcome = Some(outcome);
                            end.stored = true;
                            end.finished_at = Some(finished_at);
                            e.timer_gen = e.timer_gen.wrapping_add(1);
                            let purge_at =
                                finished_at.saturating_add(self.config.finished_retention);
                            self.timers.push(Reverse((purge_at, key, e.timer_gen)));
                        }
                    }
                    None => {
                        machine.resume_after_restart(now, self.rng.as_ref());
                        let key = self.insert(*auth, *machine);
                        if let Some(e) = self
                            .entries
                            .get(&key)
                            .filter(|e| e.machine.held_tokens().is_some())
                        {
                            Self::announce_held(&self.events, e);
                        }
                        self.step(key, Event::Timer, now);
                    }
                }
            }
            Command::Ack(id, reply) => {
                let e = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get_mut(&k));
                let ok = match e {
                    Some(e) if e.outcome().is_some() => {
                        e.end_mut().acked = true;
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(ok);
            }
            Command::Undelivered(reply) => {
                let list = self
                    .entries
                    .values()
                    .filter(|e| e.end.as_ref().is_some_and(|end| end.stored && !end.acked))
                    .filter_map(|e| {
                        Some(Delivery {
                            id: e.auth.id().clone(),
                            outcome_id: OutcomeId::of(e.auth.id()),
                            outcome: e.outcome()?.clone(),
                        })
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Ping(id, token, reply) => {
                let entry = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get(&k).map(|e| (k, e)));
                let stored = entry.and_then(|(_, e)| e.auth.notification_token_hash());
                // One hash and one constant-time comparison whatever the case,
                // so timing does not tell unknown ids from wrong tokens.
                let matches = match stored {
                    Some(h) => h.matches(&token),
                    None => {
                        let _ = dummy_hash().matches(&token);
                        false
                    }
                };
                let verdict = match entry {
                    Some((key, e)) if matches => {
                        if e.outcome().is_some() {
                            PingVerdict::AlreadyFinished
                        } else {
                            tracing::debug!(deferred_auth_id = %id.fingerprint(), "authenticated ping");
                            self.step(key, Event::Wake, now);
                            PingVerdict::Woken
                        }
                    }
                    _ => PingVerdict::Rejected,
                };
                self.counters.ping(verdict != PingVerdict::Rejected);
                let _ = reply.send(verdict);
            }
            Command::Wake(id, reply) => {
                let key = self.active_key(&id);
                let _ = reply.send(key.is_some());
                if let Some(key) = key {
                    tracing::debug!(deferred_auth_id = %id.fingerprint(), "woken by a ping");
                    self.step(key, Event::Wake, now);
                }
            }
            Command::Cancel(id, reply) => {
                let key = self.active_key(&id);
                let _ = reply.send(key.is_some());
                if let Some(key) = key {
                    self.step(key, Event::Cancel, now);
                }
            }
            Command::Wait(id, reply) => {
                match self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get_mut(&k))
                {
                    None => {
                        let _ = reply.send(Err(WaitError::Unknown));
                    }
                    Some(e) => match e.outcome() {
                        Some(o) if e.stored() => {
                            let _ = reply.send(Ok(o.clone()));
                        }
                        _ => {
                            let end = e.end_mut();
                            end.waiters.retain(|w| !w.is_closed());
                            end.waiters.push(reply);
                        }
                    },
                }
            }
            Command::Status(id, reply) => {
                let status = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get(&k))
                    .map(|e| {
                        let m = &e.machine;
                        PollStatus {
                            floor: m.floor(),
                            next_poll: m.wake_at(),
                            deadline: m.deadline(),
                            polls: m.polls(),
                            slow_downs: m.slow_downs(),
                            in_flight: m.in_flight(),
                            finished: m.is_finished(),
                            interaction_uri: m.interaction_uri().cloned(),
                            tokens_held: m.held_tokens().is_some(),
                            last_failure: e.last_failure,
                        }
                    });
                let _ = reply.send(status);
            }
            Command::Get(id, reply) => {
                let found = self
                    .keys
                    .get(&id, &self.entries)
                    .and_then(|k| self.entries.get(&k))
                    .map(|e| Tracked {
                        auth: e.auth.clone(),
                        machine: PollMachine::clone(&e.machine),
                        finished: e.outcome().is_some(),
                    });
                let _ = reply.send(found);
            }
            Command::Forget(id) => {
                if let Some(key) = self.keys.get(&id, &self.entries) {
                    self.forget(key);
                }
            }
            Command::Shutdown(reply) => {
                self.stopping.get_or_insert_with(Vec::new).push(reply);
            }
            Command::Idle(reply) => {
                // Run anything due first, so that the answer is about the
                // state after this instant's work has started.
                self.fire_due();
                let due = self.timers.iter().any(|Reverse((t, key, generation))| {
                    *t <= now
                        && self
                            .entries
                            .get(key)
                            .is_some_and(|e| e.timer_gen == *generation && e.outcome().is_none())
                });
                let storing = self
                    .entries
                    .values()
                    .any(|e| e.outcome().is_some() && !e.stored());
                let _ = reply.send(self.in_flight.is_empty() && !due && !storing);
            }
        }
    }

    /// Drops an entry without delivering anything (fleet hand-over). One
    /// with a poll in flight becomes an [`Orphan`] until the answer comes.
    pub(super) fn forget(&mut self, key: u64) {
        if let Some(e) = self.entries.remove(&key) {
            self.keys.remove(e.auth.id(), key);
            if e.outcome().is_none() {
                self.counters.untracked();
                if self.task_keys.values().any(|k| *k == key) {
                    tracing::debug!(deferred_auth_id = %e.auth.id().fingerprint(), "lease lost with a poll in flight: its answer is still handled");
                    self.orphans.insert(
                        key,
                        Orphan {
                            auth: e.auth,
                            machine: e.machine,
                            reclaimed: None,
                        },
                    );
                }
            }
        }
    }

    /// The answer to the poll of an [`Orphan`]: stored and handed over if
    /// it redeemed the id, else dropped; then a claim that came meanwhile
    /// is taken on.
    pub(super) fn orphan_answered(&mut self, key: u64, result: Option<PollResult<P::Tokens>>) {
        let Some(mut orphan) = self.orphans.remove(&key) else {
            return;
        };
        let now = self.clock.now();
        let outcome = result.and_then(|result| {
            match orphan
                .machine
                .handle(Event::Response(result), now, self.rng.as_ref())
                .action
            {
                Action::Deliver(o) if redeemed_the_id(&o) => Some(o),
                _ => None,
            }
        });
        match outcome {
            Some(outcome) => {
                tracing::info!(deferred_auth_id = %orphan.auth.id().fingerprint(), outcome = outcome.kind(), "the lease was lost while the poll was in flight; its answer redeemed the id: storing it");
                let id = orphan.auth.id().clone();
                if self.keys.get(&id, &self.entries).is_some() {
                    // Tracked again meanwhile: cannot happen (a track or
                    // claim of an orphan waits for its answer).
                    tracing::error!(deferred_auth_id = %id.fingerprint(), "the answer of a poll whose lease was lost came for an authentication tracked again (a bug)");
                    return;
                }
                let key = self.insert(orphan.auth, *orphan.machine);
                self.deliver(key, outcome, now);
            }
            None => {
                tracing::debug!(deferred_auth_id = %orphan.auth.id().fingerprint(), "the lease was lost while the poll was in flight; its answer is left to the new owner");
                if let Some((auth, mut machine)) = orphan.reclaimed.take()
                    && self.stopping.is_none()
                {
                    machine.resume_after_restart(now, self.rng.as_ref());
                    let key = self.insert(*auth, *machine);
                    self.step(key, Event::Timer, now);
                }
            }
        }
    }

    pub(super) fn active_key(&self, id: &DeferredId) -> Option<u64> {
        let key = self.keys.get(id, &self.entries)?;
        self.entries
            .get(&key)
            .filter(|e| e.outcome().is_none())
            .map(|_| key)
    }
}

/// The hash compared against when a ping names an unknown id.
pub(super) fn dummy_hash() -> &'static SecretHash {
    static DUMMY: std::sync::OnceLock<SecretHash> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| SecretHash::of(b"oidc-dtr: no notification token is bound to this id"))
}
