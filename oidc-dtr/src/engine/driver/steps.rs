//! Feeding events and answers to the machines, and what follows: the
//! next timer, the events broadcast, the state writes and the delivery of
//! outcomes to their waiters.

use std::cmp::Reverse;

use tokio::sync::broadcast;

use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Action, Event, Outcome, PollFailure, PollMachine, PollResult, Step};
use crate::time::UnixTime;

use super::*;

impl<P: Poller> Engine<P> {
    /// A poll task panicked: the request may have reached the OP, so its
    /// fate is unknown. The machine hears of it as a transient failure
    /// (retried at the floor plus backoff); a poll that keeps panicking ends
    /// the authentication instead of looping until the deadline. The panic
    /// message is not repeated (it could hold anything).
    pub(super) fn poll_panicked(&mut self, key: u64, panicked: bool) {
        if self.orphans.contains_key(&key) {
            self.orphan_answered(key, None);
            return;
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.panics = entry.panics.saturating_add(1);
        let what = if panicked { "panicked" } else { "was aborted" };
        tracing::error!(
            deferred_auth_id = %entry.auth.id().fingerprint(),
            consecutive = entry.panics,
            "the poll task {what} (a bug); its fate at the OP is unknown"
        );
        let message = format!("the poll task {what}");
        let result = if entry.panics >= MAX_CONSECUTIVE_PANICS {
            PollResult::Permanent(PollFailure::Other {
                message: format!("{message} {MAX_CONSECUTIVE_PANICS} times in a row"),
                cause: None,
            })
        } else {
            PollResult::Transient {
                message,
                retry_after: None,
                cause: None,
            }
        };
        let now = self.clock.now();
        self.step(key, Event::Response(result), now);
    }

    pub(super) fn completed(&mut self, key: u64, result: PollResult<P::Tokens>) {
        if self.orphans.contains_key(&key) {
            self.orphan_answered(key, Some(result));
            return;
        }
        let now = self.clock.now();
        if matches!(&result, PollResult::OAuth(e) if e.code == crate::error::ErrorCode::SlowDown) {
            self.counters.slow_down();
        }
        if let (Some(e), PollResult::Transient { message, .. }) = (self.entries.get(&key), &result)
        {
            // A poll is not idempotent: the request may have reached the OP. If it answered with
            // tokens, they are gone: the id is dead after redemption.
            tracing::warn!(
                deferred_auth_id = %e.auth.id().fingerprint(),
                error = %message,
                "poll failed in transit; will retry (a success lost in transit cannot be recovered)"
            );
        }
        self.step(key, Event::Response(result), now);
    }

    pub(super) fn insert(&mut self, auth: DeferredAuthentication, machine: PollMachine) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.keys.insert(auth.id(), key);
        self.counters.tracked();
        self.entries.insert(
            key,
            Entry {
                auth,
                machine: Box::new(machine),
                timer_gen: 0,
                panics: 0,
                last_failure: None,
                end: None,
            },
        );
        key
    }

    /// The persistence task stored `key`'s outcome: hand it over.
    pub(super) fn stored(&mut self, key: u64) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(outcome) = entry.outcome().cloned() else {
            return;
        };
        if !entry.stored() {
            self.counters.outcome_stored();
        }
        let end = entry.end_mut();
        end.stored = true;
        for w in end.waiters.drain(..) {
            let _ = w.send(Ok(outcome.clone()));
        }
        let _ = self.events.send(PollEvent::Finished {
            id: entry.auth.id().clone(),
            outcome_id: OutcomeId::of(entry.auth.id()),
            outcome,
        });
    }

    /// Says (log and event) that an entry holds tokens awaiting validation.
    pub(super) fn announce_held(
        events: &broadcast::Sender<PollEvent<P::Tokens>>,
        entry: &Entry<P::Tokens>,
    ) {
        let reason = entry.machine.last_error().unwrap_or_default().to_owned();
        tracing::warn!(
            deferred_auth_id = %entry.auth.id().fingerprint(),
            error = %reason,
            "tokens received but not validated yet (the JWK Set is unreachable); they are kept and validated when it is back"
        );
        if events.receiver_count() > 0 {
            let _ = events.send(PollEvent::TokensHeld {
                id: entry.auth.id().clone(),
                reason,
            });
        }
    }

    pub(super) fn step(&mut self, key: u64, event: Event<P::Tokens>, now: UnixTime) {
        let answered = matches!(event, Event::Response(_));
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let was_held = entry.machine.held_tokens().is_some();
        let Step {
            action,
            progress,
            interaction,
            interaction_refused,
            retry,
            ..
        } = entry.machine.handle(event, now, self.rng.as_ref());
        if answered {
            // Set by a retried failure, cleared by any other answer.
            entry.last_failure = retry.map(|r| r.cause);
        }
        let listened = self.events.receiver_count() > 0;
        if let Some(description) = progress.filter(|_| listened) {
            let _ = self.events.send(PollEvent::Progress {
                id: entry.auth.id().clone(),
                description,
            });
        }
        if let Some(change) = interaction.filter(|_| listened) {
            let uri = match change {
                crate::proto::poll::InteractionChange::Required(u) => Some(u),
                _ => None,
            };
            let _ = self.events.send(PollEvent::Interaction {
                id: entry.auth.id().clone(),
                uri,
            });
        }
        if let Some(reason) = interaction_refused.filter(|_| listened) {
            let _ = self.events.send(PollEvent::InteractionRefused {
                id: entry.auth.id().clone(),
                reason,
            });
        }
        if let Some(r) = retry.filter(|_| listened) {
            let _ = self.events.send(PollEvent::Retrying {
                id: entry.auth.id().clone(),
                cause: r.cause,
                next_attempt: r.next_attempt,
            });
        }
        if !was_held && entry.machine.held_tokens().is_some() {
            Self::announce_held(&self.events, entry);
        }
        match action {
            Action::SendPoll => {
                let Some(poller) = self.poller.upgrade() else {
                    return;
                };
                if !poller.may_poll(entry.auth.id()) {
                    tracing::debug!(deferred_auth_id = %entry.auth.id().fingerprint(), "lease not held: handing over");
                    self.forget(key);
                    return;
                }
                if let Some(held) = entry.machine.held_tokens().cloned() {
                    // Tokens in hand: validated again, nothing sent to the
                    // OP.
                    let auth = entry.auth.clone();
                    tracing::debug!(deferred_auth_id = %auth.id().fingerprint(), "validating held tokens again");
                    let task = self
                        .in_flight
                        .spawn(async move { (key, poller.validate_held(auth, held).await) });
                    self.task_keys.insert(task.id(), key);
                    self.counters.in_flight(self.in_flight.len());
                    return;
                }
                let auth = entry.auth.clone();
                tracing::debug!(
                    deferred_auth_id = %auth.id().fingerprint(),
                    poll = entry.machine.polls(),
                    floor_secs = entry.machine.floor().as_secs(),
                    "polling"
                );
                let task = self
                    .in_flight
                    .spawn(async move { (key, poller.poll(auth).await) });
                self.task_keys.insert(task.id(), key);
                self.counters.in_flight(self.in_flight.len());
                let lateness = self
                    .scheduled
                    .take()
                    .map(|due| now.saturating_duration_since(due))
                    .unwrap_or_default();
                self.counters.poll_sent(lateness);
            }
            Action::SleepUntil(t) => {
                entry.timer_gen = entry.timer_gen.wrapping_add(1);
                self.timers.push(Reverse((t, key, entry.timer_gen)));
                if answered {
                    self.counters.store_queued();
                    let _ = self.persist.send(PersistJob::State(
                        entry.auth.clone(),
                        PollMachine::clone(&entry.machine),
                    ));
                }
            }
            Action::AwaitResponse | Action::Finished => {}
            Action::Deliver(outcome) => self.deliver(key, outcome, now),
        }
    }

    /// An authentication ended: its outcome goes to the store, and is
    /// handed over once stored.
    pub(super) fn deliver(&mut self, key: u64, outcome: Outcome<P::Tokens>, now: UnixTime) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        tracing::info!(
            deferred_auth_id = %entry.auth.id().fingerprint(),
            outcome = outcome.kind(),
            polls = entry.machine.polls(),
            "deferred authentication finished"
        );
        self.counters.finished(outcome.kind(), false);
        // Stored first, handed over second: waiters and subscribers hear of
        // it when the persistence task says so.
        self.counters.store_queued();
        let _ = self.persist.send(PersistJob::Outcome(
            key,
            entry.auth.clone(),
            PollMachine::clone(&entry.machine),
            outcome.clone(),
            now,
        ));
        let end = entry.end_mut();
        end.outcome = Some(outcome);
        end.finished_at = Some(now);
        entry.timer_gen = entry.timer_gen.wrapping_add(1);
        let purge_at = now.saturating_add(self.config.finished_retention);
        self.timers.push(Reverse((purge_at, key, entry.timer_gen)));
    }
}
