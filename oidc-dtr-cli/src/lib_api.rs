//! Every item `dtr` uses from the library, in one place: the only file to
//! change when the library's paths move.

pub(crate) use oidc_dtr::{
    AuthHandle, CallbackResponse, CancelResult, ClientAuth, DtrClient, Outcome,
    PendingAuthorization, PollEvent, PollStatus, Profile, Redemption, TokenSet, UnixTime,
    assurance::{
        AssuranceError, AssuranceUnsupported, AssuredClaims, ClaimsRequest, ClaimsTarget,
        EvidenceRequest, VerifiedClaimsRequest,
    },
    client::{CancellationConfig, ClientIdentity, DpopConfig, HttpConfig, ResponseMode},
    error::{ConfigError, StoreError},
    jose::{Algorithm, SigningKey},
    poll::RetryCause,
    random::{RandomSource, SystemRandom},
    store::{AesGcmSealer, FileStore, Record, Store},
};

#[cfg(feature = "demo")]
pub(crate) use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig, OpProfiles};
