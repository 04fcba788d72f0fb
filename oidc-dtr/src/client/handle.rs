//! [`AuthHandle`]: a handle to one deferred authentication.

use std::fmt;
use std::future::Future;

use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use crate::client::DtrClient;
use crate::engine::driver::{OutcomeId, PollEvent, PollStatus};
use crate::error::Error;
use crate::proto::cancel::CancelResult;
use crate::proto::poll::Outcome;
use crate::proto::token::TokenSet;
use crate::secret::DeferredId;

/// A handle to one deferred authentication: its own events, its current
/// status, its outcome, its cancellation. Get one with
/// [`DtrClient::watch`].
///
/// Where [`DtrClient::subscribe`] hands every authentication's events to
/// one receiver (the right tool for a server that serves many users), a
/// handle follows one: [`next_event`](Self::next_event) returns only this
/// authentication's events, and ends after its
/// [`PollEvent::Finished`].
///
/// # What the event stream guarantees
///
/// - **Nothing is missed between [`watch`](DtrClient::watch) and the
///   first read.** The handle subscribes when it is made, before anything
///   can be read through it: every event fired after `watch` returns is
///   in its stream, even if [`next_event`](Self::next_event) is first
///   called much later. A [`status`](Self::status) read after `watch`
///   and then the events give a picture without gaps. Right after
///   [`exchange`](DtrClient::exchange) nothing can have been missed
///   either: the first poll, and so the first event, comes no sooner
///   than the authentication's interval after the exchange.
/// - **The outcome is never lost.** The stream ends with exactly one
///   [`PollEvent::Finished`]: if the authentication had already ended
///   when the handle was made, or if this handle fell so far behind that
///   the client's event channel
///   ([`DriverConfig::event_capacity`](crate::poll::DriverConfig::event_capacity))
///   dropped events before it read them (it *lags*), the handle reads the
///   outcome from the poll engine (or the store), as [`wait`](Self::wait)
///   does. Only progress texts and interaction changes can be lost to a
///   lag; the handle then carries on with the next ones, and
///   [`status`](Self::status) tells where polling stands.
/// - **With a shared store (a fleet)**, progress events come only from
///   the instance that polls the authentication (as with
///   [`subscribe`](DtrClient::subscribe)); the outcome is read from the
///   store, whichever instance polled, so the stream still ends with it
///   (each [`next_event`](Self::next_event) call waits on the store as
///   [`wait`](Self::wait) does, alongside the events).
///
/// A handle costs one subscription to the client's event channel; drop it
/// when done. Cloning it subscribes anew: the clone's stream starts at
/// the clone (events read by neither before then are not copied over).
///
/// # Example
///
/// Against the in-process mock OP of the `oidc-dtr-testkit` crate:
///
/// ```
/// use oidc_dtr::{CallbackResponse, DtrClient, Outcome, PollEvent};
/// use oidc_dtr_testkit::{MockOp, OpConfig};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = OpConfig::default();
/// config.interval = Some(1);
/// config.progress_script = vec!["documents in review".into()];
/// let op = MockOp::builder().config(config).start().await?;
/// let client = DtrClient::builder()
///     .issuer(op.issuer())
///     .client_id(MockOp::CLIENT_ID)
///     .client_secret(MockOp::CLIENT_SECRET)
///     .redirect_uri("http://127.0.0.1:9/callback")
///     .build()
///     .await?;
///
/// let (url, pending) = client.authorize().build()?;
/// let back = op.browse(&url).await?;
/// let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
///     panic!("the mock OP defers");
/// };
/// let auth = client.exchange(ack).await?;
///
/// // Follow this one authentication.
/// let mut handle = client.watch(auth.id());
/// assert!(!handle.status().await.expect("tracked").finished);
///
/// // The OP shows progress, then decides.
/// match handle.next_event().await {
///     Some(PollEvent::Progress { description, .. }) => {
///         assert_eq!(description, "documents in review");
///     }
///     other => panic!("{other:?}"),
/// }
/// assert!(op.approve(auth.id()));
/// while let Some(event) = handle.next_event().await {
///     if let PollEvent::Finished { outcome, .. } = event {
///         assert!(matches!(outcome, Outcome::Tokens(_)));
///     }
/// }
///
/// // The outcome stays available; acknowledge it once it is safe.
/// assert!(matches!(handle.wait().await?, Outcome::Tokens(_)));
/// assert!(handle.ack().await?);
/// # Ok(()) }
/// ```
pub struct AuthHandle {
    client: DtrClient,
    id: DeferredId,
    events: broadcast::Receiver<PollEvent<TokenSet>>,
    /// The stream has ended (its `Finished` was returned, or the engine
    /// stopped).
    done: bool,
    /// The engine must be asked whether the authentication has already
    /// ended: at the first read, and after a lag. Cleared only once that
    /// check completed, so a read dropped in the middle redoes it.
    resync: bool,
    /// The authentication has ended: hand out the events already received
    /// (they were fired after the handle was made), then the outcome.
    draining: bool,
}

impl AuthHandle {
    pub(crate) fn new(client: &DtrClient, id: &DeferredId) -> Self {
        // Subscribe first: every event from now on is in this receiver,
        // so a status read afterwards leaves no gap.
        let events = client.subscribe();
        AuthHandle {
            client: client.clone(),
            id: id.clone(),
            events,
            done: false,
            resync: true,
            draining: false,
        }
    }

    /// The authentication's `deferred_auth_id` (a secret: log its
    /// [`fingerprint`](DeferredId::fingerprint)).
    pub fn id(&self) -> &DeferredId {
        &self.id
    }

    /// The client this handle belongs to.
    pub fn client(&self) -> &DtrClient {
        &self.client
    }

    /// The next event of this authentication, and only of this one:
    /// progress texts, interaction changes, held tokens, and last
    /// [`PollEvent::Finished`] with the outcome. `None` after the
    /// `Finished` event, or when the outcome cannot be had (the client
    /// does not know this authentication, its outcome was purged after the
    /// retention period, or the client was shut down): [`wait`](Self::wait)
    /// then says why.
    ///
    /// See the [type's documentation](Self#what-the-event-stream-guarantees)
    /// for what is guaranteed when the handle lags.
    ///
    /// Cancel safety: safe. Dropped before it returns, no event of this
    /// authentication is lost: the next call returns it.
    #[must_use = "an event read and dropped is lost to this handle"]
    pub async fn next_event(&mut self) -> Option<PollEvent<TokenSet>> {
        if self.done {
            return None;
        }
        let fleet = self.client.inner.fleet.is_some();
        loop {
            if self.resync && !fleet {
                match self.client.inner.driver.status(&self.id).await {
                    Some(s) if !s.finished => {}
                    // Ended already (or unknown): what was received, then
                    // the outcome from the engine, whatever happened to the
                    // events.
                    _ => self.draining = true,
                }
                self.resync = false;
            }
            if self.draining {
                match self.events.try_recv() {
                    Ok(event) if event_id(&event) == &self.id => return Some(self.pass(event)),
                    Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Empty | TryRecvError::Closed) => {
                        return self.finish_from_wait().await;
                    }
                }
            }
            let received = if fleet {
                // Another instance may poll it: its outcome comes from the
                // store, and events from here only if this instance polls.
                // Events first: those already received come before the end.
                let from_store = tokio::select! {
                    biased;
                    r = self.events.recv() => Ok(r),
                    o = self.client.wait(&self.id) => Err(o),
                };
                match from_store {
                    Ok(r) => r,
                    Err(outcome) => return self.finish_with(outcome),
                }
            } else {
                self.events.recv().await
            };
            match received {
                Ok(event) if event_id(&event) == &self.id => return Some(self.pass(event)),
                Ok(_) => {}
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(
                        deferred_auth_id = %self.id.fingerprint(),
                        skipped,
                        "handle lagged behind the event channel; checking for the outcome"
                    );
                    self.resync = true;
                }
                Err(RecvError::Closed) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    /// Hands out one of this authentication's events; the stream ends
    /// after its outcome.
    fn pass(&mut self, event: PollEvent<TokenSet>) -> PollEvent<TokenSet> {
        if matches!(event, PollEvent::Finished { .. }) {
            self.done = true;
            self.draining = false;
        }
        event
    }

    /// Ends the stream with the outcome read as [`wait`](Self::wait) does.
    async fn finish_from_wait(&mut self) -> Option<PollEvent<TokenSet>> {
        let r = self.client.wait(&self.id).await;
        self.finish_with(r)
    }

    /// Ends the stream with `r`.
    fn finish_with(&mut self, r: Result<Outcome<TokenSet>, Error>) -> Option<PollEvent<TokenSet>> {
        self.done = true;
        self.resync = false;
        self.draining = false;
        match r {
            Ok(outcome) => Some(PollEvent::Finished {
                outcome_id: OutcomeId::of(&self.id),
                id: self.id.clone(),
                outcome,
            }),
            Err(e) => {
                tracing::debug!(deferred_auth_id = %self.id.fingerprint(), error = %e, "handle: no outcome to end the stream with");
                None
            }
        }
    }

    /// Where polling stands now (see
    /// [`DtrClient::poll_status`]). `None` when this instance does not
    /// poll the authentication: unknown, purged after the retention period,
    /// or, with a shared store, polled by another instance of the fleet.
    ///
    /// Cancel safety: safe (it only reads).
    #[must_use]
    pub async fn status(&self) -> Option<PollStatus> {
        self.client.poll_status(&self.id).await
    }

    /// Waits for the outcome, as [`DtrClient::wait`]. The future does not
    /// borrow the handle, so it can be raced against
    /// [`next_event`](Self::next_event) in one `select!`.
    ///
    /// Cancel safety: safe. Dropping the future loses nothing; the outcome
    /// stays available to later calls for the retention period. With a
    /// shared store (a fleet), the outcome is read from the store,
    /// whichever instance polled.
    pub fn wait(&self) -> impl Future<Output = Result<Outcome<TokenSet>, Error>> + Send + 'static {
        let client = self.client.clone();
        let id = self.id.clone();
        async move { client.wait(&id).await }
    }

    /// Cancels the authentication, as [`DtrClient::cancel`]: the result
    /// says whether the OP was told. The stream then ends with
    /// [`Outcome::Cancelled`] (or with the tokens, when a poll already in
    /// flight brought them).
    pub async fn cancel(&self) -> Result<CancelResult, Error> {
        self.client.cancel(&self.id).await
    }

    /// Acknowledges the outcome, as [`DtrClient::ack`]: the application has
    /// taken it, so it is not handed over again after a restart.
    ///
    /// Cancel safety: safe; acknowledging twice is harmless.
    pub async fn ack(&self) -> Result<bool, Error> {
        self.client.ack(&self.id).await
    }
}

impl Clone for AuthHandle {
    /// A new handle to the same authentication, with a stream of its own
    /// that starts now.
    fn clone(&self) -> Self {
        AuthHandle::new(&self.client, &self.id)
    }
}

impl fmt::Debug for AuthHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHandle")
            .field("deferred_auth_id", &self.id.fingerprint())
            .field("ended", &self.done)
            .finish_non_exhaustive()
    }
}

/// The authentication an event is about.
fn event_id<T>(event: &PollEvent<T>) -> &DeferredId {
    match event {
        PollEvent::Progress { id, .. }
        | PollEvent::Interaction { id, .. }
        | PollEvent::InteractionRefused { id, .. }
        | PollEvent::Retrying { id, .. }
        | PollEvent::TokensHeld { id, .. }
        | PollEvent::Finished { id, .. } => id,
    }
}
