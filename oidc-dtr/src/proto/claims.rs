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

// Size note: kept whole (~1150 lines): the borrowed view the validator
// reads and the full reader behind the accessors apply the same claim rules
// (types, duplicate members, numbers) and must agree claim for claim; the
// unit tests compare them. Splitting them would put two readers that must
// change together in two files.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::ValidationError;
use crate::json::StrictValue;
use crate::json::scan::{Fast, Names as ScanNames, Scanner, StrItems};
use crate::secret::Fingerprint;
use crate::time::UnixTime;

/// The claims of an ID token (or interim ID token) that passed validation.
///
/// `Debug` shows the protocol claims and the *names* of the other claims,
/// never personal data (`sub` appears as a fingerprint).
///
/// Serialises to the JSON object it was read from.
///
/// Validation reads the protocol claims it checks straight from the payload
/// (borrowed strings, no JSON tree); this value keeps the payload text and
/// builds the typed claims and the map of the other claims the first time
/// an accessor needs them.
#[derive(Clone)]
pub struct IdTokenClaims {
    /// The payload: a JSON object, valid UTF-8, parsed once already.
    payload: Box<str>,
    times: Times,
    // Boxed: built only when an accessor needs it, and large; without it
    // this value is small enough to live inline in an `IdToken`.
    full: OnceLock<Box<Full>>,
}

/// The NumericDate claims, read eagerly (the validator and the engine use
/// them on every token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) nbf: Option<i64>,
    pub(crate) auth_time: Option<i64>,
}

/// Every claim, typed: built on first use from the payload.
#[derive(Clone, PartialEq, Eq)]
struct Full {
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

impl PartialEq for IdTokenClaims {
    fn eq(&self, other: &Self) -> bool {
        self.times == other.times && self.full() == other.full()
    }
}

impl Eq for IdTokenClaims {}

impl fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.full().fmt(f)
    }
}

impl fmt::Debug for Full {
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

/// The error of a failed claims parse: the duplicate member's name when
/// that is what stopped it (a name, never a value), else the JSON error's
/// category.
fn parse_error(
    slot: &std::cell::RefCell<Option<String>>,
    e: &serde_json::Error,
) -> ValidationError {
    let reason = match slot.borrow_mut().take() {
        Some(name) => format!(
            "the member `{}` appears twice",
            crate::error::sanitize(&name, 64)
        ),
        None => format!("not a JSON object ({})", json_category(e)),
    };
    ValidationError::malformed("claims", reason)
}

/// The payload as text. Invalid UTF-8 gets the error the byte reader gives
/// (it may meet a duplicate member or a syntax error first).
pub(crate) fn payload_text(payload: Vec<u8>) -> Result<String, ValidationError> {
    String::from_utf8(payload).map_err(|e| {
        let bytes = e.into_bytes();
        match ClaimsView::read(serde_json::Deserializer::from_slice(&bytes)) {
            Err(e) => e,
            Ok(_) => ValidationError::malformed("claims", "not a JSON object (syntax error)"),
        }
    })
}

/// A protocol claim's value as the validation path reads it: strings
/// borrowed from the payload, numbers, and only the type of anything else.
enum Lite<'de> {
    Null,
    Bool,
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'de, str>),
    /// An array: its items when they are all strings, else `None`.
    Arr(Option<Vec<Cow<'de, str>>>),
    /// An array of strings without escapes, as the fast reader leaves it:
    /// its text and its length.
    StrArr(&'de str, usize),
    Obj,
}

impl<'de> From<Fast<'de>> for Lite<'de> {
    fn from(v: Fast<'de>) -> Self {
        match v {
            Fast::Null => Lite::Null,
            Fast::Bool => Lite::Bool,
            Fast::Neg(i) => Lite::I64(i),
            Fast::Pos(u) => Lite::U64(u),
            Fast::Str(s) => Lite::Str(Cow::Borrowed(s)),
            Fast::StrArray(text, len) => Lite::StrArr(text, len),
            Fast::Array => Lite::Arr(None),
            Fast::Object => Lite::Obj,
        }
    }
}

impl Lite<'_> {
    /// As [`crate::json::type_name`] names the same value.
    fn type_name(&self) -> &'static str {
        match self {
            Lite::Null => "null",
            Lite::Bool => "a boolean",
            Lite::F64(_) => "a fractional number",
            Lite::I64(i) if *i < 0 => "a negative number",
            Lite::I64(_) | Lite::U64(_) => "a number",
            Lite::Str(_) => "a string",
            Lite::Arr(_) | Lite::StrArr(..) => "an array",
            Lite::Obj => "an object",
        }
    }
}

/// Reads a [`Lite`], refusing duplicate members in nested objects.
#[derive(Clone, Copy)]
struct LiteSeed<'a>(StrictValue<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for LiteSeed<'_> {
    type Value = Lite<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Lite<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for LiteSeed<'_> {
    type Value = Lite<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Lite<'de>, E> {
        Ok(Lite::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Lite<'de>, E> {
        Ok(Lite::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Lite<'de>, E> {
        Ok(Lite::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Lite<'de>, E> {
        // As `Value`: a non-finite number reads as null.
        Ok(if v.is_finite() {
            Lite::F64(v)
        } else {
            Lite::Null
        })
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(v)))
    }
    fn visit_none<E>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }
    fn visit_unit<E>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Lite<'de>, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Lite<'de>, A::Error> {
        let mut items = Some(Vec::new());
        while let Some(v) = seq.next_element_seed(self)? {
            match (v, &mut items) {
                (Lite::Str(s), Some(items)) => items.push(s),
                _ => items = None,
            }
        }
        Ok(Lite::Arr(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Lite<'de>, A::Error> {
        Skip(self.0).visit_map(map)?;
        Ok(Lite::Obj)
    }
}

/// Member names seen in one object: a few on the stack, many in a set.
struct Names<'de> {
    few: [Cow<'de, str>; 8],
    len: usize,
    many: BTreeSet<Cow<'de, str>>,
}

impl<'de> Names<'de> {
    fn new() -> Self {
        Names {
            few: Default::default(),
            len: 0,
            many: BTreeSet::new(),
        }
    }

    /// Adds `name`; gives it back if it was there already.
    fn insert(&mut self, name: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        if self.len < self.few.len() {
            if self.few[..self.len].contains(&name) {
                return Err(name);
            }
            self.few[self.len] = name;
            self.len += 1;
            return Ok(());
        }
        if self.many.is_empty() {
            self.many.extend(self.few.iter_mut().map(std::mem::take));
        }
        if self.many.contains(&name) {
            return Err(name);
        }
        self.many.insert(name);
        Ok(())
    }
}

/// Reads any JSON value and drops it, refusing an object with the same
/// member name twice at any depth, as [`StrictValue`] does, without
/// building the value.
#[derive(Clone, Copy)]
struct Skip<'a>(StrictValue<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for Skip<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Skip<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = Names::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            map.next_value_seed(self)?;
            if let Err(k) = names.insert(k) {
                return Err(self.0.duplicate(&k));
            }
        }
        Ok(())
    }
}

/// The protocol claims as the validation path reads them.
#[derive(Default)]
struct LiteProtocol<'de> {
    iss: Option<Lite<'de>>,
    sub: Option<Lite<'de>>,
    aud: Option<Lite<'de>>,
    exp: Option<Lite<'de>>,
    iat: Option<Lite<'de>>,
    nbf: Option<Lite<'de>>,
    auth_time: Option<Lite<'de>>,
    nonce: Option<Lite<'de>>,
    azp: Option<Lite<'de>>,
    at_hash: Option<Lite<'de>>,
    acr: Option<Lite<'de>>,
    amr: Option<Lite<'de>>,
    sid: Option<Lite<'de>>,
}

impl<'de> LiteProtocol<'de> {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Lite<'de>>> {
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

/// Reads the claims object for validation: protocol claims into their
/// slots (each at most once), every other member checked and dropped.
struct ViewSeed<'a>(StrictValue<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for ViewSeed<'_> {
    type Value = LiteProtocol<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ViewSeed<'_> {
    type Value = LiteProtocol<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let strict = self.0;
        let mut p = LiteProtocol::default();
        let mut names = Names::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match p.slot(&k) {
                Some(slot) => {
                    if slot.is_some() {
                        return Err(strict.duplicate(&k));
                    }
                    *slot = Some(map.next_value_seed(LiteSeed(strict))?);
                }
                None => {
                    map.next_value_seed(Skip(strict))?;
                    if let Err(k) = names.insert(k) {
                        return Err(strict.duplicate(&k));
                    }
                }
            }
        }
        Ok(p)
    }
}

/// Reads the claims object with the fast reader (see
/// [`scan`](crate::json::scan)): protocol claims into their slots, every
/// other member checked (names distinct, nested values well formed) and
/// dropped. `None` when the payload leaves the reader's subset (escapes,
/// fractions, many members...), is not JSON, or repeats a name: serde_json
/// then reads it, with its errors.
fn fast_protocol(payload: &str) -> Option<LiteProtocol<'_>> {
    let mut p = LiteProtocol::default();
    let mut names = ScanNames::new();
    Scanner::new(payload).members(|scan, name| {
        match p.slot(name) {
            Some(slot) => {
                if slot.is_some() {
                    return None;
                }
                *slot = Some(Lite::from(scan.value(0)?));
            }
            None => {
                scan.value(0)?;
                names.insert(name)?;
            }
        }
        Some(())
    })?;
    Some(p)
}

/// The audiences of a token, borrowed.
pub(crate) enum Audiences<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
    /// A JSON array of strings without escapes (its text), and its length.
    Raw(&'a str, usize),
}

/// The items of [`Audiences`].
pub(crate) enum AudienceIter<'s, 'a> {
    Slice(std::slice::Iter<'s, Cow<'a, str>>),
    Raw(StrItems<'a>),
}

impl<'s> Iterator for AudienceIter<'s, '_> {
    type Item = &'s str;
    fn next(&mut self) -> Option<&'s str> {
        match self {
            AudienceIter::Slice(items) => items.next().map(|a| &**a),
            AudienceIter::Raw(items) => items.next(),
        }
    }
}

impl<'a> Audiences<'a> {
    /// The audiences, in order.
    pub(crate) fn iter(&self) -> AudienceIter<'_, 'a> {
        match self {
            Audiences::One(a) => AudienceIter::Slice(std::slice::from_ref(a).iter()),
            Audiences::Many(v) => AudienceIter::Slice(v.iter()),
            Audiences::Raw(text, _) => AudienceIter::Raw(StrItems::new(text)),
        }
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        match self {
            Audiences::One(_) => 1,
            Audiences::Many(v) => v.len(),
            Audiences::Raw(_, len) => *len,
        }
    }
}

/// The protocol claims the validator checks, read from the payload without
/// building a JSON tree or copying the strings it can borrow. Accepts and
/// refuses exactly what the full reader does (the same duplicate rule at
/// every depth, the same type checks in the same order, the same errors).
pub(crate) struct ClaimsView<'a> {
    pub(crate) iss: Cow<'a, str>,
    pub(crate) sub: Cow<'a, str>,
    pub(crate) aud: Audiences<'a>,
    pub(crate) nonce: Option<Cow<'a, str>>,
    pub(crate) azp: Option<Cow<'a, str>>,
    pub(crate) at_hash: Option<Cow<'a, str>>,
    pub(crate) times: Times,
}

fn lite_string<'a>(
    v: Option<Lite<'a>>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, ValidationError> {
    match v {
        None | Some(Lite::Null) => Ok(None),
        Some(Lite::Str(s)) => Ok(Some(s)),
        Some(v) => Err(ValidationError::invalid_claim(
            name,
            format!("must be a string, got {}", v.type_name()),
        )),
    }
}

fn lite_required_string<'a>(
    v: Option<Lite<'a>>,
    name: &str,
) -> Result<Cow<'a, str>, ValidationError> {
    match lite_string(v, name)? {
        None => Err(ValidationError::missing_claim(name)),
        Some(s) if s.is_empty() => Err(ValidationError::invalid_claim(name, "is empty")),
        Some(s) => Ok(s),
    }
}

/// As [`time`].
fn lite_time(v: Option<Lite<'_>>, name: &str) -> Result<Option<i64>, ValidationError> {
    match v {
        None | Some(Lite::Null) => Ok(None),
        Some(Lite::I64(i)) => Ok(Some(i)),
        Some(Lite::U64(u)) => Ok(Some(i64::try_from(u).unwrap_or(i64::MAX))),
        // `as` saturates for out-of-range floats; only finite ones get here.
        Some(Lite::F64(f)) => Ok(Some(f.floor() as i64)),
        Some(v) => Err(ValidationError::invalid_claim(
            name,
            format!("must be a number (NumericDate), got {}", v.type_name()),
        )),
    }
}

impl<'a> ClaimsView<'a> {
    /// Reads and type-checks the protocol claims of `payload`: with the
    /// fast reader when the payload has the common shape, else (and for
    /// every refusal) with serde_json.
    pub(crate) fn parse(payload: &'a str) -> Result<Self, ValidationError> {
        match fast_protocol(payload) {
            Some(p) => Self::check(p),
            None => Self::read(serde_json::Deserializer::from_str(payload)),
        }
    }

    fn read<R: serde_json::de::Read<'a>>(
        mut de: serde_json::Deserializer<R>,
    ) -> Result<Self, ValidationError> {
        let slot = std::cell::RefCell::new(None);
        let parsed = serde::de::DeserializeSeed::deserialize(ViewSeed(StrictValue(&slot)), &mut de)
            .and_then(|c| de.end().map(|()| c));
        Self::check(parsed.map_err(|e| parse_error(&slot, &e))?)
    }

    /// The type checks of the protocol claims, whichever reader read them.
    fn check(p: LiteProtocol<'a>) -> Result<Self, ValidationError> {
        // The checks of `Full::from_parts`, in its order.
        let iss = lite_required_string(p.iss, "iss")?;
        let sub = lite_required_string(p.sub, "sub")?;
        let aud = match p.aud {
            None | Some(Lite::Null) => return Err(ValidationError::missing_claim("aud")),
            Some(Lite::Str(s)) => Audiences::One(s),
            Some(Lite::Arr(Some(items))) => {
                if items.is_empty() {
                    return Err(ValidationError::invalid_claim("aud", "is an empty array"));
                }
                Audiences::Many(items)
            }
            Some(Lite::StrArr(text, len)) => {
                if len == 0 {
                    return Err(ValidationError::invalid_claim("aud", "is an empty array"));
                }
                Audiences::Raw(text, len)
            }
            Some(_) => {
                return Err(ValidationError::invalid_claim(
                    "aud",
                    "must be a string or an array of strings",
                ));
            }
        };
        let exp = lite_time(p.exp, "exp")?.ok_or_else(|| ValidationError::missing_claim("exp"))?;
        let iat = lite_time(p.iat, "iat")?.ok_or_else(|| ValidationError::missing_claim("iat"))?;
        match p.amr {
            None | Some(Lite::Null) | Some(Lite::Arr(Some(_)) | Lite::StrArr(..)) => {}
            Some(_) => {
                return Err(ValidationError::invalid_claim(
                    "amr",
                    "must be an array of strings",
                ));
            }
        }
        let nbf = lite_time(p.nbf, "nbf")?;
        let auth_time = lite_time(p.auth_time, "auth_time")?;
        let nonce = lite_string(p.nonce, "nonce")?;
        let azp = lite_string(p.azp, "azp")?;
        let at_hash = lite_string(p.at_hash, "at_hash")?;
        lite_string(p.acr, "acr")?;
        lite_string(p.sid, "sid")?;
        Ok(ClaimsView {
            iss,
            sub,
            aud,
            nonce,
            azp,
            at_hash,
            times: Times {
                exp,
                iat,
                nbf,
                auth_time,
            },
        })
    }

    /// The NumericDate claims.
    pub(crate) fn times(&self) -> Times {
        self.times
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

impl Full {
    /// Reads every claim, typed; the old single-pass reader, now run once
    /// on a payload [`ClaimsView::parse`] accepted.
    fn parse(payload: &str) -> Result<Self, ValidationError> {
        let slot = std::cell::RefCell::new(None);
        let mut de = serde_json::Deserializer::from_str(payload);
        let parsed =
            serde::de::DeserializeSeed::deserialize(ClaimsSeed(StrictValue(&slot)), &mut de)
                .and_then(|c| de.end().map(|()| c));
        let Claims(p, other) = parsed.map_err(|e| parse_error(&slot, &e))?;
        Self::from_parts(p, other)
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
        Ok(Full {
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
    fn to_json(&self) -> Map<String, Value> {
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
}

impl IdTokenClaims {
    /// Reads the claims from a JWT payload (JSON bytes), checking the types
    /// of the protocol claims and that `iss`, `sub`, `aud`, `exp` and `iat`
    /// are present. Does not check their values: that is the validator's job.
    #[cfg(test)]
    pub(crate) fn from_payload(payload: &[u8]) -> Result<Self, ValidationError> {
        Self::from_payload_vec(payload.to_vec())
    }

    /// [`from_payload`](Self::from_payload), keeping the buffer.
    pub(crate) fn from_payload_vec(payload: Vec<u8>) -> Result<Self, ValidationError> {
        let payload = payload_text(payload)?;
        let times = ClaimsView::parse(&payload)?.times();
        Ok(Self::validated(payload, times))
    }

    /// The claims of `payload`, which [`ClaimsView::parse`] accepted with
    /// these `times`.
    pub(crate) fn validated(payload: String, times: Times) -> Self {
        IdTokenClaims {
            payload: payload.into_boxed_str(),
            times,
            full: OnceLock::new(),
        }
    }

    pub(crate) fn from_map(m: Map<String, Value>) -> Result<Self, ValidationError> {
        let text = serde_json::to_vec(&m)
            .map_err(|_| ValidationError::malformed("claims", "not serialisable"))?;
        Self::from_payload_vec(text)
    }

    /// The typed claims, built on first use.
    fn full(&self) -> &Full {
        self.full.get_or_init(|| {
            // The payload passed `ClaimsView::parse`, which refuses
            // everything `Full::parse` refuses (the same reader rules, the
            // same type checks), so the fallback is never taken; it keeps
            // this path free of panics all the same.
            Box::new(Full::parse(&self.payload).unwrap_or_else(|_| Full {
                iss: String::new(),
                sub: String::new(),
                aud: Vec::new(),
                aud_single: false,
                exp: self.times.exp,
                iat: self.times.iat,
                nbf: self.times.nbf,
                auth_time: self.times.auth_time,
                nonce: None,
                azp: None,
                at_hash: None,
                acr: None,
                amr: None,
                sid: None,
                other: Map::new(),
            }))
        })
    }

    /// The payload as the OP sent it (JSON text).
    pub(crate) fn payload(&self) -> &str {
        &self.payload
    }

    /// All claims as one JSON object, as the OP sent them.
    pub fn to_json(&self) -> Map<String, Value> {
        self.full().to_json()
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
        &self.full().iss
    }
    /// `sub`: the End-User's identifier at the issuer. With `iss`, the only
    /// stable key for a user account.
    pub fn subject(&self) -> &str {
        &self.full().sub
    }
    /// `aud`: the audiences (the client id among them).
    pub fn audiences(&self) -> &[String] {
        &self.full().aud
    }
    /// `exp`: when the token expires.
    pub fn expiration(&self) -> UnixTime {
        secs_to_time(self.times.exp)
    }
    /// `iat`: when the token was issued.
    pub fn issued_at(&self) -> UnixTime {
        secs_to_time(self.times.iat)
    }
    /// `nbf`: not valid before, if present.
    pub fn not_before(&self) -> Option<UnixTime> {
        self.times.nbf.map(secs_to_time)
    }
    /// `auth_time`: when the End-User authenticated, if present.
    pub fn auth_time(&self) -> Option<UnixTime> {
        self.times.auth_time.map(secs_to_time)
    }
    /// `azp`: the authorized party, if present.
    pub fn authorized_party(&self) -> Option<&str> {
        self.full().azp.as_deref()
    }
    /// `acr`: the Authentication Context Class Reference, if present.
    pub fn acr(&self) -> Option<&str> {
        self.full().acr.as_deref()
    }
    /// `amr`: the Authentication Methods References, if present.
    pub fn amr(&self) -> Option<&[String]> {
        self.full().amr.as_deref()
    }
    /// `sid`: the session id (Front-/Back-Channel Logout), if present.
    pub fn session_id(&self) -> Option<&str> {
        self.full().sid.as_deref()
    }
    /// `at_hash`, if present (already checked against the access token).
    pub fn access_token_hash(&self) -> Option<&str> {
        self.full().at_hash.as_deref()
    }
    /// `nonce` (already checked against the authentication request's).
    pub fn nonce(&self) -> Option<&str> {
        self.full().nonce.as_deref()
    }

    // ------------------------------------------------ any claim, as JSON

    /// Any claim other than the protocol claims, as JSON (`None` if absent).
    /// Protocol claims have typed accessors.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.full().other.get(name)
    }

    /// Every claim other than the protocol claims (profile claims,
    /// `verified_claims`, the OP's own).
    pub fn other_claims(&self) -> &Map<String, Value> {
        &self.full().other
    }

    /// Whether `name` is one of the typed protocol claims.
    pub fn is_protocol_claim(name: &str) -> bool {
        PROTOCOL.contains(&name)
    }

    /// OpenID Connect for Identity Assurance `verified_claims` (an object or
    /// an array of objects), if present.
    pub fn verified_claims(&self) -> Option<&Value> {
        self.full().other.get("verified_claims")
    }

    // ------------------------------------- standard claims (Core §5.1)

    fn text(&self, name: &str) -> Option<&str> {
        self.full().other.get(name).and_then(Value::as_str)
    }

    fn flag(&self, name: &str) -> Option<bool> {
        match self.full().other.get(name)? {
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
        match self.full().other.get("address")? {
            v @ Value::Object(_) => serde_json::from_value(v.clone()).ok(),
            _ => None,
        }
    }
    /// `updated_at`.
    pub fn updated_at(&self) -> Option<UnixTime> {
        let v = self.full().other.get("updated_at")?;
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
mod tests;
