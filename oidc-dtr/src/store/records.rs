//! The layout of a stored [`Record`], version 1, as explicit types.
//!
//! A record's serialised form is what outlives the process: it must read
//! back after an upgrade even when the poll machine's fields have changed.
//! So the stores never serialise `PollMachine` itself; they go through
//! these types, whose member names and meanings are fixed for
//! [`SCHEMA_VERSION`] 1. A release that changes them adds `RecordV2` and a
//! migration; `tests::a_record_written_by_version_1_reads_back` holds a
//! record as this version wrote it.

// The durable stores use the sealed forms; with neither built, only the
// plain layout is used.
#![cfg_attr(
    not(any(feature = "file-store", feature = "postgres")),
    allow(dead_code)
)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Record, SCHEMA_VERSION, StoreError, StoredOutcome, key_fingerprint, record_key};
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{PollConfig, PollMachine, PollSnapshot};
use crate::proto::token::HeldTokens;
use crate::time::UnixTime;

/// A record as written: version 1.
#[derive(Serialize, Deserialize)]
pub(crate) struct RecordV1 {
    schema: u32,
    auth: DeferredAuthentication,
    machine: MachineV1,
    outcome: Option<StoredOutcome>,
}

/// The poll state, version 1. Times are milliseconds since the Unix epoch.
#[derive(Serialize, Deserialize)]
struct MachineV1 {
    deadline_ms: u64,
    deadline_from_op: bool,
    floor_secs: u64,
    /// When the last answer arrived (the floor counts from it).
    last_request_ms: u64,
    not_before_ms: u64,
    backoff_step: u32,
    next_poll_ms: u64,
    next_is_final: bool,
    final_poll_sent: bool,
    dpop_retry_used: bool,
    woken: bool,
    /// A ping arrived and no well-formed answer has come since (added
    /// within version 1: absent in older records, read as `false`).
    #[serde(default)]
    wake_unserved: bool,
    /// The last request's fate is unknown (a lost answer): a later
    /// `invalid_grant` may mean lost tokens (added within version 1).
    #[serde(default)]
    fate_unknown: bool,
    cancel_requested: bool,
    phase: PhaseV1,
    polls: u32,
    slow_downs: u32,
    last_error: Option<String>,
    last_progress: Option<String>,
    /// The `interaction_uri` the AS waits at (IETF profile; added within
    /// version 1: absent in older records and when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interaction_uri: Option<crate::proto::ietf::InteractionUri>,
    config: ConfigV1,
    /// Tokens in hand whose ID token could not be validated yet (the JWK
    /// Set was unreachable), sealed with the rest of the record (added
    /// within version 1: absent in older records and when there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held_tokens: Option<HeldV1>,
}

/// Held tokens, version 1: the token response's JSON body as received, and
/// when (milliseconds since the Unix epoch).
#[derive(Serialize, Deserialize)]
struct HeldV1 {
    token_response: String,
    received_at_ms: u64,
}

impl Drop for HeldV1 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token_response);
    }
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum PhaseV1 {
    Waiting,
    InFlight,
    Finished,
}

/// The schedule's tuning, version 1 (milliseconds). Members a later
/// `PollConfig` adds take their defaults when an older record is read.
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    backoff_base_ms: u64,
    backoff_cap_ms: u64,
    final_poll_margin_ms: u64,
    max_lifetime_ms: u64,
    notified_cadence_ms: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&PollMachine> for MachineV1 {
    fn from(machine: &PollMachine) -> Self {
        let m = machine.to_snapshot();
        let c = &m.config;
        MachineV1 {
            deadline_ms: m.deadline.as_millis(),
            deadline_from_op: m.deadline_from_op,
            floor_secs: m.floor_secs,
            last_request_ms: m.last_request.as_millis(),
            not_before_ms: m.not_before.as_millis(),
            backoff_step: m.backoff_step,
            next_poll_ms: m.next_poll.as_millis(),
            next_is_final: m.next_is_final,
            final_poll_sent: m.final_poll_sent,
            dpop_retry_used: m.dpop_retry_used,
            woken: m.woken,
            wake_unserved: m.wake_unserved,
            fate_unknown: m.fate_unknown,
            cancel_requested: m.cancel_requested,
            phase: match m.phase {
                0 => PhaseV1::Waiting,
                1 => PhaseV1::InFlight,
                _ => PhaseV1::Finished,
            },
            polls: m.polls,
            slow_downs: m.slow_downs,
            config: ConfigV1 {
                backoff_base_ms: ms(c.backoff_base),
                backoff_cap_ms: ms(c.backoff_cap),
                final_poll_margin_ms: ms(c.final_poll_margin),
                max_lifetime_ms: ms(c.max_lifetime),
                notified_cadence_ms: c.notified_cadence.map(ms),
            },
            last_error: m.last_error,
            last_progress: m.last_progress,
            interaction_uri: m.interaction_uri,
            held_tokens: m.held.as_ref().map(|h| HeldV1 {
                token_response: h.body().to_owned(),
                received_at_ms: h.received_at().as_millis(),
            }),
        }
    }
}

impl MachineV1 {
    fn into_machine(self) -> Result<PollMachine, String> {
        let m = self;
        let mut config = PollConfig::default();
        config.backoff_base = Duration::from_millis(m.config.backoff_base_ms);
        config.backoff_cap = Duration::from_millis(m.config.backoff_cap_ms);
        config.final_poll_margin = Duration::from_millis(m.config.final_poll_margin_ms);
        config.max_lifetime = Duration::from_millis(m.config.max_lifetime_ms);
        config.notified_cadence = m.config.notified_cadence_ms.map(Duration::from_millis);
        PollMachine::from_snapshot(PollSnapshot {
            deadline: UnixTime::from_millis(m.deadline_ms),
            deadline_from_op: m.deadline_from_op,
            floor_secs: m.floor_secs,
            last_request: UnixTime::from_millis(m.last_request_ms),
            not_before: UnixTime::from_millis(m.not_before_ms),
            backoff_step: m.backoff_step,
            next_poll: UnixTime::from_millis(m.next_poll_ms),
            next_is_final: m.next_is_final,
            final_poll_sent: m.final_poll_sent,
            dpop_retry_used: m.dpop_retry_used,
            woken: m.woken,
            wake_unserved: m.wake_unserved,
            fate_unknown: m.fate_unknown,
            cancel_requested: m.cancel_requested,
            phase: match m.phase {
                PhaseV1::Waiting => 0,
                PhaseV1::InFlight => 1,
                PhaseV1::Finished => 2,
            },
            polls: m.polls,
            slow_downs: m.slow_downs,
            last_error: m.last_error,
            last_progress: m.last_progress,
            interaction_uri: m.interaction_uri,
            config,
            held: match m.held_tokens {
                Some(h) => Some(
                    HeldTokens::new(
                        h.token_response.as_bytes(),
                        UnixTime::from_millis(h.received_at_ms),
                    )
                    .ok_or_else(|| "held tokens that are not text".to_owned())?,
                ),
                None => None,
            },
        })
        .ok_or_else(|| "unknown poll phase".to_owned())
    }
}

impl From<Record> for RecordV1 {
    fn from(r: Record) -> Self {
        RecordV1 {
            schema: r.schema,
            machine: MachineV1::from(&r.machine),
            auth: r.auth,
            outcome: r.outcome,
        }
    }
}

impl TryFrom<RecordV1> for Record {
    type Error = String;

    fn try_from(r: RecordV1) -> Result<Self, String> {
        let machine = r.machine.into_machine()?;
        if r.schema != SCHEMA_VERSION {
            // Kept as read: the stores refuse it with `UnsupportedSchema`.
        }
        Ok(Record {
            schema: r.schema,
            auth: r.auth,
            machine,
            outcome: r.outcome,
        })
    }
}

/// Serialises a record and seals it (when the store has a sealer), bound
/// to its storage key: what every persistent store writes.
pub(crate) fn seal_record(
    sealer: Option<&dyn super::Sealer>,
    key: &[u8; 32],
    record: &Record,
) -> Result<Vec<u8>, StoreError> {
    let json = Zeroizing::new(serde_json::to_vec(record).map_err(|_| {
        StoreError::Other(format!(
            "record {:?} could not be serialised",
            record.fingerprint()
        ))
    })?);
    match sealer {
        Some(s) => s.seal(&json, key),
        None => Ok(json.to_vec()),
    }
}

/// Opens and decodes what [`seal_record`] wrote under `key`: the schema is
/// read first (a record of another layout is `UnsupportedSchema`, not
/// "undecodable"), the record must belong to the key it was stored under,
/// and, once the store is bound (`owner`), to the store's issuer and
/// client (the body names them; sealed, they are authentic). Errors name
/// the record by fingerprint only.
pub(crate) fn open_record(
    sealer: Option<&dyn super::Sealer>,
    key: &[u8; 32],
    bytes: &[u8],
    owner: Option<(&str, &str)>,
) -> Result<Record, StoreError> {
    let fp = key_fingerprint(key);
    let plain = Zeroizing::new(match sealer {
        Some(s) => s.open(bytes, key).map_err(|e| match e {
            StoreError::Sealing(m) => StoreError::Sealing(format!("record {fp:?}: {m}")),
            other => other,
        })?,
        None => bytes.to_vec(),
    });
    #[derive(Deserialize)]
    struct SchemaProbe {
        schema: u32,
    }
    let probe: SchemaProbe = serde_json::from_slice(&plain)
        .map_err(|e| StoreError::corrupt(Some(fp), json_problem(&e)))?;
    if probe.schema != SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found: probe.schema,
            supported: SCHEMA_VERSION,
            record: Some(fp),
        });
    }
    let record: Record = serde_json::from_slice(&plain)
        .map_err(|e| StoreError::corrupt(Some(fp), json_problem(&e)))?;
    if record_key(record.id()) != *key {
        return Err(StoreError::corrupt(
            Some(fp),
            "the record is stored under another id's key",
        ));
    }
    super::check_record_owner(owner, &record)?;
    Ok(record)
}

/// What a poll state is sealed to: its record's key and a label, so that
/// a state cannot pass for a record (or another record's state).
#[cfg(feature = "file-store")]
fn state_aad(key: &[u8; 32]) -> [u8; 38] {
    let mut aad = [0u8; 38];
    aad[..32].copy_from_slice(key);
    aad[32..].copy_from_slice(b"/state");
    aad
}

/// Serialises a poll state alone (the [`MachineV1`] layout) and seals it,
/// bound to its record's key: what a store writes at a state update, a
/// fraction of the whole record.
#[cfg(feature = "file-store")]
pub(crate) fn seal_machine(
    sealer: Option<&dyn super::Sealer>,
    key: &[u8; 32],
    machine: &PollMachine,
) -> Result<Vec<u8>, StoreError> {
    let json = Zeroizing::new(serde_json::to_vec(&MachineV1::from(machine)).map_err(|_| {
        StoreError::Other(format!(
            "the poll state of {:?} could not be serialised",
            key_fingerprint(key)
        ))
    })?);
    match sealer {
        Some(s) => s.seal(&json, &state_aad(key)),
        None => Ok(json.to_vec()),
    }
}

/// Opens and decodes what [`seal_machine`] wrote for `key`.
#[cfg(feature = "file-store")]
pub(crate) fn open_machine(
    sealer: Option<&dyn super::Sealer>,
    key: &[u8; 32],
    bytes: &[u8],
) -> Result<PollMachine, StoreError> {
    let fp = key_fingerprint(key);
    let plain = Zeroizing::new(match sealer {
        Some(s) => s.open(bytes, &state_aad(key)).map_err(|e| match e {
            StoreError::Sealing(m) => StoreError::Sealing(format!("record {fp:?}: {m}")),
            other => other,
        })?,
        None => bytes.to_vec(),
    });
    let m: MachineV1 = serde_json::from_slice(&plain)
        .map_err(|e| StoreError::corrupt(Some(fp), json_problem(&e)))?;
    m.into_machine()
        .map_err(|e| StoreError::corrupt(Some(fp), format!("the poll state: {e}")))
}

/// A JSON decoding failure, described without quoting the input (serde's
/// messages may contain the values they choked on).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not valid JSON",
        Category::Data => "not a record of this layout",
        Category::Eof => "truncated",
    };
    format!("{kind} (at line {}, column {})", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_records::record;

    /// A record exactly as version 1 writes it. If this stops reading back,
    /// the on-disk layout changed: add a new version and a migration
    /// instead of editing this text.
    const WRITTEN_BY_V1: &str = r#"{
        "schema": 1,
        "auth": AUTH,
        "machine": {
            "deadline_ms": 1800003600000, "deadline_from_op": true, "floor_secs": 5,
            "last_request_ms": 1800000000000, "not_before_ms": 1800000000000,
            "backoff_step": 0, "next_poll_ms": 1800000005000, "next_is_final": false,
            "final_poll_sent": false, "dpop_retry_used": false, "woken": false,
            "cancel_requested": false, "phase": "waiting", "polls": 0, "slow_downs": 0,
            "last_error": null, "last_progress": null,
            "config": {"backoff_base_ms": 1000, "backoff_cap_ms": 300000,
                       "final_poll_margin_ms": 2000, "max_lifetime_ms": 2592000000,
                       "notified_cadence_ms": null}
        },
        "outcome": null
    }"#;

    #[test]
    fn a_record_written_by_version_1_reads_back() {
        let fresh = record("v1", 0);
        let auth = serde_json::to_string(&fresh.auth).unwrap();
        let text = WRITTEN_BY_V1.replace("AUTH", &auth);
        let read: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(read.schema, 1);
        assert_eq!(
            read.machine.deadline(),
            UnixTime::from_millis(1_800_003_600_000)
        );
        assert_eq!(read.machine.floor(), Duration::from_secs(5));
        assert_eq!(
            read.machine.next_poll(),
            UnixTime::from_millis(1_800_000_005_000)
        );
        assert!(!read.machine.in_flight() && !read.machine.is_finished());
        // And what this version writes reads back equal.
        let again: Record = serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
        assert_eq!(again, read);
    }

    #[test]
    fn held_tokens_are_written_and_read_back_and_absent_when_none() {
        use crate::proto::poll::{Action, Event, PollResult};
        use crate::random::SystemRandom;
        let fresh = record("held", 0);
        assert!(fresh.machine.held_tokens().is_none());
        let text = serde_json::to_value(&fresh).unwrap();
        assert!(text["machine"].get("held_tokens").is_none());
        let mut r = fresh.clone();
        let due = r.machine.next_poll();
        let step =
            r.machine
                .handle::<crate::proto::token::TokenSet>(Event::Timer, due, &SystemRandom);
        assert_eq!(step.action, Action::SendPoll);
        let held = HeldTokens::new(br#"{"access_token":"secret-at"}"#, due).unwrap();
        r.machine.handle::<crate::proto::token::TokenSet>(
            Event::Response(PollResult::Held {
                tokens: held.clone(),
                reason: "down".into(),
            }),
            due,
            &SystemRandom,
        );
        let text = serde_json::to_value(&r).unwrap();
        assert_eq!(
            text["machine"]["held_tokens"]["received_at_ms"],
            due.as_millis()
        );
        let read: Record = serde_json::from_value(text).unwrap();
        assert_eq!(read.machine.held_tokens(), Some(&held));
        assert_eq!(read, r);
    }

    #[test]
    fn an_authentication_written_before_profiles_reads_as_oidc() {
        let fresh = record("v1", 0);
        let mut auth = serde_json::to_value(&fresh.auth).unwrap();
        let obj = auth.as_object_mut().unwrap();
        assert_eq!(obj.remove("profile"), Some(serde_json::json!("oidc")));
        assert!(!obj.contains_key("initial_interaction_uri"));
        let text = WRITTEN_BY_V1.replace("AUTH", &auth.to_string());
        let read: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(read.auth.profile(), crate::Profile::Oidc);
        assert!(read.machine.interaction_uri().is_none());
        // An IETF authentication keeps its profile and interaction.
        let mut ietf = record("v1", 0);
        ietf.auth = ietf.auth.with_profile(crate::Profile::Ietf);
        let uri = crate::ietf::InteractionUri::parse("https://as.example/i/1").unwrap();
        ietf.machine = ietf.machine.with_interaction(Some(uri.clone()));
        let back: Record = serde_json::from_str(&serde_json::to_string(&ietf).unwrap()).unwrap();
        assert_eq!(back.auth.profile(), crate::Profile::Ietf);
        assert_eq!(back.machine.interaction_uri(), Some(&uri));
    }

    #[test]
    fn the_written_form_does_not_depend_on_the_machine_s_field_names() {
        let text = serde_json::to_value(record("v1", 0)).unwrap();
        let machine = text["machine"].as_object().unwrap();
        let mut keys: Vec<&str> = machine.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "backoff_step",
                "cancel_requested",
                "config",
                "deadline_from_op",
                "deadline_ms",
                "dpop_retry_used",
                "fate_unknown",
                "final_poll_sent",
                "floor_secs",
                "last_error",
                "last_progress",
                "last_request_ms",
                "next_is_final",
                "next_poll_ms",
                "not_before_ms",
                "phase",
                "polls",
                "slow_downs",
                "wake_unserved",
                "woken",
            ]
        );
    }

    #[test]
    fn a_record_opens_only_for_its_owner_and_the_seal_covers_the_delivery_state() {
        use crate::store::{AesGcmSealer, Sealer};
        let sealer = AesGcmSealer::new([1; 32]).unwrap();
        let mut r = record("owned", 0);
        r.outcome = Some(crate::store::test_records::denied(1));
        r.outcome.as_mut().unwrap().delivered = true;
        let key = record_key(r.id());
        let sealed = seal_record(Some(&sealer), &key, &r).unwrap();
        let mine = Some(("https://op.example", "client"));
        assert_eq!(open_record(Some(&sealer), &key, &sealed, mine).unwrap(), r);
        assert_eq!(open_record(Some(&sealer), &key, &sealed, None).unwrap(), r);
        for other in [
            ("https://other.example", "client"),
            ("https://op.example", "c2"),
        ] {
            assert!(open_record(Some(&sealer), &key, &sealed, Some(other)).is_err());
        }
        // The delivery state is inside the seal: no bit of it can change.
        let mut flipped = sealed.clone();
        let n = flipped.len();
        flipped[n / 2] ^= 1;
        assert!(matches!(
            open_record(Some(&sealer), &key, &flipped, mine),
            Err(StoreError::Sealing(_))
        ));
        let plain = sealer.open(&sealed, &key).unwrap();
        assert!(
            String::from_utf8(plain)
                .unwrap()
                .contains("\"delivered\":true")
        );
    }

    #[test]
    fn an_unknown_phase_is_an_error_not_a_guess() {
        let fresh = record("v1", 0);
        let auth = serde_json::to_string(&fresh.auth).unwrap();
        let text = WRITTEN_BY_V1
            .replace("AUTH", &auth)
            .replace("\"waiting\"", "\"hibernating\"");
        assert!(serde_json::from_str::<Record>(&text).is_err());
    }
}
