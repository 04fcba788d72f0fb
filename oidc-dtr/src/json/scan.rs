//! A small JSON reader for the common shape of JOSE headers and ID token
//! claims, run before serde_json on the validation hot path.
//!
//! It reads a subset of JSON with the rules of serde_json and of
//! [`StrictValue`](super::StrictValue): strings without escapes, integers
//! of at most 18 digits, `true`, `false`, `null`, arrays, and objects of at
//! most [`MAX_MEMBERS`] members with distinct names, nested at most
//! [`MAX_DEPTH`] deep. Whenever the text leaves that subset, *or is not
//! valid JSON*, it answers `None`, meaning "not sure": the caller then runs
//! the full serde_json reader, which accepts, refuses and words its errors
//! as it always did. So this reader never refuses anything itself; it only
//! spares serde_json (and its allocations) for the inputs it understands
//! completely, and on those it must give what serde_json gives.
//!
//! Strings are borrowed from the input: the text is a `&str`, and every
//! slice boundary is next to an ASCII quote, so it is a char boundary.

/// The most members of one nested object (and of the top-level object's
/// members that are not read into a slot) this reader tracks for the
/// duplicate-name rule; a larger object goes to serde_json.
pub(crate) const MAX_MEMBERS: usize = 24;

/// The deepest nesting this reader follows (serde_json allows 128).
pub(crate) const MAX_DEPTH: usize = 32;

/// A value as the fast reader read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast<'a> {
    Null,
    Bool,
    /// A negative integer (serde_json's `i64`).
    Neg(i64),
    /// A non-negative integer (serde_json's `u64`).
    Pos(u64),
    Str(&'a str),
    /// An array whose items are all strings (without escapes): the text
    /// from `[` to `]` and the number of items. [`StrItems`] lists them.
    StrArray(&'a str, usize),
    /// An array with at least one item that is not a string.
    Array,
    Object,
}

/// A cursor over JSON text.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// Skips JSON whitespace (space, tab, line feed, carriage return).
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `b` (after whitespace).
    pub(crate) fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// After whitespace: consumes `b` if it is next, says whether it was.
    fn try_eat(&mut self, b: u8) -> bool {
        self.ws();
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// Whether only whitespace remains.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.pos == self.text.len()
    }

    /// A string without escapes or control characters (after whitespace).
    #[inline(always)]
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        // Both cuts are next to an ASCII quote: char boundaries (checked
        // all the same, one at a time, which the compiler inlines).
        let rest = self.text.get(start..)?;
        let len = string_len(rest.as_bytes())?;
        self.pos = start + len + 1;
        rest.get(..len)
    }

    /// An integer of at most 18 digits, in serde_json's grammar (no leading
    /// zero, no fraction, no exponent); the position is on its first byte.
    fn integer(&mut self) -> Option<Fast<'a>> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
        }
        let start = self.pos;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n * 10 + u64::from(d - b'0');
            self.pos += 1;
            if self.pos - start > 18 {
                return None;
            }
        }
        let digits = self.pos - start;
        if digits == 0 || (digits > 1 && self.bytes()[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        // serde_json reads `-0` as a float (negative zero).
        if neg && n == 0 {
            return None;
        }
        // 18 digits fit an i64.
        let n = i64::try_from(n).ok()?;
        Some(if neg {
            Fast::Neg(-n)
        } else {
            Fast::Pos(n as u64)
        })
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.bytes().get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// Reads any value (after whitespace), checking nested objects for
    /// duplicate member names.
    pub(crate) fn value(&mut self, depth: usize) -> Option<Fast<'a>> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(Fast::Str),
            b'{' => self.object(depth + 1).map(|()| Fast::Object),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true").map(|()| Fast::Bool),
            b'f' => self.literal(b"false").map(|()| Fast::Bool),
            b'n' => self.literal(b"null").map(|()| Fast::Null),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<Fast<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.pos;
        self.eat(b'[')?;
        if self.try_eat(b']') {
            return Some(Fast::StrArray(self.text.get(start..self.pos)?, 0));
        }
        let mut strings = true;
        let mut count = 0;
        loop {
            let v = self.value(depth)?;
            strings &= matches!(v, Fast::Str(_));
            count += 1;
            if self.try_eat(b']') {
                break;
            }
            self.eat(b',')?;
        }
        Some(if strings {
            Fast::StrArray(self.text.get(start..self.pos)?, count)
        } else {
            Fast::Array
        })
    }

    /// A nested object: every member read, names distinct.
    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        let mut names = Names::new();
        if self.try_eat(b'}') {
            return Some(());
        }
        loop {
            let name = self.string()?;
            names.insert(name)?;
            self.eat(b':')?;
            self.value(depth)?;
            if self.try_eat(b'}') {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    /// Reads the members of the top-level object, handing each name to
    /// `member`, which reads the value (with [`value`](Self::value)) and
    /// answers `None` to give up. Checks that nothing but whitespace
    /// follows the object.
    pub(crate) fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if !self.try_eat(b'}') {
            loop {
                let name = self.string()?;
                self.eat(b':')?;
                member(self, name)?;
                if self.try_eat(b'}') {
                    break;
                }
                self.eat(b',')?;
            }
        }
        self.at_end().then_some(())
    }
}

/// The length of a string's text up to its closing quote; `None` if a
/// backslash or a control character comes first, or no quote at all.
///
/// Eight bytes per step, and no byte loop: in the step that meets the
/// first special byte, the lowest flagged bit says where it is (the
/// zero-byte tests below can flag a byte *after* a true hit, through the
/// borrow, never one before it). The last, short step reads the remaining
/// bytes padded with zeros, which count as control characters: a hit past
/// the end of the text means no closing quote.
#[inline(always)]
fn string_len(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `x` that is zero (exact up to the first
    // one, maybe more after it).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // The high bit of each special byte: `"`, `\`, or below 0x20 (`x -
    // 0x20` borrows into the high bit of exactly those, up to the first).
    let special = |x: u64| {
        zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
    };
    let mut offset = 0;
    loop {
        let hit = match rest.get(offset..offset + 8) {
            Some(chunk) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                special(u64::from_le_bytes(word))
            }
            None => {
                let tail = rest.get(offset..)?;
                let mut last = [0u8; 8];
                last[..tail.len()].copy_from_slice(tail);
                // Never zero: the padding (at least one byte) is flagged.
                special(u64::from_le_bytes(last))
            }
        };
        if hit != 0 {
            let len = offset + (hit.trailing_zeros() / 8) as usize;
            return (*rest.get(len)? == b'"').then_some(len);
        }
        offset += 8;
    }
}

/// Member names seen in one object, for the duplicate rule; `None` when
/// there are too many to track (or a duplicate: serde_json words that
/// error).
pub(crate) struct Names<'a> {
    seen: [&'a str; MAX_MEMBERS],
    len: usize,
}

impl<'a> Names<'a> {
    pub(crate) fn new() -> Self {
        Names {
            seen: [""; MAX_MEMBERS],
            len: 0,
        }
    }

    /// Adds `name`; `None` if it is there already or there is no room.
    pub(crate) fn insert(&mut self, name: &'a str) -> Option<()> {
        if self.len == MAX_MEMBERS || self.seen[..self.len].contains(&name) {
            return None;
        }
        self.seen[self.len] = name;
        self.len += 1;
        Some(())
    }
}

/// The items of a [`Fast::StrArray`]'s text: the strings between quotes
/// (there are no escapes, so every other quote opens an item).
pub(crate) struct StrItems<'a>(&'a str);

impl<'a> StrItems<'a> {
    pub(crate) fn new(array_text: &'a str) -> Self {
        StrItems(array_text)
    }
}

impl<'a> Iterator for StrItems<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let (_, rest) = self.0.split_once('"')?;
        let (item, rest) = rest.split_once('"')?;
        self.0 = rest;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(text: &str) -> Option<Fast<'_>> {
        let mut s = Scanner::new(text);
        let v = s.value(0)?;
        s.at_end().then_some(v)
    }

    #[test]
    fn reads_the_common_subset() {
        assert_eq!(any(r#" "abc" "#), Some(Fast::Str("abc")));
        assert_eq!(any("é"), None);
        assert_eq!(any(r#""é""#), Some(Fast::Str("é")));
        assert_eq!(any("0"), Some(Fast::Pos(0)));
        assert_eq!(any("-0"), None);
        assert_eq!(any("-17"), Some(Fast::Neg(-17)));
        assert_eq!(
            any("999999999999999999"),
            Some(Fast::Pos(999_999_999_999_999_999))
        );
        assert_eq!(any("true"), Some(Fast::Bool));
        assert_eq!(any("null"), Some(Fast::Null));
        assert_eq!(
            any(r#"["a", "b"]"#),
            Some(Fast::StrArray(r#"["a", "b"]"#, 2))
        );
        assert_eq!(any("[]"), Some(Fast::StrArray("[]", 0)));
        assert_eq!(any(r#"["a", 1]"#), Some(Fast::Array));
        assert_eq!(any(r#"{"a": {"b": [1, {}]}, "b": 2}"#), Some(Fast::Object));
        let items: Vec<_> = StrItems::new(r#"[ "a" ,"" , "c d"]"#).collect();
        assert_eq!(items, ["a", "", "c d"]);
    }

    /// The eight-bytes-at-a-time string scan finds what a byte loop finds.
    #[test]
    fn string_len_matches_a_byte_loop() {
        let alphabet = [
            b'a', b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xff, 0, b'!', b'#', 0x21, 0x5b, 0x5d,
        ];
        let mut seed = 0x0bad_cafe_dead_beefu64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if next() % 4 == 0 {
                        alphabet[(next() % alphabet.len() as u64) as usize]
                    } else {
                        b'a' + (next() % 26) as u8
                    }
                })
                .collect();
            let expected = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .filter(|&i| bytes[i] == b'"');
            assert_eq!(string_len(&bytes), expected, "{bytes:?}");
        }
    }

    /// Everything outside the subset, and every error, is "not sure".
    #[test]
    fn gives_up_outside_the_subset() {
        for text in [
            r#""a\"b""#,
            "\"a\u{1}\"",
            "1.0",
            "1e3",
            "01",
            "-",
            "1234567890123456789",
            "tru",
            "nul",
            "[1,]",
            "[1 2]",
            r#"{"a":1,}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a" 1}"#,
            r#"{1:1}"#,
            "\"abc",
            "[",
            "{",
            "",
            "1 2",
            "+1",
            "\u{a0}1",
        ] {
            assert_eq!(any(text), None, "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(any(&deep), None);
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(any(&ok), Some(Fast::Array));
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("\"m{i}\":1")).collect();
        assert_eq!(any(&format!("{{{}}}", many.join(","))), None);
        assert_eq!(
            any(&format!("{{{}}}", many[..MAX_MEMBERS].join(","))),
            Some(Fast::Object)
        );
    }

    /// On what it reads, the fast reader agrees with serde_json: the same
    /// verdict (valid or not) and the same integers.
    #[test]
    fn agrees_with_serde_json() {
        let pieces = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"a\"",
            "\"b\"",
            "\"\\n\"",
            "1",
            "-2",
            "0",
            "00",
            "-",
            "1.5",
            "true",
            "null",
            " ",
            "\n",
            "\"é\"",
            "x",
            "18446744073709551615",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut understood = 0;
        for _ in 0..60_000 {
            let n = 1 + (next() % 9) as usize;
            let text: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let Some(fast) = any(&text) else { continue };
            understood += 1;
            let slot = std::cell::RefCell::new(None);
            let mut de = serde_json::Deserializer::from_str(&text);
            let full =
                serde::de::DeserializeSeed::deserialize(super::super::StrictValue(&slot), &mut de)
                    .and_then(|v| de.end().map(|()| v));
            let full = full.unwrap_or_else(|e| panic!("{text:?}: fast {fast:?}, serde_json {e}"));
            match (fast, &full) {
                (Fast::Pos(u), serde_json::Value::Number(n)) => assert_eq!(n.as_u64(), Some(u)),
                (Fast::Neg(i), serde_json::Value::Number(n)) => assert_eq!(n.as_i64(), Some(i)),
                (Fast::Str(s), serde_json::Value::String(t)) => assert_eq!(s, t),
                (Fast::StrArray(_, len), serde_json::Value::Array(items)) => {
                    assert_eq!(items.len(), len);
                    assert!(items.iter().all(serde_json::Value::is_string));
                }
                (Fast::Array, serde_json::Value::Array(items)) => {
                    assert!(!items.iter().all(serde_json::Value::is_string))
                }
                (Fast::Object, serde_json::Value::Object(_))
                | (Fast::Bool, serde_json::Value::Bool(_))
                | (Fast::Null, serde_json::Value::Null) => {}
                (f, v) => panic!("{text:?}: fast {f:?}, serde_json {v:?}"),
            }
        }
        assert!(understood > 1000, "{understood}");
    }
}
