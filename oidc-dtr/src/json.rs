//! Field-by-field reading of JSON objects from the network, with errors that
//! name the member and its problem but never echo its value.

use serde_json::{Map, Value};

pub(crate) mod scan;

use crate::error::ResponseError;

/// A parsed JSON object plus the name of the message it came from.
pub(crate) struct JsonObject {
    pub(crate) map: Map<String, Value>,
    context: &'static str,
    /// Top-level members whose number was written with a fraction or an
    /// exponent (empty, and not allocated, in the common case).
    non_integer: Vec<String>,
}

/// The JSON type of a value, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.is_i64() && n.as_i64().is_some_and(|i| i < 0) => "a negative number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The longest OP-issued handle accepted (`deferred_auth_id`,
/// `deferral_code`, `device_code`, `user_code`), in bytes: 4 KiB. Handles
/// are kept in memory and in the store for every pending authentication
/// and sent back with every poll, so an unbounded one would let a faulty or
/// hostile OP fill both.
pub(crate) const MAX_HANDLE_BYTES: usize = 4096;

/// What [`from_slice_strict`] refuses.
#[derive(Debug)]
pub(crate) enum StrictJsonError {
    /// A member name appears twice in one object, at any depth (the name,
    /// unescaped; a name, never a value).
    Duplicate(String),
    /// Not JSON (or nested deeper than serde_json's limit).
    Json(serde_json::Error),
}

/// A [`DeserializeSeed`](serde::de::DeserializeSeed) that builds a
/// [`Value`] like serde_json's own, but refuses an object with the same
/// member name twice, at every depth. serde_json's map keeps the last of
/// duplicate members silently, so `{"token_type":"DPoP","token_type":"Bearer"}`
/// or two `claims` inside a `verified_claims` element would mean what the
/// last one says, while another reader could take the first. Building the
/// value and checking is one pass: inserting a member into the map already
/// says whether the name was there, so the check costs nothing per member.
///
/// The name of the first duplicate is left in the shared slot; the error
/// itself is a serde_json "custom" error.
#[derive(Clone, Copy)]
pub(crate) struct StrictValue<'a>(pub(crate) &'a std::cell::RefCell<Option<String>>);

impl StrictValue<'_> {
    /// Records `name` as the duplicate and returns the error that stops the
    /// parse.
    pub(crate) fn duplicate<E: serde::de::Error>(self, name: &str) -> E {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(name.to_owned());
        }
        E::custom("duplicate member")
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            match out.entry(name) {
                serde_json::map::Entry::Occupied(e) => return Err(self.duplicate(e.key())),
                serde_json::map::Entry::Vacant(e) => {
                    e.insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON text into a [`Value`], refusing duplicate member names at
/// every depth (see [`StrictValue`]).
pub(crate) fn from_slice_strict(body: &[u8]) -> Result<Value, StrictJsonError> {
    let slot = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(StrictValue(&slot), &mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => match slot.into_inner() {
            Some(name) => Err(StrictJsonError::Duplicate(name)),
            None => Err(StrictJsonError::Json(e)),
        },
    }
}

/// The names of the top-level members of a JSON object whose value is a
/// number written with a fraction or an exponent (`7.0`, `1e3`). Only
/// called when a top-level number did not fit an integer type, which is
/// rare: serde_json parses both `1e300` and an integer literal beyond `u64`
/// as a float, and only the text tells them apart.
fn non_integer_literals(body: &[u8], map: &Map<String, Value>) -> Vec<String> {
    type Members<'a> = std::collections::BTreeMap<String, &'a serde_json::value::RawValue>;
    let Ok(members) = serde_json::from_slice::<Members<'_>>(body) else {
        // Cannot happen (the body parsed a moment ago); if it did, every
        // float counts as written with a fraction or an exponent.
        return map
            .iter()
            .filter(|(_, v)| matches!(v, Value::Number(n) if n.is_f64()))
            .map(|(k, _)| k.clone())
            .collect();
    };
    members
        .into_iter()
        .filter(|(_, raw)| {
            let t = raw.get().as_bytes();
            t.first().is_some_and(|b| b.is_ascii_digit() || *b == b'-')
                && t.iter().any(|b| matches!(b, b'.' | b'e' | b'E'))
        })
        .map(|(name, _)| name)
        .collect()
}

impl JsonObject {
    /// Parses `body` as a JSON object. A member name that appears twice in
    /// any object of the body, at any depth, is refused: serde_json would
    /// keep the last one silently (a second `token_type` could turn `DPoP`
    /// into `Bearer`, a second `kid` inside a JWK pick another key).
    pub(crate) fn parse(body: &[u8], context: &'static str) -> Result<Self, ResponseError> {
        // serde_json limits nesting depth (128), so hostile input cannot
        // overflow the stack.
        match from_slice_strict(body) {
            Ok(Value::Object(map)) => {
                let non_integer = if map
                    .values()
                    .any(|v| matches!(v, Value::Number(n) if n.is_f64()))
                {
                    non_integer_literals(body, &map)
                } else {
                    Vec::new()
                };
                Ok(JsonObject {
                    map,
                    context,
                    non_integer,
                })
            }
            Ok(other) => Err(ResponseError::new(
                context,
                None,
                format!("the body is {}, not a JSON object", type_name(&other)),
            )),
            Err(StrictJsonError::Duplicate(name)) => Err(ResponseError::new(
                context,
                None,
                format!(
                    "member `{}` appears more than once",
                    crate::error::sanitize(&name, 64)
                ),
            )),
            Err(StrictJsonError::Json(e)) => Err(ResponseError::new(
                context,
                None,
                format!("the body is not JSON ({})", e.classify_str()),
            )),
        }
    }

    pub(crate) fn err(&self, field: &'static str, problem: impl Into<String>) -> ResponseError {
        ResponseError::new(self.context, Some(field), problem)
    }

    /// The member, treating `null` as absent.
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A required, non-empty string.
    pub(crate) fn required_str(&self, field: &'static str) -> Result<&str, ResponseError> {
        match self.optional_str(field)? {
            Some("") => Err(self.err(field, "is empty")),
            Some(s) => Ok(s),
            None => Err(self.err(field, "is missing")),
        }
    }

    /// A required, non-empty OP-issued handle (`deferred_auth_id`,
    /// `deferral_code`, `device_code`, `user_code`) of at most
    /// [`MAX_HANDLE_BYTES`] bytes.
    pub(crate) fn required_handle(&self, field: &'static str) -> Result<&str, ResponseError> {
        let s = self.required_str(field)?;
        self.check_handle(field, s)?;
        Ok(s)
    }

    /// An optional handle: see [`required_handle`](Self::required_handle).
    pub(crate) fn optional_handle(
        &self,
        field: &'static str,
    ) -> Result<Option<&str>, ResponseError> {
        match self.optional_str(field)? {
            Some("") => Err(self.err(field, "is empty")),
            Some(s) => {
                self.check_handle(field, s)?;
                Ok(Some(s))
            }
            None => Ok(None),
        }
    }

    fn check_handle(&self, field: &'static str, s: &str) -> Result<(), ResponseError> {
        if s.len() > MAX_HANDLE_BYTES {
            return Err(self.err(field, format!("is longer than {MAX_HANDLE_BYTES} bytes")));
        }
        Ok(())
    }

    /// An optional string.
    pub(crate) fn optional_str(&self, field: &'static str) -> Result<Option<&str>, ResponseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(field, format!("must be a string, got {}", type_name(v)))),
        }
    }

    /// An optional boolean.
    pub(crate) fn optional_bool(&self, field: &'static str) -> Result<Option<bool>, ResponseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(field, format!("must be a boolean, got {}", type_name(v)))),
        }
    }

    /// An optional array of strings.
    pub(crate) fn optional_str_array(
        &self,
        field: &'static str,
    ) -> Result<Option<Vec<String>>, ResponseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        field,
                        format!("must be an array of strings, found {}", type_name(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.err(field, format!("must be an array, got {}", type_name(v)))),
        }
    }

    /// An optional positive integer (`expires_in`, `interval`).
    ///
    /// Rejects 0, negatives, non-numbers, and numbers written with a
    /// fraction or an exponent (`7.0`, `1e3`, `1e300`): the members are
    /// JSON integers, and an exponent form is how an absurd value hides.
    /// Integer literals too large for `u64` (which JSON allows) saturate to
    /// `u64::MAX` instead of failing: the draft says clients SHOULD accept
    /// arbitrarily large values.
    pub(crate) fn optional_positive_int(
        &self,
        field: &'static str,
    ) -> Result<Option<u64>, ResponseError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let Value::Number(n) = v else {
            return Err(self.err(
                field,
                format!("must be a positive integer, got {}", type_name(v)),
            ));
        };
        if let Some(u) = n.as_u64() {
            return if u == 0 {
                Err(self.err(field, "must be a positive integer, got 0"))
            } else {
                Ok(Some(u))
            };
        }
        if n.is_i64() {
            return Err(self.err(field, "must be a positive integer, got a negative number"));
        }
        if self.non_integer.iter().any(|name| name == field) {
            return Err(self.err(
                field,
                "must be a positive integer, got a number with a fraction or an exponent",
            ));
        }
        // An integer literal beyond `u64` (serde_json parses those as f64).
        match n.as_f64() {
            Some(f) if f > 0.0 => Ok(Some(u64::MAX)),
            _ => Err(self.err(field, "must be a positive integer, got a negative number")),
        }
    }
}

/// `serde_json::Error::classify` as text, without the input excerpt.
trait ClassifyStr {
    fn classify_str(&self) -> &'static str;
}

impl ClassifyStr for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> JsonObject {
        JsonObject::parse(s.as_bytes(), "test message").unwrap()
    }

    #[test]
    fn positive_int_rules() {
        let o = obj(
            r#"{"a":5,"zero":0,"neg":-3,"frac":1.5,"str":"5","huge":123456789012345678901234567890,
               "big":18446744073709551615,"exp":1e3,"null":null,"float_int":7.0,"bool":true}"#,
        );
        assert_eq!(o.optional_positive_int("a").unwrap(), Some(5));
        assert_eq!(o.optional_positive_int("missing").unwrap(), None);
        assert_eq!(o.optional_positive_int("null").unwrap(), None);
        assert_eq!(o.optional_positive_int("huge").unwrap(), Some(u64::MAX));
        assert_eq!(o.optional_positive_int("big").unwrap(), Some(u64::MAX));
        for bad in ["zero", "neg", "frac", "str", "bool", "exp", "float_int"] {
            let e = o.optional_positive_int(bad).unwrap_err();
            assert_eq!(e.field, Some(bad));
            assert!(e.to_string().contains("positive integer"), "{e}");
        }
        let e = o.optional_positive_int("str").unwrap_err();
        assert!(e.to_string().contains("got a string"), "{e}");
    }

    #[test]
    fn not_an_object() {
        for body in ["[1]", "\"x\"", "", "<html>", "{\"a\":", "null"] {
            let e = JsonObject::parse(body.as_bytes(), "ctx").err().unwrap();
            assert_eq!(e.field, None);
            assert!(e.to_string().starts_with("invalid ctx"), "{e}");
        }
    }

    #[test]
    fn duplicate_members_are_refused() {
        for body in [
            r#"{"token_type":"DPoP","access_token":"x","token_type":"Bearer"}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let e = JsonObject::parse(body.as_bytes(), "ctx").err().unwrap();
            assert!(e.to_string().contains("more than once"), "{e}");
        }
        let e = JsonObject::parse(br#"{"t":1,"t":2}"#, "ctx").err().unwrap();
        assert!(e.to_string().contains("`t`"), "{e}");
        // The same name in two different objects is fine.
        assert!(
            JsonObject::parse(br#"{"a":{"b":1},"c":{"b":2},"d":[{"b":1},{"b":2}]}"#, "ctx").is_ok()
        );
    }

    /// Issue 22: a duplicate member inside a nested object (a JWK, a
    /// `verified_claims` element, an `authorization_details` entry) was kept
    /// last-wins.
    #[test]
    fn duplicate_members_are_refused_at_every_depth() {
        for (body, name) in [
            (r#"{"keys":[{"kid":"a","n":"x","n":"y"}]}"#, "n"),
            (r#"{"a":{"b":{"c":1,"c":2}}}"#, "c"),
            (r#"{"a":[1,[{"x":0}],{"d":1,"\u0064":2}]}"#, "d"),
        ] {
            let e = JsonObject::parse(body.as_bytes(), "ctx").err().unwrap();
            assert_eq!(e.field, None);
            assert!(
                e.to_string()
                    .contains(&format!("`{name}` appears more than once")),
                "{e}"
            );
        }
        match from_slice_strict(br#"{"a":{"b":1,"b":2}}"#) {
            Err(StrictJsonError::Duplicate(name)) => assert_eq!(name, "b"),
            other => panic!("{other:?}"),
        }
        // Trailing bytes are an error, as with serde_json::from_slice.
        assert!(matches!(
            from_slice_strict(b"{} x"),
            Err(StrictJsonError::Json(_))
        ));
        // Same values as serde_json's own parse otherwise.
        let body = br#"{"a":[1,-2,3.5,1e3,"s",null,true,{"n":{}}],"u":18446744073709551615}"#;
        assert_eq!(
            from_slice_strict(body).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
    }

    /// Issue 22: `interval: 1e300` was accepted (and saturated), as was any
    /// other exponent or fraction form of an integer.
    #[test]
    fn exponent_and_fraction_forms_are_refused_long_integers_saturate() {
        for lit in ["1e300", "1E3", "1e+2", "7.0", "60.5", "1.0e1", "5e0"] {
            for field in ["interval", "expires_in"] {
                let body = format!(r#"{{"x":1,"{field}":{lit}}}"#);
                let o = JsonObject::parse(body.as_bytes(), "ctx").unwrap();
                let e = o.optional_positive_int(field).unwrap_err();
                assert_eq!(e.field, Some(field), "{lit}");
                assert!(
                    e.to_string().contains("fraction or an exponent"),
                    "{lit}: {e}"
                );
            }
        }
        // Another member's float does not taint an integer one.
        let o = obj(r#"{"interval":5,"ratio":0.5,"expires_in":99999999999999999999999999}"#);
        assert_eq!(o.optional_positive_int("interval").unwrap(), Some(5));
        assert_eq!(
            o.optional_positive_int("expires_in").unwrap(),
            Some(u64::MAX)
        );
        let o = obj(r#"{"interval":-99999999999999999999999999}"#);
        assert!(o.optional_positive_int("interval").is_err());
    }

    #[test]
    fn handles_are_bounded() {
        let ok = "h".repeat(MAX_HANDLE_BYTES);
        let body = format!(r#"{{"h":"{ok}","big":"{ok}x","e":""}}"#);
        let o = obj(&body);
        assert_eq!(o.required_handle("h").unwrap(), ok);
        assert_eq!(o.optional_handle("h").unwrap(), Some(ok.as_str()));
        assert_eq!(o.optional_handle("none").unwrap(), None);
        for f in ["big", "e"] {
            assert_eq!(o.required_handle(f).unwrap_err().field, Some(f));
            assert_eq!(o.optional_handle(f).unwrap_err().field, Some(f));
        }
        let e = o.required_handle("big").unwrap_err();
        assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        assert!(!e.to_string().contains("hhhh"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = "[".repeat(100_000);
        assert!(JsonObject::parse(body.as_bytes(), "ctx").is_err());
    }

    #[test]
    fn strings_and_arrays() {
        let o = obj(r#"{"s":"x","e":"","n":1,"arr":["a","b"],"bad":["a",1],"b":true}"#);
        assert_eq!(o.required_str("s").unwrap(), "x");
        assert!(
            o.required_str("e")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            o.required_str("n")
                .unwrap_err()
                .to_string()
                .contains("must be a string")
        );
        assert!(
            o.required_str("zz")
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        assert_eq!(
            o.optional_str_array("arr").unwrap().unwrap(),
            vec!["a", "b"]
        );
        assert!(o.optional_str_array("bad").is_err());
        assert_eq!(o.optional_bool("b").unwrap(), Some(true));
        assert!(o.optional_bool("s").is_err());
    }
}
