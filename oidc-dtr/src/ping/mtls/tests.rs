//! Unit tests of the parent module: CA-issued peer certificates, made at
//! test time with rcgen.
use super::*;
use crate::ping::{BoxFuture, PingReceiver, PingReplyKind, PingSink, PingVerdict};
use crate::secret::DeferredId;
use crate::time::{ManualClock, UnixTime};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

/// 2030-01-01, inside every certificate's validity unless a test says.
const NOW: UnixTime = UnixTime::from_secs(1_893_456_000);

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn intermediate(
    name: &str,
    parent: &CertifiedIssuer<'static, KeyPair>,
) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::signed_by(p, KeyPair::generate().unwrap(), parent).unwrap()
}

/// The OP's client certificate: `CN=op.example, O=Example OP, C=DE`, with
/// the DNS name, URI, IP address and e-mail SANs given; edited by `edit`.
fn leaf_with(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    edit: impl FnOnce(&mut CertificateParams),
) -> Vec<u8> {
    let mut p = CertificateParams::new(vec!["op.example".to_owned()]).unwrap();
    p.subject_alt_names.extend([
        SanType::URI("https://op.example/".try_into().unwrap()),
        SanType::IpAddress("192.0.2.7".parse().unwrap()),
        SanType::Rfc822Name("Pings@OP.example".try_into().unwrap()),
    ]);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CountryName, "DE");
    p.distinguished_name
        .push(DnType::OrganizationName, "Example OP");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = date_time_ymd(2029, 1, 1);
    p.not_after = date_time_ymd(2031, 1, 1);
    edit(&mut p);
    p.signed_by(&KeyPair::generate().unwrap(), issuer)
        .unwrap()
        .der()
        .to_vec()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>) -> Vec<u8> {
    leaf_with(issuer, "op.example", |_| {})
}

fn dn() -> CertificateSubject {
    CertificateSubject::new().dn("CN=op.example, O=Example OP, C=DE")
}

/// A certificate's DER.
fn der<'a>(c: &'a CertifiedIssuer<'static, KeyPair>) -> &'a [u8] {
    c.der()
}

fn accepts(m: &PingMtls, peer: &[u8], intermediates: &[&[u8]], now: UnixTime) -> bool {
    m.accepts(Some(peer), intermediates, || now)
}

#[test]
fn right_ca_and_right_subject_are_accepted_by_each_kind_of_subject() {
    let ca = ca("OP CA");
    let cert = leaf(&ca);
    let subjects = [
        dn(),
        // Case and white space do not matter in a DN; the string lists
        // the RDNs last first.
        CertificateSubject::new().dn("cn=OP.EXAMPLE,o=example   op,c=de"),
        CertificateSubject::new().dn("2.5.4.3=op.example,2.5.4.10=Example OP,2.5.4.6=DE"),
        CertificateSubject::new().san_dns("OP.example"),
        CertificateSubject::new().san_uri("https://op.example/"),
        CertificateSubject::new().san_ip("192.0.2.7".parse().unwrap()),
        CertificateSubject::new().san_email("Pings@op.EXAMPLE"),
        dn().san_dns("op.example").san_uri("https://op.example/"),
    ];
    for subject in subjects {
        let m = PingMtls::new()
            .trust_ca_pem(ca.pem(), subject.clone())
            .unwrap();
        assert!(accepts(&m, &cert, &[], NOW), "{subject:?}");
        let m = PingMtls::new()
            .trust_ca_der(ca.der(), subject.clone())
            .unwrap();
        assert!(accepts(&m, &cert, &[], NOW), "{subject:?}");
    }
    // The string types of a DN value do not matter, only the text.
    let m = PingMtls::new().trust_ca_pem(ca.pem(), dn()).unwrap();
    let values = [
        DnValue::PrintableString("op.example".try_into().unwrap()),
        DnValue::BmpString("op.example".try_into().unwrap()),
        DnValue::UniversalString("op.example".try_into().unwrap()),
        DnValue::TeletexString("op.example".try_into().unwrap()),
        DnValue::Ia5String("op.example".try_into().unwrap()),
    ];
    for v in values {
        let cert = leaf_with(&ca, "op.example", |p| {
            p.distinguished_name.push(DnType::CommonName, v.clone())
        });
        assert!(accepts(&m, &cert, &[], NOW), "{v:?}");
    }
    // A `#hex` value is compared as DER: here a UTF8String "DE".
    let hex = CertificateSubject::new().dn("CN=op.example,O=Example OP,C=#0c024445");
    let m = PingMtls::new().trust_ca_pem(ca.pem(), hex).unwrap();
    assert!(accepts(&m, &cert, &[], NOW));
    let printable = CertificateSubject::new().dn("CN=op.example,O=Example OP,C=#13024445");
    let m = PingMtls::new().trust_ca_pem(ca.pem(), printable).unwrap();
    assert!(!accepts(&m, &cert, &[], NOW));
}

/// The fuzz target's seeds (an OpenSSL-made CA and leaf) go through the
/// fuzz wrapper as the target expects: the leaf is accepted, with or
/// without its chain, and nothing else.
#[test]
fn the_fuzz_seeds_give_the_expected_answers() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let ca = std::fs::read(fuzz.join("fixtures/ping_ca.der")).unwrap();
    let seed = |name: &str| std::fs::read(fuzz.join("corpus/ping_certificate").join(name)).unwrap();
    assert_eq!(fuzz_peer_certificate(&ca, &seed("leaf")), Some(204));
    assert_eq!(
        fuzz_peer_certificate(&ca, &seed("leaf_and_chain")),
        Some(204)
    );
    for refused in ["truncated", "garbage", "dn_string"] {
        assert_eq!(
            fuzz_peer_certificate(&ca, &seed(refused)),
            Some(401),
            "{refused}"
        );
    }
    assert_eq!(fuzz_peer_certificate(&ca, b""), Some(401));
    // The OpenSSL leaf's names, read by the DER reader.
    let leaf = seed("leaf");
    let names = CertNames::parse(&leaf).unwrap();
    let rules = CertificateSubject::new()
        .dn("CN=op.example,O=Example OP,C=DE")
        .san_dns("op.example")
        .san_uri("https://op.example/")
        .san_ip("192.0.2.7".parse().unwrap())
        .san_email("pings@op.example")
        .compile()
        .unwrap();
    assert!(rules.matches(&names));
}

#[test]
fn right_ca_and_wrong_subject_are_refused() {
    let ca = ca("OP CA");
    let cert = leaf(&ca);
    let other_cn = leaf_with(&ca, "attacker.example", |_| {});
    let subjects = [
        CertificateSubject::new().dn("CN=op.example, O=Other OP, C=DE"),
        // An RDN missing, one too many, the order reversed.
        CertificateSubject::new().dn("CN=op.example, O=Example OP"),
        CertificateSubject::new().dn("CN=op.example, O=Example OP, C=DE, DC=example"),
        CertificateSubject::new().dn("C=DE, O=Example OP, CN=op.example"),
        CertificateSubject::new().san_dns("other.example"),
        // No wildcard matching, no suffix matching.
        CertificateSubject::new().san_dns("example"),
        CertificateSubject::new().san_uri("https://OP.example/"),
        CertificateSubject::new().san_ip("192.0.2.8".parse().unwrap()),
        // The local part of an address is case-sensitive.
        CertificateSubject::new().san_email("pings@op.example"),
        // All that is set must match.
        dn().san_dns("other.example"),
    ];
    for subject in subjects {
        let m = PingMtls::new()
            .trust_ca_pem(ca.pem(), subject.clone())
            .unwrap();
        assert!(!accepts(&m, &cert, &[], NOW), "{subject:?}");
    }
    let m = PingMtls::new().trust_ca_pem(ca.pem(), dn()).unwrap();
    assert!(!accepts(&m, &other_cn, &[], NOW));
}

#[test]
fn another_ca_with_the_right_subject_is_refused() {
    let trusted = ca("OP CA");
    // Same name as the trusted CA, another key.
    let impostor = ca("OP CA");
    let m = PingMtls::new().trust_ca_pem(trusted.pem(), dn()).unwrap();
    assert!(accepts(&m, &leaf(&trusted), &[], NOW));
    assert!(!accepts(&m, &leaf(&impostor), &[], NOW));
    // Nor is the trusted CA's own certificate a client certificate.
    assert!(!accepts(&m, trusted.der(), &[], NOW));
}

#[test]
fn validity_is_checked_with_the_given_clock() {
    let ca = ca("OP CA");
    let cert = leaf(&ca); // 2029-01-01 to 2031-01-01
    let m = PingMtls::new().trust_ca_pem(ca.pem(), dn()).unwrap();
    assert!(accepts(&m, &cert, &[], NOW));
    let expired = UnixTime::from_secs(1_924_992_000 + 86_400); // 2031-01-02
    let early = UnixTime::from_secs(1_861_920_000 - 86_400); // 2028-12-31
    assert!(!accepts(&m, &cert, &[], expired));
    assert!(!accepts(&m, &cert, &[], early));
}

#[test]
fn a_certificate_for_servers_only_is_refused() {
    let ca = ca("OP CA");
    let server_only = leaf_with(&ca, "op.example", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let no_eku = leaf_with(&ca, "op.example", |p| p.extended_key_usages.clear());
    let m = PingMtls::new().trust_ca_pem(ca.pem(), dn()).unwrap();
    assert!(!accepts(&m, &server_only, &[], NOW));
    // Without the extension, a certificate may be used for anything.
    assert!(accepts(&m, &no_eku, &[], NOW));
}

#[test]
fn an_intermediate_is_used_when_it_comes_with_the_peer_certificate() {
    let root = ca("OP root");
    let issuing = intermediate("OP issuing CA", &root);
    let cert = leaf(&issuing);
    let m = PingMtls::new().trust_ca_pem(root.pem(), dn()).unwrap();
    assert!(accepts(&m, &cert, &[der(&issuing)], NOW));
    assert!(
        !accepts(&m, &cert, &[], NOW),
        "no path without the intermediate"
    );
    // An unrelated intermediate does not help.
    let stray = intermediate("stray", &ca("elsewhere"));
    assert!(!accepts(&m, &cert, &[der(&stray)], NOW));
    // Trusting the intermediate itself works without the chain.
    let m = PingMtls::new().trust_ca_der(issuing.der(), dn()).unwrap();
    assert!(accepts(&m, &cert, &[], NOW));
}

#[test]
fn garbage_as_the_peer_certificate_is_refused_without_panic() {
    let ca = ca("OP CA");
    let cert = leaf(&ca);
    let m = PingMtls::new()
        .trust_certificate_der(b"pinned")
        .trust_ca_pem(ca.pem(), dn())
        .unwrap();
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x30],
        vec![0x30, 0x80, 0x00, 0x00],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0xff; 64],
        b"-----BEGIN CERTIFICATE-----".to_vec(),
    ];
    for cut in [1, 4, cert.len() / 2, cert.len() - 1] {
        garbage.push(cert[..cut].to_vec());
    }
    let mut trailing = cert.clone();
    trailing.push(0);
    garbage.push(trailing);
    for (i, b) in cert.iter().enumerate().step_by(7) {
        let mut flipped = cert.clone();
        flipped[i] = b ^ 0x5a;
        garbage.push(flipped);
    }
    for g in &garbage {
        assert!(!accepts(&m, g, &[], NOW), "{g:02x?}");
        // As an intermediate, or to the name reader: no panic.
        let _ = accepts(&m, &cert, &[g], NOW);
        let _ = CertNames::parse(g);
    }
    assert!(!m.accepts(None, &[], || NOW));
    assert!(accepts(&m, &cert, &[], NOW));
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let ca = ca("OP CA");
    let refused = |r: Result<PingMtls, ConfigError>| match r {
        Err(ConfigError::Invalid { field, reason }) => {
            assert_eq!(field, "ping_mtls");
            reason
        }
        other => panic!("{other:?}"),
    };
    let empty = refused(PingMtls::new().trust_ca_pem(ca.pem(), CertificateSubject::new()));
    assert!(empty.contains("expected subject"), "{empty}");
    for subject in [
        CertificateSubject::new().dn(""),
        CertificateSubject::new().dn("   "),
        CertificateSubject::new().dn("op.example"),
        CertificateSubject::new().dn("CN=a,XYZ=b"),
        CertificateSubject::new().san_dns(""),
        CertificateSubject::new().san_uri(" "),
        CertificateSubject::new().san_email("no-at-sign"),
    ] {
        refused(PingMtls::new().trust_ca_pem(ca.pem(), subject));
    }
    refused(PingMtls::new().trust_ca_pem("no PEM here", dn()));
    refused(PingMtls::new().trust_ca_pem(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        dn(),
    ));
    refused(PingMtls::new().trust_ca_der(b"\x30\x03\x02\x01\x00", dn()));
    refused(PingMtls::new().trust_ca_der(b"", dn()));
    // Debug shows counts, no certificate bytes.
    let m = PingMtls::new().trust_ca_pem(ca.pem(), dn()).unwrap();
    assert_eq!(
        format!("{m:?}"),
        "PingMtls { trusted: 0, trusted_cas: 1, require_bearer: true }"
    );
}

/// Knows the id "live" with token "right"; certificate-authenticated
/// pings wake it too.
struct Sink;

impl PingSink for Sink {
    fn ping(&self, id: DeferredId, token: Vec<u8>) -> BoxFuture<PingVerdict> {
        let ok = id.secret() == "live" && token == b"right";
        Box::pin(async move {
            if ok {
                PingVerdict::Woken
            } else {
                PingVerdict::Rejected
            }
        })
    }

    fn transport_authenticated(&self, id: DeferredId) -> BoxFuture<PingVerdict> {
        let ok = id.secret() == "live";
        Box::pin(async move {
            if ok {
                PingVerdict::Woken
            } else {
                PingVerdict::Rejected
            }
        })
    }
}

#[tokio::test]
async fn through_the_receiver_every_refusal_is_the_same_answer() {
    let root = ca("OP root");
    let issuing = intermediate("OP issuing CA", &root);
    let good = PeerCertificate::new(leaf(&issuing)).with_intermediates([issuing.der().to_vec()]);
    let no_chain = PeerCertificate::new(leaf(&issuing));
    let wrong_subject = PeerCertificate::new(leaf_with(&issuing, "x.example", |_| {}))
        .with_intermediates([issuing.der().to_vec()]);
    let other_ca = PeerCertificate::new(leaf(&ca("OP root")));
    let garbage = PeerCertificate::new(b"\x30\x82garbage".to_vec());
    let clock = Arc::new(ManualClock::new(NOW));
    for require_bearer in [false, true] {
        let r = PingReceiver::new(Arc::new(Sink))
            .with_clock(clock.clone())
            .mtls(
                PingMtls::new()
                    .trust_ca_pem(root.pem(), dn())
                    .unwrap()
                    .require_bearer(require_bearer),
            );
        let ping = |peer: Option<&PeerCertificate>, auth: Option<&'static str>| {
            let r = r.clone();
            let peer = peer.cloned();
            async move {
                let req = http::Request::builder()
                    .method("POST")
                    .header("content-type", "application/json");
                let req = match auth {
                    Some(a) => req.header("authorization", a),
                    None => req,
                };
                let mut req = req
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                        br#"{"deferred_auth_id":"live"}"#,
                    )))
                    .unwrap();
                if let Some(p) = peer {
                    req.extensions_mut().insert(p);
                }
                let resp = r.handle(req).await;
                let mut headers: Vec<_> = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {v:?}"))
                    .collect();
                headers.sort();
                (resp.status().as_u16(), headers)
            }
        };
        clock.set(NOW);
        let with_token = ping(Some(&good), Some("Bearer right")).await;
        assert_eq!(with_token.0, 204, "require_bearer={require_bearer}");
        let without_token = ping(Some(&good), None).await;
        assert_eq!(without_token.0, if require_bearer { 401 } else { 204 });
        let mut refused = Vec::new();
        for auth in [None, Some("Bearer right"), Some("Bearer wrong")] {
            for peer in [
                None,
                Some(&no_chain),
                Some(&wrong_subject),
                Some(&other_ca),
                Some(&garbage),
            ] {
                refused.push(ping(peer, auth).await);
            }
        }
        refused.push(ping(Some(&good), Some("Bearer wrong")).await);
        // Expired by the receiver's clock.
        clock.set(UnixTime::from_secs(1_950_000_000));
        refused.push(ping(Some(&good), Some("Bearer right")).await);
        refused.push(ping(Some(&good), None).await);
        for r in &refused {
            assert_eq!(r.0, 401);
            assert_eq!(r, &refused[0], "every refusal is the same answer");
        }
        // The raw entry points agree.
        clock.set(NOW);
        let body = br#"{"deferred_auth_id":"live"}"#;
        let raw = r
            .handle_raw_with_peer_certificate(
                "POST",
                Some("application/json"),
                Some("Bearer right"),
                body,
                Some(&good),
            )
            .await;
        assert_eq!(raw.kind, PingReplyKind::Woken);
        let leaf_only = r
            .handle_raw_with_peer(
                "POST",
                Some("application/json"),
                Some("Bearer right"),
                body,
                Some(good.der()),
            )
            .await;
        assert_eq!(
            leaf_only.kind,
            PingReplyKind::Unauthorized,
            "the chain needs the intermediate"
        );
    }
}
