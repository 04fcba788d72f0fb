//! The poll engine's own cost, without IO: one poll cycle of the sans-IO
//! state machine (timer -> send -> `authorization_pending` -> next schedule),
//! and a transient failure with jittered backoff.
//!
//! Run: `cargo bench --bench poll_engine` (figures in BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oidc_dtr::UnixTime;
use oidc_dtr::error::{ErrorCode, OAuthError};
use oidc_dtr::poll::{Action, Event, PollConfig, PollMachine, PollResult};
use oidc_dtr::random::SystemRandom;

fn bench(c: &mut Criterion) {
    let t0 = UnixTime::from_secs(1_900_000_000);
    let rng = SystemRandom;
    let pending = || {
        let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
        e.description = Some("In review".into());
        PollResult::<()>::OAuth(e)
    };
    c.bench_function("poll_engine/pending_cycle", |b| {
        let mut m = PollMachine::with_start(
            t0,
            Some(UnixTime::MAX),
            Duration::from_secs(5),
            PollConfig::default(),
        );
        let mut now = t0;
        b.iter(|| {
            now = m.next_poll();
            let s = m.handle::<()>(Event::Timer, now, &rng);
            debug_assert_eq!(s.action, Action::SendPoll);
            black_box(m.handle(Event::Response(pending()), now, &rng));
        })
    });
    c.bench_function("poll_engine/transient_cycle", |b| {
        let mut m = PollMachine::with_start(
            t0,
            Some(UnixTime::MAX),
            Duration::from_secs(5),
            PollConfig::default(),
        );
        let mut now = t0;
        b.iter(|| {
            now = m.next_poll();
            m.handle::<()>(Event::Timer, now, &rng);
            black_box(m.handle::<()>(
                Event::Response(PollResult::Transient {
                    message: "connection failed".into(),
                    retry_after: None,
                    cause: None,
                }),
                now,
                &rng,
            ));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
