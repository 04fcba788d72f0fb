//! Field-by-field reading of JSON objects from the network, with errors that
//! name the member and its problem but never echo its value.

use serde_json::{Map, Value};

use crate::error::ResponseError;

/// A parsed JSON object plus the name of the message it came from.
pub(crate) struct JsonObject {
    pub(crate) map: Map<String, Value>,
    context: &'static str,
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

/// The first top-level member name of a JSON object that appears twice
/// (names compared after unescaping).
struct FirstDuplicate(Option<String>);

impl<'de> serde::Deserialize<'de> for FirstDuplicate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FirstDuplicate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut duplicate = None;
                while let Some(name) = access.next_key::<String>()? {
                    access.next_value::<serde::de::IgnoredAny>()?;
                    if duplicate.is_none() && seen.contains(&name) {
                        duplicate = Some(name);
                    } else {
                        seen.insert(name);
                    }
                }
                Ok(FirstDuplicate(duplicate))
            }
        }
        d.deserialize_map(V)
    }
}

impl JsonObject {
    /// Parses `body` as a JSON object.
    pub(crate) fn parse(body: &[u8], context: &'static str) -> Result<Self, ResponseError> {
        // serde_json limits nesting depth (128), so hostile input cannot
        // overflow the stack.
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => {
                // serde_json's map keeps the last of duplicate members
                // silently: a second `token_type` could turn `DPoP` into
                // `Bearer`. Refuse any duplicate instead.
                if let Ok(FirstDuplicate(Some(name))) = serde_json::from_slice(body) {
                    return Err(ResponseError::new(
                        context,
                        None,
                        format!(
                            "member `{}` appears more than once",
                            crate::error::sanitize(&name, 64)
                        ),
                    ));
                }
                Ok(JsonObject { map, context })
            }
            Ok(other) => Err(ResponseError::new(
                context,
                None,
                format!("the body is {}, not a JSON object", type_name(&other)),
            )),
            Err(e) => Err(ResponseError::new(
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
    /// Rejects 0, negatives, fractions and non-numbers. Integers too large
    /// for `u64` (which JSON allows) saturate to `u64::MAX` instead of failing:
    /// the draft says clients SHOULD accept arbitrarily large values.
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
        // A float: either a fraction / exponent form, or an integer literal
        // beyond u64 (serde_json parses those as f64).
        match n.as_f64() {
            Some(f) if f.is_finite() && f >= 1.0 && f.fract() == 0.0 => {
                if f >= u64::MAX as f64 {
                    Ok(Some(u64::MAX))
                } else {
                    Ok(Some(f as u64))
                }
            }
            _ => Err(self.err(
                field,
                "must be a positive integer, got a fractional or negative number",
            )),
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
        assert_eq!(o.optional_positive_int("exp").unwrap(), Some(1000));
        assert_eq!(o.optional_positive_int("float_int").unwrap(), Some(7));
        for bad in ["zero", "neg", "frac", "str", "bool"] {
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
        // Nested objects are values: only the top level is checked here.
        assert!(JsonObject::parse(br#"{"a":{"b":1},"c":{"b":2}}"#, "ctx").is_ok());
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
