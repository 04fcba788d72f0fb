//! Mutual TLS at the notification endpoint: the peer certificate the
//! application hands over, and which certificates may deliver pings.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime as PkiTime};
use rustls::server::danger::ClientCertVerifier;

use super::x509::{CertNames, SubjectRules, parse_dn};
use crate::error::ConfigError;
use crate::time::UnixTime;

/// The peer's TLS client certificate (DER of the leaf, and optionally the
/// intermediate CA certificates it sent), as a request extension: a server
/// that terminates TLS itself inserts it into each request of a
/// connection, and [`PingReceiver::handle`](super::PingReceiver::handle)
/// reads it (see [`PingMtls`] and the pings guide).
///
/// ```
/// use oidc_dtr::ping::PeerCertificate;
///
/// // In the server, per request of a TLS connection: the leaf the client
/// // presented (e.g. rustls' `peer_certificates()[0]`).
/// let leaf_der: Vec<u8> = vec![0x30, 0x82, 0x01, 0x0a];
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(PeerCertificate::new(leaf_der.clone()));
/// assert_eq!(request.extensions().get::<PeerCertificate>().unwrap().der(), &leaf_der[..]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    der: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
}

impl PeerCertificate {
    /// The peer's leaf certificate, DER-encoded.
    pub fn new(der: impl Into<Vec<u8>>) -> Self {
        PeerCertificate {
            der: der.into(),
            intermediates: Vec::new(),
        }
    }

    /// The chain as TLS delivers it, leaf first, then the intermediates
    /// the peer sent (rustls' `peer_certificates()`); `None` if empty.
    /// Only a CA trusted with [`PingMtls::trust_ca_pem`] uses the
    /// intermediates.
    ///
    /// ```
    /// use oidc_dtr::ping::PeerCertificate;
    ///
    /// let chain: Vec<Vec<u8>> = vec![vec![0x30, 0x00], vec![0x30, 0x01, 0x00]];
    /// let peer = PeerCertificate::from_chain(chain.clone()).unwrap();
    /// assert_eq!(peer.der(), &chain[0][..]);
    /// assert_eq!(peer.intermediates().collect::<Vec<_>>(), [&chain[1][..]]);
    /// assert!(PeerCertificate::from_chain(Vec::<Vec<u8>>::new()).is_none());
    /// ```
    pub fn from_chain<C: Into<Vec<u8>>>(chain: impl IntoIterator<Item = C>) -> Option<Self> {
        let mut chain = chain.into_iter().map(Into::into);
        let leaf = chain.next()?;
        Some(PeerCertificate {
            der: leaf,
            intermediates: chain.collect(),
        })
    }

    /// Adds intermediate CA certificates (DER) the peer sent with its
    /// leaf, for a chain to a CA trusted with [`PingMtls::trust_ca_pem`].
    pub fn with_intermediates<C: Into<Vec<u8>>>(
        mut self,
        intermediates: impl IntoIterator<Item = C>,
    ) -> Self {
        self.intermediates
            .extend(intermediates.into_iter().map(Into::into));
        self
    }

    /// The DER bytes of the leaf.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The intermediate certificates (DER), in the order given.
    pub fn intermediates(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.intermediates.iter().map(Vec::as_slice)
    }
}

/// The subject a CA-issued OP certificate must have: the registration
/// metadata of RFC 8705 §2.1.2 (`tls_client_auth_subject_dn`,
/// `tls_client_auth_san_dns`, `_san_uri`, `_san_ip`, `_san_email`). Every
/// value set must match; at least one must be set.
///
/// - [`dn`](Self::dn): the subject distinguished name, in the string form
///   of RFC 4514 (`CN=op.example,O=Example,C=DE`), compared RDN by RDN,
///   attribute types by OID, string values without regard to case or to
///   runs of white space; `#hex` values compared as DER;
/// - [`san_dns`](Self::san_dns): a `dNSName` entry, equal without regard
///   to ASCII case (no wildcard matching);
/// - [`san_uri`](Self::san_uri): a `uniformResourceIdentifier` entry,
///   equal byte for byte;
/// - [`san_ip`](Self::san_ip): an `iPAddress` entry;
/// - [`san_email`](Self::san_email): an `rfc822Name` entry, the local part
///   equal, the domain without regard to case.
///
/// ```
/// use oidc_dtr::ping::CertificateSubject;
///
/// let subject = CertificateSubject::new()
///     .dn("CN=op.example,O=Example OP,C=DE")
///     .san_dns("op.example");
/// # let _ = subject;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct CertificateSubject {
    dn: Option<String>,
    san_dns: Option<String>,
    san_uri: Option<String>,
    san_ip: Option<IpAddr>,
    san_email: Option<String>,
}

impl CertificateSubject {
    /// Nothing expected yet (not usable as such: set at least one value).
    pub fn new() -> Self {
        CertificateSubject::default()
    }

    /// The expected subject distinguished name, RFC 4514 string form
    /// (`tls_client_auth_subject_dn`).
    pub fn dn(mut self, dn: impl Into<String>) -> Self {
        self.dn = Some(dn.into());
        self
    }

    /// An expected `dNSName` subjectAltName entry
    /// (`tls_client_auth_san_dns`).
    pub fn san_dns(mut self, name: impl Into<String>) -> Self {
        self.san_dns = Some(name.into());
        self
    }

    /// An expected `uniformResourceIdentifier` subjectAltName entry
    /// (`tls_client_auth_san_uri`).
    pub fn san_uri(mut self, uri: impl Into<String>) -> Self {
        self.san_uri = Some(uri.into());
        self
    }

    /// An expected `iPAddress` subjectAltName entry
    /// (`tls_client_auth_san_ip`).
    pub fn san_ip(mut self, ip: IpAddr) -> Self {
        self.san_ip = Some(ip);
        self
    }

    /// An expected `rfc822Name` subjectAltName entry
    /// (`tls_client_auth_san_email`).
    pub fn san_email(mut self, email: impl Into<String>) -> Self {
        self.san_email = Some(email.into());
        self
    }

    /// Checked and compiled.
    fn compile(&self) -> Result<SubjectRules, ConfigError> {
        let blank = |v: &Option<String>, what: &str| match v {
            Some(s) if s.trim().is_empty() => Err(invalid(format!("the expected {what} is empty"))),
            _ => Ok(()),
        };
        blank(&self.dn, "subject DN")?;
        blank(&self.san_dns, "dNSName")?;
        blank(&self.san_uri, "URI")?;
        blank(&self.san_email, "rfc822Name")?;
        if let Some(e) = &self.san_email
            && !e.contains('@')
        {
            return Err(invalid("the expected rfc822Name has no `@`".into()));
        }
        let dn = match &self.dn {
            None => None,
            Some(s) => Some(parse_dn(s).map_err(|reason| {
                invalid(format!(
                    "the expected subject DN is not an RFC 4514 string: {reason}"
                ))
            })?),
        };
        let rules = SubjectRules {
            dn,
            san_dns: self.san_dns.clone(),
            san_uri: self.san_uri.clone(),
            san_ip: self.san_ip,
            san_email: self.san_email.clone(),
        };
        if rules.dn.is_none()
            && rules.san_dns.is_none()
            && rules.san_uri.is_none()
            && rules.san_ip.is_none()
            && rules.san_email.is_none()
        {
            return Err(invalid(
                "a trusted CA needs an expected subject (a DN or a subjectAltName entry)".into(),
            ));
        }
        Ok(rules)
    }
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid {
        field: "ping_mtls",
        reason,
    }
}

/// A trusted CA and the subject its certificates must have.
#[derive(Clone)]
struct CaRule {
    verifier: Arc<dyn ClientCertVerifier>,
    anchors: usize,
    subject: SubjectRules,
}

/// Mutual TLS at the notification endpoint: which OP certificates may
/// deliver pings, and whether a bearer token is also required.
///
/// The Deferred Token Response drafts let the OP authenticate to the
/// client's notification endpoint with mutual TLS instead of the bearer
/// token. With this set on a [`PingReceiver`](super::PingReceiver), a ping
/// is accepted only from a peer whose certificate (handed over by the
/// application: see
/// [`PingReceiver::handle_raw_with_peer`](super::PingReceiver::handle_raw_with_peer)
/// and [`PeerCertificate`]) is trusted in one of two ways:
///
/// - it is one of the pinned certificates: its SHA-256 thumbprint
///   (`x5t#S256`, RFC 8705 §3.1) is one of those configured, compared in
///   constant time ([`trust_certificate_der`](Self::trust_certificate_der),
///   [`trust_certificates_pem`](Self::trust_certificates_pem),
///   [`trust_thumbprint`](Self::trust_thumbprint));
/// - or it chains to a trusted CA, through the intermediates it was sent
///   with if need be, is valid now by the client's clock, may be used for
///   TLS client authentication (extended key usage `clientAuth` when it
///   lists any), *and* has the expected subject, as RFC 8705 §2.1 does for
///   `tls_client_auth` ([`trust_ca_pem`](Self::trust_ca_pem),
///   [`trust_ca_der`](Self::trust_ca_der), [`CertificateSubject`]).
///
/// Then:
///
/// - with [`require_bearer(true)`](Self::require_bearer) (the default),
///   the bearer token is checked as without mutual TLS;
/// - with `require_bearer(false)`, a ping without `Authorization` wakes
///   the named authentication if it is pending (one with a bearer token
///   still has it checked).
///
/// A wrong certificate (not pinned, another CA, expired, the wrong
/// subject, not DER at all), no certificate, a wrong token and an unknown
/// id all get the same `401`: the answer tells a caller nothing.
///
/// The TLS server must request (and verify against the OP's CA, or
/// accept any and leave the decision here) client certificates; this type
/// only checks what it hands over.
///
/// ```
/// use oidc_dtr::ping::PingMtls;
///
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let op_cert_pem = rcgen::CertificateParams::new(vec!["op.example".to_owned()])
/// #     .unwrap()
/// #     .self_signed(&key)
/// #     .unwrap()
/// #     .pem();
/// // Trust the OP's client certificate; pings need no bearer token then.
/// let mtls = PingMtls::new()
///     .trust_certificates_pem(&op_cert_pem)?
///     .require_bearer(false);
/// # let _ = mtls;
/// # Ok::<(), oidc_dtr::error::ConfigError>(())
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct PingMtls {
    thumbprints: Vec<[u8; 32]>,
    cas: Vec<CaRule>,
    pub(super) allow_without_bearer: bool,
}

impl fmt::Debug for PingMtls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingMtls")
            .field("trusted", &self.thumbprints.len())
            .field(
                "trusted_cas",
                &self.cas.iter().map(|c| c.anchors).sum::<usize>(),
            )
            .field("require_bearer", &!self.allow_without_bearer)
            .finish()
    }
}

impl PingMtls {
    /// Nothing trusted yet; a bearer token required.
    pub fn new() -> Self {
        PingMtls::default()
    }

    /// Trusts the OP certificate `der` (DER).
    pub fn trust_certificate_der(mut self, der: impl AsRef<[u8]>) -> Self {
        self.thumbprints.push(sha256(der.as_ref()));
        self
    }

    /// Trusts every certificate of `pem` (PEM `CERTIFICATE` blocks).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `ping_mtls`) when `pem` holds no
    /// certificate or is not valid PEM.
    pub fn trust_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let certs = pem_certificates(pem.as_ref())?;
        self.thumbprints.extend(certs.iter().map(|c| sha256(c)));
        Ok(self)
    }

    /// Trusts the certificate whose `x5t#S256` (base64url SHA-256 of its
    /// DER, RFC 8705 §3.1) is `thumbprint`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `ping_mtls`) when it is not 32
    /// bytes of base64url.
    pub fn trust_thumbprint(mut self, thumbprint: &str) -> Result<Self, ConfigError> {
        let bytes = crate::jose::b64_decode(thumbprint)
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| invalid("an x5t#S256 thumbprint is 32 bytes of base64url".into()))?;
        self.thumbprints.push(bytes);
        Ok(self)
    }

    /// Trusts the certificates issued (directly or through intermediates)
    /// by the CA certificates of `ca_pem` (PEM `CERTIFICATE` blocks) whose
    /// subject is `subject`. Call it again for another CA or subject; a
    /// peer certificate is accepted if any one rule accepts it.
    ///
    /// A peer certificate is checked against the CA with the client's
    /// clock (its validity period), for TLS client authentication (if it
    /// lists extended key usages, `clientAuth` must be one), with the
    /// intermediates handed over with it
    /// ([`PeerCertificate::with_intermediates`]); revocation is not
    /// checked.
    ///
    /// ```
    /// use oidc_dtr::ping::{CertificateSubject, PingMtls};
    ///
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # let ca_pem = ca.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
    /// // The OP's client certificates come from its CA; the one for pings
    /// // is `CN=op.example, O=Example OP` with the DNS name `op.example`.
    /// let mtls = PingMtls::new()
    ///     .trust_ca_pem(
    ///         &ca_pem,
    ///         CertificateSubject::new()
    ///             .dn("CN=op.example, O=Example OP")
    ///             .san_dns("op.example"),
    ///     )?
    ///     .require_bearer(false);
    /// # let _ = mtls;
    ///
    /// // A subject is required, and must be well formed.
    /// assert!(PingMtls::new().trust_ca_pem(&ca_pem, CertificateSubject::new()).is_err());
    /// assert!(PingMtls::new()
    ///     .trust_ca_pem(&ca_pem, CertificateSubject::new().dn("op.example"))
    ///     .is_err());
    /// # Ok::<(), oidc_dtr::error::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `ping_mtls`) when `ca_pem` holds no
    /// certificate, is not valid PEM, or holds a certificate that cannot
    /// be a trust anchor, or when `subject` is empty or not well formed
    /// (a DN that is not an RFC 4514 string, an empty name).
    pub fn trust_ca_pem(
        self,
        ca_pem: impl AsRef<[u8]>,
        subject: CertificateSubject,
    ) -> Result<Self, ConfigError> {
        let certs = pem_certificates(ca_pem.as_ref())?;
        self.trust_cas(certs, &subject)
    }

    /// [`trust_ca_pem`](Self::trust_ca_pem) with one CA certificate in DER.
    ///
    /// ```
    /// use oidc_dtr::ping::{CertificateSubject, PingMtls};
    ///
    /// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    /// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    /// # let ca_der = ca.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec();
    /// let mtls = PingMtls::new().trust_ca_der(
    ///     &ca_der,
    ///     CertificateSubject::new().san_uri("https://op.example"),
    /// )?;
    /// # let _ = mtls;
    /// // Not a certificate: a typed error.
    /// assert!(PingMtls::new()
    ///     .trust_ca_der(b"not DER", CertificateSubject::new().san_dns("op.example"))
    ///     .is_err());
    /// # Ok::<(), oidc_dtr::error::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`trust_ca_pem`](Self::trust_ca_pem).
    pub fn trust_ca_der(
        self,
        ca_der: impl AsRef<[u8]>,
        subject: CertificateSubject,
    ) -> Result<Self, ConfigError> {
        let cert = CertificateDer::from(ca_der.as_ref().to_vec());
        self.trust_cas(vec![cert], &subject)
    }

    fn trust_cas(
        mut self,
        certs: Vec<CertificateDer<'static>>,
        subject: &CertificateSubject,
    ) -> Result<Self, ConfigError> {
        let subject = subject.compile()?;
        let mut roots = rustls::RootCertStore::empty();
        let anchors = certs.len();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| invalid(format!("a CA certificate cannot be a trust anchor: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(format!("the CA certificates cannot be used: {e}")))?;
        self.cas.push(CaRule {
            verifier,
            anchors,
            subject,
        });
        Ok(self)
    }

    /// Whether a bearer token is required as well as the certificate
    /// (default true).
    pub fn require_bearer(mut self, required: bool) -> Self {
        self.allow_without_bearer = !required;
        self
    }

    /// Whether `peer` is trusted: every pinned thumbprint is compared, in
    /// constant time; then each CA rule is tried.
    pub(super) fn accepts(
        &self,
        peer: Option<&[u8]>,
        intermediates: &[&[u8]],
        now: impl FnOnce() -> UnixTime,
    ) -> bool {
        let presented = sha256(peer.unwrap_or_default());
        let mut found = false;
        for t in &self.thumbprints {
            found |= crate::secret::ct_eq(t, &presented);
        }
        let Some(peer) = peer else {
            return false;
        };
        if found {
            return true;
        }
        if self.cas.is_empty() {
            return false;
        }
        let now = now();
        let now = PkiTime::since_unix_epoch(std::time::Duration::from_millis(now.as_millis()));
        let leaf = CertificateDer::from(peer);
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(*c))
            .collect();
        let names = CertNames::parse(peer);
        self.cas.iter().any(|ca| {
            let chained = ca
                .verifier
                .verify_client_cert(&leaf, &intermediates, now)
                .is_ok();
            if !chained {
                tracing::debug!("ping certificate: no valid chain to this trusted CA");
                return false;
            }
            let named = names.as_ref().is_some_and(|n| ca.subject.matches(n));
            if !named {
                tracing::debug!("ping certificate: chains to a trusted CA, but the subject is not the one expected");
            }
            named
        })
    }
}

/// The certificates of a PEM bundle (at least one).
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        out.push(cert.map_err(|_| invalid("not valid PEM".into()))?);
    }
    if out.is_empty() {
        return Err(invalid("no PEM certificate was found".into()));
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// For the fuzz target (`lib.rs`, `__fuzz`): a receiver that trusts
/// `ca_der` for `CN=op.example, O=Example OP, C=DE` without a bearer token,
/// its clock stopped at 2030-01-01, takes a ping for a live id with `peer`
/// as the peer certificate (and the rest of the chain, if `peer` is split
/// by `\n--\n`); the status it answers, `None` if it did not finish at
/// once. If `peer` is UTF-8, the DN parser gets it too.
pub(crate) fn fuzz_peer_certificate(ca_der: &[u8], peer: &[u8]) -> Option<u16> {
    use super::{BoxFuture, PingReceiver, PingSink, PingVerdict};
    use crate::secret::DeferredId;
    use std::future::Future as _;

    struct Live;
    impl PingSink for Live {
        fn ping(&self, _: DeferredId, _: Vec<u8>) -> BoxFuture<PingVerdict> {
            Box::pin(async { PingVerdict::Rejected })
        }
        fn transport_authenticated(&self, _: DeferredId) -> BoxFuture<PingVerdict> {
            Box::pin(async { PingVerdict::Woken })
        }
    }
    struct Fixed;
    impl crate::time::Clock for Fixed {
        fn now(&self) -> UnixTime {
            UnixTime::from_secs(1_893_456_000)
        }
    }

    if let Ok(s) = std::str::from_utf8(peer) {
        let _ = parse_dn(s);
    }
    let mtls = PingMtls::new()
        .trust_ca_der(
            ca_der,
            CertificateSubject::new().dn("CN=op.example, O=Example OP, C=DE"),
        )
        .ok()?
        .require_bearer(false);
    let mut parts = split_chain(peer);
    let leaf = parts.next().unwrap_or_default();
    let peer = PeerCertificate::new(leaf).with_intermediates(parts);
    if let Some(names) = CertNames::parse(peer.der()) {
        let rules = CertificateSubject::new()
            .san_dns("op.example")
            .san_uri("https://op.example/")
            .san_ip(IpAddr::from([192, 0, 2, 7]))
            .san_email("pings@op.example")
            .compile()
            .ok()?;
        let _ = rules.matches(&names);
    }
    let receiver = PingReceiver::new(Arc::new(Live))
        .with_clock(Arc::new(Fixed))
        .mtls(mtls);
    let body = br#"{"deferred_auth_id":"live"}"#;
    let mut fut = std::pin::pin!(receiver.handle_raw_with_peer_certificate(
        "POST",
        Some("application/json"),
        None,
        body,
        Some(&peer),
    ));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(reply) => Some(reply.status),
        std::task::Poll::Pending => None,
    }
}

/// `bytes` cut at each `\n--\n`.
fn split_chain(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(4).position(|w| w == b"\n--\n") {
            Some(i) => {
                rest = r.get(i + 4..);
                r.get(..i).map(<[u8]>::to_vec)
            }
            None => {
                rest = None;
                Some(r.to_vec())
            }
        }
    })
}

#[cfg(test)]
mod tests;
