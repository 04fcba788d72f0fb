//! Unit tests of the parent module.
use super::*;
use serde_json::json;

fn base() -> Value {
    json!({
        "iss": "https://op.example",
        "sub": "248289761001",
        "aud": "client",
        "exp": 1_900_000_600,
        "iat": 1_900_000_000,
    })
}

fn parse(v: &Value) -> Result<IdTokenClaims, ValidationError> {
    IdTokenClaims::from_payload(v.to_string().as_bytes())
}

#[test]
fn typed_and_other_claims() {
    let mut v = base();
    v["name"] = json!("Jane Doe");
    v["email"] = json!("jane@example.com");
    v["email_verified"] = json!("true");
    v["phone_number_verified"] = json!(false);
    v["address"] = json!({"country": "DE", "locality": "Berlin"});
    v["updated_at"] = json!(1_800_000_000.5);
    v["amr"] = json!(["pwd", "otp"]);
    v["verified_claims"] =
        json!({"verification": {"trust_framework": "de_aml"}, "claims": {"given_name": "Jane"}});
    v["custom"] = json!({"tier": 3});
    v["nbf"] = json!(1_899_999_999.9);
    let c = parse(&v).unwrap();
    assert_eq!(c.subject(), "248289761001");
    assert_eq!(c.audiences(), ["client"]);
    assert_eq!(c.name(), Some("Jane Doe"));
    assert_eq!(c.email_verified(), Some(true));
    assert_eq!(c.phone_number_verified(), Some(false));
    assert_eq!(c.address().unwrap().locality.as_deref(), Some("Berlin"));
    assert_eq!(c.updated_at(), Some(UnixTime::from_secs(1_800_000_000)));
    assert_eq!(c.amr().unwrap(), ["pwd", "otp"]);
    assert_eq!(c.not_before(), Some(UnixTime::from_secs(1_899_999_999)));
    assert_eq!(
        c.verified_claims().unwrap()["verification"]["trust_framework"],
        "de_aml"
    );
    assert_eq!(c.claim("custom").unwrap()["tier"], 3);
    assert!(c.claim("sub").is_none(), "protocol claims are typed");
    assert!(IdTokenClaims::is_protocol_claim("nonce"));

    #[derive(Deserialize)]
    struct Mine {
        sub: String,
        custom: Custom,
    }
    #[derive(Deserialize)]
    struct Custom {
        tier: u8,
    }
    let mine: Mine = c.deserialize_into().unwrap();
    assert_eq!((mine.sub.as_str(), mine.custom.tier), ("248289761001", 3));
}

#[test]
fn lenient_profile_claims() {
    let mut v = base();
    v["email"] = json!(42);
    v["email_verified"] = json!("yes");
    v["address"] = json!("Berlin");
    let c = parse(&v).unwrap();
    assert_eq!(c.email(), None);
    assert_eq!(c.email_verified(), None);
    assert_eq!(c.address(), None);
    assert_eq!(c.claim("email"), Some(&json!(42)));
}

#[test]
fn strict_protocol_claims() {
    for (field, value, missing) in [
        ("iss", Value::Null, true),
        ("sub", Value::Null, true),
        ("aud", Value::Null, true),
        ("exp", Value::Null, true),
        ("iat", Value::Null, true),
        ("iss", json!(5), false),
        ("sub", json!(""), false),
        ("aud", json!([]), false),
        ("aud", json!(["a", 1]), false),
        ("aud", json!({}), false),
        ("exp", json!("1900000600"), false),
        ("iat", json!(true), false),
        ("nbf", json!("x"), false),
        ("auth_time", json!([]), false),
        ("nonce", json!(1), false),
        ("azp", json!(1), false),
        ("at_hash", json!({}), false),
        ("amr", json!("pwd"), false),
        ("amr", json!([1]), false),
    ] {
        let mut v = base();
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        let e = parse(&v).unwrap_err();
        if missing {
            assert_eq!(e, ValidationError::missing_claim(field));
        } else {
            assert!(
                matches!(&e, ValidationError::InvalidClaim { claim, .. } if claim == field),
                "{field}: {e:?}"
            );
        }
    }
    // A protocol claim twice is refused (which one would the OP mean?).
    let dup = br#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1,"sub":"admin"}"#;
    assert_eq!(
        IdTokenClaims::from_payload(dup).unwrap_err(),
        ValidationError::malformed("claims", "the member `sub` appears twice")
    );
    for bad in ["[]", "1", "{", ""] {
        assert!(matches!(
            IdTokenClaims::from_payload(bad.as_bytes()).unwrap_err(),
            ValidationError::Malformed { .. }
        ));
    }
}

/// Issue 22: duplicate members inside non-registered claims and inside
/// `verified_claims` were accepted, the last one winning.
#[test]
fn duplicate_members_are_refused_at_every_depth() {
    let head = r#""iss":"a","sub":"s","aud":"c","exp":2,"iat":1"#;
    for (rest, name) in [
        // A non-registered claim twice at the top level.
        (r#""email":"a@x","email":"admin@x""#, "email"),
        // Inside a non-registered claim.
        (r#""address":{"country":"DE","country":"FR"}"#, "country"),
        (r#""groups":[{"role":"user","role":"admin"}]"#, "role"),
        // Inside verified_claims, at several depths.
        (
            r#""verified_claims":{"verification":{"trust_framework":"a"},"claims":{"given_name":"Max"},"claims":{}}"#,
            "claims",
        ),
        (
            r#""verified_claims":{"verification":{"trust_framework":"a","trust_framework":"b"},"claims":{"x":1}}"#,
            "trust_framework",
        ),
        (
            r#""verified_claims":[{"verification":{"trust_framework":"a"},"claims":{"given_name":"Max","given_name":"Eve"}}]"#,
            "given_name",
        ),
        // An escaped spelling of the same name is the same name.
        (r#""x":{"ab":1,"a\u0062":2}"#, "ab"),
    ] {
        let payload = format!("{{{head},{rest}}}");
        assert_eq!(
            IdTokenClaims::from_payload(payload.as_bytes()).unwrap_err(),
            ValidationError::malformed("claims", format!("the member `{name}` appears twice")),
            "{rest}"
        );
    }
    // The same name in different objects is fine, and the values are
    // those serde_json reads.
    let payload =
        format!(r#"{{{head},"a":{{"k":1}},"b":{{"k":[{{"k":2}},{{"k":3.5}}]}},"n":null}}"#);
    let c = IdTokenClaims::from_payload(payload.as_bytes()).unwrap();
    assert_eq!(c.claim("b"), Some(&json!({"k": [{"k": 2}, {"k": 3.5}]})));
    assert_eq!(c.claim("n"), Some(&Value::Null));
    // Trailing garbage is still refused.
    let payload = format!("{{{head}}} x");
    assert!(IdTokenClaims::from_payload(payload.as_bytes()).is_err());
}

/// The validation reader and the full reader accept the same payloads
/// and refuse the others with the same error.
#[test]
fn view_and_full_reader_agree() {
    let head = r#""iss":"a","sub":"s","aud":"c","exp":2,"iat":1"#;
    let many: String = (0..20).map(|i| format!(r#","c{i}":{i}"#)).collect();
    let mut payloads: Vec<String> = [
        "{}",
        "[]",
        "{",
        "",
        r#"{"iss":"a"}"#,
        r#"{"iss":"","sub":"s","aud":"c","exp":2,"iat":1}"#,
        r#"{"iss":"a","sub":"s","aud":["c","d"],"exp":2.9,"iat":-1}"#,
        r#"{"iss":"a","sub":"s","aud":[],"exp":2,"iat":1}"#,
        r#"{"iss":"a","sub":"s","aud":["c",["d"]],"exp":2,"iat":1}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":18446744073709551615,"iat":1e3}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":-5,"iat":1,"nonce":-1}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1,"acr":2.5}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1,"sid":{}}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1,"amr":["x",1]}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1,"nbf":null,"nonce":null}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1,"x":{"k":[1,{"k":2,"k":3}]}}"#,
        r#"{"iss":"a\u0062","s\u0075b":"s","aud":"c","exp":2,"iat":1}"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":2,"iat":1} x"#,
        r#"{"iss":"a","sub":"s","aud":"c","exp":"2","iat":1}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // More members than the stack list holds: the set takes over.
    payloads.push(format!("{{{head}{many}}}"));
    payloads.push(format!(r#"{{{head}{many},"c3":0}}"#));
    payloads.push(format!(r#"{{{head},"o":{{"a":1{many},"c19":1}}}}"#));
    for p in &payloads {
        let view = ClaimsView::parse(p).map(|v| {
            let aud: Vec<String> = v.aud.iter().map(str::to_owned).collect();
            (v.iss.to_string(), v.sub.to_string(), aud, v.times())
        });
        let full = Full::parse(p).map(|f| {
            let times = Times {
                exp: f.exp,
                iat: f.iat,
                nbf: f.nbf,
                auth_time: f.auth_time,
            };
            (f.iss, f.sub, f.aud, times)
        });
        assert_eq!(view, full, "{p}");
    }
    // Invalid UTF-8 gets the byte reader's error.
    let mut bad = br#"{"iss":"a","iss":"#.to_vec();
    bad.extend([b'"', 0xff, b'"', b'}']);
    assert_eq!(
        IdTokenClaims::from_payload(&bad).unwrap_err(),
        ValidationError::malformed("claims", "the member `iss` appears twice")
    );
    assert!(IdTokenClaims::from_payload(&[b'{', 0xff, b'}']).is_err());
}

#[test]
fn serde_round_trip_and_debug() {
    let mut v = base();
    v["aud"] = json!(["client", "other"]);
    v["azp"] = json!("client");
    v["nonce"] = json!("n-0S6_WzA2Mj");
    v["email"] = json!("jane@example.com");
    let c = parse(&v).unwrap();
    let back: IdTokenClaims = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    assert_eq!(Value::Object(c.to_json()), v);
    let single = parse(&base()).unwrap();
    assert_eq!(Value::Object(single.to_json()), base());
    let dbg = format!("{c:?}");
    for secret in ["248289761001", "jane@example.com", "n-0S6_WzA2Mj"] {
        assert!(!dbg.contains(secret), "{dbg}");
    }
    assert!(dbg.contains("email"), "claim names are shown: {dbg}");
}

/// What a claims view says, for comparisons.
type ViewSummary = (
    String,
    String,
    Vec<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Times,
);

fn summary(v: ClaimsView<'_>) -> ViewSummary {
    (
        v.iss.to_string(),
        v.sub.to_string(),
        v.aud.iter().map(str::to_owned).collect(),
        v.nonce.map(Cow::into_owned),
        v.azp.map(Cow::into_owned),
        v.at_hash.map(Cow::into_owned),
        v.times,
    )
}

/// The fast reader, when it reads a payload at all, gives what serde_json
/// gives: the same claims, or the same refusal of their types.
#[test]
fn fast_and_serde_readers_agree() {
    let members = [
        r#""iss":"a""#,
        r#""iss":"""#,
        r#""iss":7"#,
        r#""sub":"s""#,
        r#""sub":null"#,
        r#""aud":"c""#,
        r#""aud":["c","d"]"#,
        r#""aud":[ "c" ]"#,
        r#""aud":[]"#,
        r#""aud":["c",1]"#,
        r#""aud":{}"#,
        r#""exp":2"#,
        r#""exp":-2"#,
        r#""exp":-0"#,
        r#""nonce":-0"#,
        r#""exp":999999999999999999"#,
        r#""exp":2.5"#,
        r#""exp":"2""#,
        r#""iat":1"#,
        r#""iat":true"#,
        r#""nbf":null"#,
        r#""auth_time":5"#,
        r#""nonce":"n""#,
        r#""nonce":["n"]"#,
        r#""azp":"c""#,
        r#""at_hash":"h""#,
        r#""acr":2"#,
        r#""amr":["pwd","otp"]"#,
        r#""amr":[]"#,
        r#""amr":"pwd""#,
        r#""sid":{}"#,
        r#""name":"Jane""#,
        r#""name":"J\u0061ne""#,
        r#""x":{"k":[1,{"k":2}],"j":null}"#,
        r#""x":{"k":1,"k":2}"#,
        r#""y":[[],[[]],{}]"#,
        r#""é":"é""#,
        r#" "z" : false "#,
    ];
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let (mut fast_reads, mut accepted) = (0, 0);
    for round in 0..20_000 {
        let n = next(10);
        let mut picked: Vec<&str> = (0..n).map(|_| members[next(members.len())]).collect();
        // Mostly a full set of the required claims, in any order.
        if round % 4 != 0 {
            picked.extend([
                r#""iss":"a""#,
                r#""sub":"s""#,
                r#""aud":"c""#,
                r#""exp":2"#,
                r#""iat":1"#,
            ]);
            for i in (1..picked.len()).rev() {
                picked.swap(i, next(i + 1));
            }
        }
        let mut text = format!("{{{}}}", picked.join(","));
        if round % 50 == 0 {
            // Now and then broken.
            let cut = next(text.len());
            if text.is_char_boundary(cut) {
                text.truncate(cut);
            }
        }
        let slow = ClaimsView::read(serde_json::Deserializer::from_str(&text)).map(summary);
        let Some(p) = fast_protocol(&text) else {
            continue;
        };
        fast_reads += 1;
        let fast = ClaimsView::check(p).map(summary);
        accepted += usize::from(fast.is_ok());
        assert_eq!(fast, slow, "{text}");
    }
    assert!(
        fast_reads > 3000 && accepted > 1000,
        "{fast_reads} {accepted}"
    );
}
