//! The claims of a validated ID token.
//!
//! The protocol claims the validator checks (`iss`, `sub`, `aud`, `exp`,
//! `iat`, `nbf`, `auth_time`, `nonce`, `azp`, `at_hash`, `acr`, `amr`,
//! `sid`) are parsed strictly into typed fields. Every other claim (the
//! standard profile claims of OpenID Connect Core §5.1, OpenID Connect for
//! Identity Assurance `verified_claims`, and anything the OP adds) is kept as
//! JSON and read through typed accessors, [`IdTokenClaims::claim`], or
//! deserialised into the caller's own type with
//! [`IdTokenClaims::deserialize_into`].
//!
//! Profile claims are read leniently: a claim with an unexpected type reads
//! as `None` from its typed accessor but stays available as raw JSON, so an
//! OP that sends `"email_verified": "true"` does not fail the login.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::ValidationError;
use crate::json::StrictValue;
use crate::secret::Fingerprint;
use crate::time::UnixTime;

/// The claims of an ID token (or interim ID token) that passed validation.
///
/// `Debug` shows the protocol claims and the *names* of the other claims,
/// never personal data (`sub` appears as a fingerprint).
///
/// Serialises to the JSON object it was read from.
#[derive(Clone, PartialEq, Eq)]
pub struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    /// `aud` was a single string rather than an array (kept for
    /// round-tripping).
    aud_single: bool,
    exp: i64,
    iat: i64,
    nbf: Option<i64>,
    auth_time: Option<i64>,
    nonce: Option<String>,
    azp: Option<String>,
    at_hash: Option<String>,
    acr: Option<String>,
    amr: Option<Vec<String>>,
    sid: Option<String>,
    other: Map<String, Value>,
}

impl fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenClaims")
            .field("iss", &self.iss)
            .field("sub", &Fingerprint::of(self.sub.as_bytes()))
            .field("aud", &self.aud)
            .field("exp", &self.exp)
            .field("iat", &self.iat)
            .field("auth_time", &self.auth_time)
            .field("acr", &self.acr)
            .field("other", &self.other.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A postal address (OpenID Connect Core §5.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Address {
    /// The full address, formatted for display.
    pub formatted: Option<String>,
    /// Street address (may span lines).
    pub street_address: Option<String>,
    /// City or locality.
    pub locality: Option<String>,
    /// State, province, prefecture or region.
    pub region: Option<String>,
    /// Zip or postal code.
    pub postal_code: Option<String>,
    /// Country name.
    pub country: Option<String>,
}

/// The protocol claims, which are validated and typed.
const PROTOCOL: [&str; 13] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "auth_time",
    "nonce",
    "azp",
    "at_hash",
    "acr",
    "amr",
    "sid",
];

/// The protocol claims as they came, before type checks.
#[derive(Default)]
struct Protocol {
    iss: Option<Value>,
    sub: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    auth_time: Option<Value>,
    nonce: Option<Value>,
    azp: Option<Value>,
    at_hash: Option<Value>,
    acr: Option<Value>,
    amr: Option<Value>,
    sid: Option<Value>,
}

impl Protocol {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Value>> {
        Some(match name {
            "iss" => &mut self.iss,
            "sub" => &mut self.sub,
            "aud" => &mut self.aud,
            "exp" => &mut self.exp,
            "iat" => &mut self.iat,
            "nbf" => &mut self.nbf,
            "auth_time" => &mut self.auth_time,
            "nonce" => &mut self.nonce,
            "azp" => &mut self.azp,
            "at_hash" => &mut self.at_hash,
            "acr" => &mut self.acr,
            "amr" => &mut self.amr,
            "sid" => &mut self.sid,
            _ => return None,
        })
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a claims object in one pass: protocol claims into their slots
/// (each at most once), everything else into the map. No intermediate map
/// of all claims is built: this is on the validation hot path.
///
/// A member name twice, at any depth, is refused (the top-level claim
/// names here, the members of every nested value by
/// [`StrictValue`](crate::json::StrictValue)): serde_json would keep the
/// last one, so `{"verified_claims": {"claims": {...}, "claims": {}}}`
/// would mean what another reader might not see. The duplicate's name is
/// left in the seed's slot.
struct Claims(Protocol, Map<String, Value>);

struct ClaimsSeed<'a>(StrictValue<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let strict = self.0;
        let mut p = Protocol::default();
        let mut other = Map::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match p.slot(&k) {
                Some(slot) => {
                    if slot.is_some() {
                        return Err(strict.duplicate(&k));
                    }
                    *slot = Some(map.next_value_seed(strict)?);
                }
                None => {
                    let v = map.next_value_seed(strict)?;
                    match other.entry(k.into_owned()) {
                        serde_json::map::Entry::Occupied(e) => {
                            return Err(strict.duplicate(e.key()));
                        }
                        serde_json::map::Entry::Vacant(e) => {
                            e.insert(v);
                        }
                    }
                }
            }
        }
        Ok(Claims(p, other))
    }
}

fn string(v: Option<Value>, name: &str) -> Result<Option<String>, ValidationError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ValidationError::invalid_claim(
            name,
            format!("must be a string, got {}", crate::json::type_name(&v)),
        )),
    }
}

fn required_string(v: Option<Value>, name: &str) -> Result<String, ValidationError> {
    match string(v, name)? {
        None => Err(ValidationError::missing_claim(name)),
        Some(s) if s.is_empty() => Err(ValidationError::invalid_claim(name, "is empty")),
        Some(s) => Ok(s),
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, fractions allowed
/// (rounded down).
fn time(v: Option<Value>, name: &str) -> Result<Option<i64>, ValidationError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Some(i64::try_from(u).unwrap_or(i64::MAX)))
            } else {
                match n.as_f64() {
                    // `as` saturates for out-of-range floats.
                    Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                    _ => Err(ValidationError::invalid_claim(
                        name,
                        "is not a finite number",
                    )),
                }
            }
        }
        Some(v) => Err(ValidationError::invalid_claim(
            name,
            format!(
                "must be a number (NumericDate), got {}",
                crate::json::type_name(&v)
            ),
        )),
    }
}

fn required_time(v: Option<Value>, name: &str) -> Result<i64, ValidationError> {
    time(v, name)?.ok_or_else(|| ValidationError::missing_claim(name))
}

fn strings(items: Vec<Value>, name: &str, what: &str) -> Result<Vec<String>, ValidationError> {
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(ValidationError::invalid_claim(name, what)),
        })
        .collect()
}

impl IdTokenClaims {
    /// Reads the claims from a JWT payload (JSON bytes), checking the types
    /// of the protocol claims and that `iss`, `sub`, `aud`, `exp` and `iat`
    /// are present. Does not check their values: that is the validator's job.
    pub(crate) fn from_payload(payload: &[u8]) -> Result<Self, ValidationError> {
        let slot = std::cell::RefCell::new(None);
        let mut de = serde_json::Deserializer::from_slice(payload);
        let parsed =
            serde::de::DeserializeSeed::deserialize(ClaimsSeed(StrictValue(&slot)), &mut de)
                .and_then(|c| de.end().map(|()| c));
        let Claims(p, other) = parsed.map_err(|e| {
            let reason = match slot.into_inner() {
                // A name, never a value.
                Some(name) => format!(
                    "the member `{}` appears twice",
                    crate::error::sanitize(&name, 64)
                ),
                None => format!("not a JSON object ({})", json_category(&e)),
            };
            ValidationError::malformed("claims", reason)
        })?;
        Self::from_parts(p, other)
    }

    pub(crate) fn from_map(mut m: Map<String, Value>) -> Result<Self, ValidationError> {
        let mut p = Protocol::default();
        for name in PROTOCOL {
            if let Some(slot) = p.slot(name) {
                *slot = m.remove(name);
            }
        }
        Self::from_parts(p, m)
    }

    fn from_parts(p: Protocol, other: Map<String, Value>) -> Result<Self, ValidationError> {
        let iss = required_string(p.iss, "iss")?;
        let sub = required_string(p.sub, "sub")?;
        let bad_aud =
            || ValidationError::invalid_claim("aud", "must be a string or an array of strings");
        let (aud, aud_single) = match p.aud {
            None | Some(Value::Null) => return Err(ValidationError::missing_claim("aud")),
            Some(Value::String(s)) => (vec![s], true),
            Some(Value::Array(items)) => {
                let out = strings(items, "aud", "must be a string or an array of strings")?;
                if out.is_empty() {
                    return Err(ValidationError::invalid_claim("aud", "is an empty array"));
                }
                (out, false)
            }
            Some(_) => return Err(bad_aud()),
        };
        let exp = required_time(p.exp, "exp")?;
        let iat = required_time(p.iat, "iat")?;
        let amr = match p.amr {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                Some(strings(items, "amr", "must be an array of strings")?)
            }
            Some(_) => {
                return Err(ValidationError::invalid_claim(
                    "amr",
                    "must be an array of strings",
                ));
            }
        };
        Ok(IdTokenClaims {
            iss,
            sub,
            aud,
            aud_single,
            exp,
            iat,
            nbf: time(p.nbf, "nbf")?,
            auth_time: time(p.auth_time, "auth_time")?,
            nonce: string(p.nonce, "nonce")?,
            azp: string(p.azp, "azp")?,
            at_hash: string(p.at_hash, "at_hash")?,
            acr: string(p.acr, "acr")?,
            amr,
            sid: string(p.sid, "sid")?,
            other,
        })
    }

    /// All claims as one JSON object, as the OP sent them.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.other.clone();
        m.insert("iss".into(), Value::String(self.iss.clone()));
        m.insert("sub".into(), Value::String(self.sub.clone()));
        m.insert(
            "aud".into(),
            if self.aud_single && self.aud.len() == 1 {
                Value::String(self.aud[0].clone())
            } else {
                Value::Array(self.aud.iter().cloned().map(Value::String).collect())
            },
        );
        m.insert("exp".into(), Value::from(self.exp));
        m.insert("iat".into(), Value::from(self.iat));
        let mut opt = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        opt("nbf", self.nbf.map(Value::from));
        opt("auth_time", self.auth_time.map(Value::from));
        opt("nonce", self.nonce.clone().map(Value::String));
        opt("azp", self.azp.clone().map(Value::String));
        opt("at_hash", self.at_hash.clone().map(Value::String));
        opt("acr", self.acr.clone().map(Value::String));
        opt(
            "amr",
            self.amr
                .as_ref()
                .map(|a| Value::Array(a.iter().cloned().map(Value::String).collect())),
        );
        opt("sid", self.sid.clone().map(Value::String));
        m
    }

    /// Deserialises all claims into the caller's own type (for example a
    /// struct with the profile claims the application uses, or a
    /// `verified_claims` schema).
    pub fn deserialize_into<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Object(self.to_json()))
    }

    // ---------------------------------------------------- protocol claims

    /// `iss`: the issuer identifier (checked to be the OP's).
    pub fn issuer(&self) -> &str {
        &self.iss
    }
    /// `sub`: the End-User's identifier at the issuer. With `iss`, the only
    /// stable key for a user account.
    pub fn subject(&self) -> &str {
        &self.sub
    }
    /// `aud`: the audiences (the client id among them).
    pub fn audiences(&self) -> &[String] {
        &self.aud
    }
    /// `exp`: when the token expires.
    pub fn expiration(&self) -> UnixTime {
        secs_to_time(self.exp)
    }
    /// `iat`: when the token was issued.
    pub fn issued_at(&self) -> UnixTime {
        secs_to_time(self.iat)
    }
    /// `nbf`: not valid before, if present.
    pub fn not_before(&self) -> Option<UnixTime> {
        self.nbf.map(secs_to_time)
    }
    /// `auth_time`: when the End-User authenticated, if present.
    pub fn auth_time(&self) -> Option<UnixTime> {
        self.auth_time.map(secs_to_time)
    }
    /// `azp`: the authorized party, if present.
    pub fn authorized_party(&self) -> Option<&str> {
        self.azp.as_deref()
    }
    /// `acr`: the Authentication Context Class Reference, if present.
    pub fn acr(&self) -> Option<&str> {
        self.acr.as_deref()
    }
    /// `amr`: the Authentication Methods References, if present.
    pub fn amr(&self) -> Option<&[String]> {
        self.amr.as_deref()
    }
    /// `sid`: the session id (Front-/Back-Channel Logout), if present.
    pub fn session_id(&self) -> Option<&str> {
        self.sid.as_deref()
    }
    /// `at_hash`, if present (already checked against the access token).
    pub fn access_token_hash(&self) -> Option<&str> {
        self.at_hash.as_deref()
    }
    /// `nonce` (already checked against the authentication request's).
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }
    pub(crate) fn raw_exp(&self) -> i64 {
        self.exp
    }
    pub(crate) fn raw_iat(&self) -> i64 {
        self.iat
    }
    pub(crate) fn raw_nbf(&self) -> Option<i64> {
        self.nbf
    }
    pub(crate) fn raw_auth_time(&self) -> Option<i64> {
        self.auth_time
    }

    // ------------------------------------------------ any claim, as JSON

    /// Any claim other than the protocol claims, as JSON (`None` if absent).
    /// Protocol claims have typed accessors.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.other.get(name)
    }

    /// Every claim other than the protocol claims (profile claims,
    /// `verified_claims`, the OP's own).
    pub fn other_claims(&self) -> &Map<String, Value> {
        &self.other
    }

    /// Whether `name` is one of the typed protocol claims.
    pub fn is_protocol_claim(name: &str) -> bool {
        PROTOCOL.contains(&name)
    }

    /// OpenID Connect for Identity Assurance `verified_claims` (an object or
    /// an array of objects), if present.
    pub fn verified_claims(&self) -> Option<&Value> {
        self.other.get("verified_claims")
    }

    // ------------------------------------- standard claims (Core §5.1)

    fn text(&self, name: &str) -> Option<&str> {
        self.other.get(name).and_then(Value::as_str)
    }

    fn flag(&self, name: &str) -> Option<bool> {
        match self.other.get(name)? {
            Value::Bool(b) => Some(*b),
            // Some OPs send booleans as strings.
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// `name`: full name.
    pub fn name(&self) -> Option<&str> {
        self.text("name")
    }
    /// `given_name`.
    pub fn given_name(&self) -> Option<&str> {
        self.text("given_name")
    }
    /// `family_name`.
    pub fn family_name(&self) -> Option<&str> {
        self.text("family_name")
    }
    /// `middle_name`.
    pub fn middle_name(&self) -> Option<&str> {
        self.text("middle_name")
    }
    /// `nickname`.
    pub fn nickname(&self) -> Option<&str> {
        self.text("nickname")
    }
    /// `preferred_username` (not unique, not stable: never a user key).
    pub fn preferred_username(&self) -> Option<&str> {
        self.text("preferred_username")
    }
    /// `profile`: profile page URL.
    pub fn profile(&self) -> Option<&str> {
        self.text("profile")
    }
    /// `picture`: picture URL.
    pub fn picture(&self) -> Option<&str> {
        self.text("picture")
    }
    /// `website`.
    pub fn website(&self) -> Option<&str> {
        self.text("website")
    }
    /// `email` (check [`email_verified`](Self::email_verified) before
    /// trusting it).
    pub fn email(&self) -> Option<&str> {
        self.text("email")
    }
    /// `email_verified` (a boolean, or the strings `"true"`/`"false"`).
    pub fn email_verified(&self) -> Option<bool> {
        self.flag("email_verified")
    }
    /// `gender`.
    pub fn gender(&self) -> Option<&str> {
        self.text("gender")
    }
    /// `birthdate` (`YYYY-MM-DD`, or `YYYY`, as sent).
    pub fn birthdate(&self) -> Option<&str> {
        self.text("birthdate")
    }
    /// `zoneinfo`: IANA time zone.
    pub fn zoneinfo(&self) -> Option<&str> {
        self.text("zoneinfo")
    }
    /// `locale`: BCP 47 language tag.
    pub fn locale(&self) -> Option<&str> {
        self.text("locale")
    }
    /// `phone_number`.
    pub fn phone_number(&self) -> Option<&str> {
        self.text("phone_number")
    }
    /// `phone_number_verified`.
    pub fn phone_number_verified(&self) -> Option<bool> {
        self.flag("phone_number_verified")
    }
    /// `address`, if present and an object.
    pub fn address(&self) -> Option<Address> {
        match self.other.get("address")? {
            v @ Value::Object(_) => serde_json::from_value(v.clone()).ok(),
            _ => None,
        }
    }
    /// `updated_at`.
    pub fn updated_at(&self) -> Option<UnixTime> {
        let v = self.other.get("updated_at")?;
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(secs_to_time)
    }
}

/// Seconds (possibly negative) to a [`UnixTime`] (the epoch for negatives).
fn secs_to_time(s: i64) -> UnixTime {
    UnixTime::from_secs(u64::try_from(s).unwrap_or(0))
}

fn json_category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "not an object",
        serde_json::error::Category::Eof => "truncated",
    }
}

impl Serialize for IdTokenClaims {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdTokenClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Map::<String, Value>::deserialize(d)?;
        IdTokenClaims::from_map(m).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
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
        v["verified_claims"] = json!({"verification": {"trust_framework": "de_aml"}, "claims": {"given_name": "Jane"}});
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

    #[test]
    fn serde_round_trip_and_debug() {
        let mut v = base();
        v["aud"] = json!(["client", "other"]);
        v["azp"] = json!("client");
        v["nonce"] = json!("n-0S6_WzA2Mj");
        v["email"] = json!("jane@example.com");
        let c = parse(&v).unwrap();
        let back: IdTokenClaims =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
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
}
