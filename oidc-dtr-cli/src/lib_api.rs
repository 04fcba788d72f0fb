//! Every item `dtr` uses from the library, in one place: the only file to
//! change when the library's paths move.

pub(crate) use oidc_dtr::{
    AesGcmSealer, Algorithm, AssuranceError, AssuranceUnsupported, AssuredClaims, AuthHandle,
    CallbackResponse, CancelResult, CancellationConfig, ClaimsRequest, ClaimsTarget, ClientAuth,
    ConfigError, DpopConfig, DtrClient, EvidenceRequest, FileStore, Outcome, PendingAuthorization,
    PollEvent, PollStatus, Profile, RandomSource, Record, Redemption, ResponseMode, SigningKey,
    Store, StoreError, SystemRandom, TokenSet, UnixTime, VerifiedClaimsRequest,
};

#[cfg(feature = "demo")]
pub(crate) use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig, OpProfiles};
