//! The machine's state as plain data ([`PollSnapshot`], what the stores
//! write down through their own record types), and its rare texts kept out
//! of line ([`Notes`]).

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::SharedError;
use crate::proto::ietf::InteractionUri;
use crate::proto::token::HeldTokens;
use crate::time::UnixTime;

/// Everything a [`PollMachine`] knows, as plain data: what a store writes
/// down (through its own versioned record types, so that the machine's
/// fields can change without changing what is on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollSnapshot {
    pub(crate) deadline: UnixTime,
    pub(crate) deadline_from_op: bool,
    pub(crate) floor_secs: u64,
    pub(crate) last_request: UnixTime,
    pub(crate) not_before: UnixTime,
    pub(crate) backoff_step: u32,
    pub(crate) next_poll: UnixTime,
    pub(crate) next_is_final: bool,
    pub(crate) final_poll_sent: bool,
    pub(crate) dpop_retry_used: bool,
    pub(crate) woken: bool,
    pub(crate) wake_unserved: bool,
    pub(crate) fate_unknown: bool,
    pub(crate) cancel_requested: bool,
    /// 0 waiting, 1 a request in flight, 2 finished.
    pub(crate) phase: u8,
    pub(crate) polls: u32,
    pub(crate) slow_downs: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) last_progress: Option<String>,
    pub(crate) interaction_uri: Option<InteractionUri>,
    pub(crate) config: PollConfig,
    /// Tokens in hand awaiting validation.
    pub(crate) held: Option<HeldTokens>,
}

/// A machine's rare texts, out of line (`None` while it has none), and
/// shared between copies of the machine (a copy goes to the store after
/// every answer; the texts change far less often): copied on write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Notes(Option<std::sync::Arc<NoteFields>>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NoteFields {
    #[serde(default)]
    last_error: Option<String>,
    /// The error `last_error` was made from, in memory only.
    #[serde(skip)]
    last_cause: InMemory,
    #[serde(default)]
    last_progress: Option<String>,
    /// The `interaction_uri` the AS currently waits at (IETF
    /// `interaction_required`), if any.
    #[serde(default)]
    interaction_uri: Option<InteractionUri>,
}

impl Notes {
    pub(super) fn new(
        error: Option<String>,
        cause: Option<SharedError>,
        progress: Option<String>,
    ) -> Self {
        if error.is_none() && cause.is_none() && progress.is_none() {
            return Notes(None);
        }
        Notes(Some(std::sync::Arc::new(NoteFields {
            last_error: error,
            last_cause: InMemory(cause),
            last_progress: progress,
            interaction_uri: None,
        })))
    }

    pub(super) fn with_interaction_uri(mut self, uri: Option<InteractionUri>) -> Self {
        if uri.is_some() {
            self.fields().interaction_uri = uri;
        }
        self
    }

    pub(super) fn interaction_uri(&self) -> Option<&InteractionUri> {
        self.0.as_ref()?.interaction_uri.as_ref()
    }

    pub(super) fn set_interaction_uri(&mut self, uri: Option<InteractionUri>) {
        if uri.is_none() && self.0.is_none() {
            return;
        }
        let f = self.fields();
        f.interaction_uri = uri;
        if f.interaction_uri.is_none()
            && f.last_error.is_none()
            && f.last_cause.0.is_none()
            && f.last_progress.is_none()
        {
            // Back to the compact form (and equal to a machine read back).
            self.0 = None;
        }
    }

    pub(super) fn error(&self) -> Option<&str> {
        self.0.as_ref()?.last_error.as_deref()
    }

    pub(super) fn cause(&self) -> Option<SharedError> {
        self.0.as_ref()?.last_cause.0.clone()
    }

    pub(super) fn progress(&self) -> Option<&str> {
        self.0.as_ref()?.last_progress.as_deref()
    }

    fn fields(&mut self) -> &mut NoteFields {
        std::sync::Arc::make_mut(self.0.get_or_insert_with(|| {
            std::sync::Arc::new(NoteFields {
                last_error: None,
                last_cause: InMemory::default(),
                last_progress: None,
                interaction_uri: None,
            })
        }))
    }

    pub(super) fn set_error(&mut self, message: String, cause: Option<SharedError>) {
        let f = self.fields();
        f.last_error = Some(message);
        f.last_cause = InMemory(cause);
    }

    pub(super) fn set_progress(&mut self, progress: Option<String>) {
        self.fields().last_progress = progress;
    }
}

impl Serialize for Notes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let uri = self.interaction_uri();
        let mut st = s.serialize_struct("Notes", 2 + usize::from(uri.is_some()))?;
        st.serialize_field("last_error", &self.error())?;
        st.serialize_field("last_progress", &self.progress())?;
        if let Some(uri) = uri {
            st.serialize_field("interaction_uri", uri)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for Notes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = NoteFields::deserialize(d)?;
        Ok(Notes::new(f.last_error, None, f.last_progress).with_interaction_uri(f.interaction_uri))
    }
}

/// A cause kept in memory beside its persisted text: never serialised,
/// and not part of the machine's equality (a machine read back from a store
/// equals the one written).
#[derive(Debug, Clone, Default)]
pub(super) struct InMemory(Option<SharedError>);

impl PartialEq for InMemory {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InMemory {}
