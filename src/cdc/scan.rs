//! A strict, single-pass reader of JSON text for the decoder's fast path. It borrows strings and
//! number text from the payload and only ever accepts valid JSON; whatever it does not read
//! itself (an escaped key, deep nesting, any syntax error) it gives up on with None, so serde_json
//! in the general decoder has the last word on every unusual or invalid payload.
//!
//! It reads bytes, not a checked `str`: outside strings it accepts ASCII only, and a string's
//! bytes are checked as UTF-8 while its end is searched for, so a payload it reads through is
//! valid UTF-8 without a separate pass over the whole payload first.

use std::borrow::Cow;

/// How deep [`Scanner::skip_value`] follows nesting before giving up (serde_json allows 128).
const MAX_DEPTH: u32 = 64;

/// A scalar JSON value as read from the text.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// A number, checked against JSON's number grammar.
    Number(Number<'a>),
    /// Borrowed unless the string had escapes.
    Text(Cow<'a, str>),
}

/// A JSON number as read: its text, and its digits gathered on the way, so that the common
/// numbers need no second pass over the text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number<'a> {
    pub text: &'a str,
    pub negative: bool,
    /// The digits of the integer and fraction parts as one integer, when there are at most 19
    /// of them (then they fit a `u64`).
    pub digits: Option<u64>,
    /// The power of ten the digits are scaled by (the exponent less the fraction's digit
    /// count), when the exponent has at most four digits.
    pub scale: Option<i32>,
    /// Neither a fraction nor an exponent.
    pub integral: bool,
}

/// A cursor over JSON text, not yet known to be UTF-8.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Scanner<'a> {
        Scanner { bytes, pos: 0 }
    }

    #[inline(always)]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `byte`, after whitespace.
    #[inline(always)]
    pub fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// The next key of an object whose `{` was eaten, with its `:` consumed; `Some(None)` once
    /// the object's `}` is consumed. `first` tracks whether a member was read yet.
    pub fn next_key(&mut self, first: &mut bool) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'}' => {
                self.pos += 1;
                return Some(None);
            }
            b',' if !*first => self.pos += 1,
            _ if *first => {}
            _ => return None,
        }
        *first = false;
        let key = self.string()?;
        self.eat(b':')?;
        Some(Some(key))
    }

    /// Consumes the next key of an object and its `:` if the key is spelled exactly as `key`,
    /// which is `"name":` (see [`key_pattern`]); otherwise consumes nothing and
    /// [`Scanner::next_key`] reads what is there.
    #[inline(always)]
    pub fn next_key_is(&mut self, first: &mut bool, key: &[u8]) -> bool {
        // Compact JSON, as DMS and local capture write it: one comparison.
        let at = self.pos + usize::from(!*first);
        if let Some(rest) = self.bytes.get(at..at + key.len())
            && (*first || self.bytes[self.pos] == b',')
            && same_bytes(rest, key)
        {
            self.pos = at + key.len();
            *first = false;
            return true;
        }
        self.spaced_key_is(first, key)
    }

    /// [`Scanner::next_key_is`] with whitespace around the separators.
    #[cold]
    #[inline(never)]
    fn spaced_key_is(&mut self, first: &mut bool, key: &[u8]) -> bool {
        let start = self.pos;
        if !*first && self.eat(b',').is_none() {
            return false;
        }
        self.skip_whitespace();
        // The quoted name, without the `:`.
        let quoted = &key[..key.len() - 1];
        if self.bytes[self.pos..].starts_with(quoted) {
            self.pos += quoted.len();
            if self.eat(b':').is_some() {
                *first = false;
                return true;
            }
        }
        self.pos = start;
        false
    }

    /// A string, number, boolean or null; None for an array, an object or invalid text.
    ///
    /// Inlined into its callers, as are the readers it calls: returned from a call, the value
    /// went through memory and was read back wider than it was written, which stalled the
    /// loads (about a third of the row reader's time).
    #[inline(always)]
    pub fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Scalar::Text),
            b'-' | b'0'..=b'9' => self.number().map(Scalar::Number),
            b't' => self.literal("true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal("false").map(|()| Scalar::Bool(false)),
            b'n' => self.literal("null").map(|()| Scalar::Null),
            _ => None,
        }
    }

    /// Passes over any JSON value.
    pub fn skip_value(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.pos += 1;
                let mut first = true;
                while self.next_key(&mut first)?.is_some() {
                    self.skip_nested(depth + 1)?;
                }
                Some(())
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.pos += 1;
                if self.peek()? == b']' {
                    self.pos += 1;
                    return Some(());
                }
                loop {
                    self.skip_nested(depth + 1)?;
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b']' => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.scalar().map(drop),
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.bytes[self.pos..]
            .starts_with(word.as_bytes())
            .then(|| self.pos += word.len())
    }

    /// A string at the cursor (after whitespace).
    #[inline(always)]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        let run = plain_run_end(self.bytes, start)?;
        match self.bytes[run.end] {
            b'"' => {
                let bytes = &self.bytes[start..run.end];
                let text = if run.ascii {
                    // SAFETY: ASCII bytes are valid UTF-8.
                    unsafe { std::str::from_utf8_unchecked(bytes) }
                } else {
                    std::str::from_utf8(bytes).ok()?
                };
                self.pos = run.end + 1;
                Some(Cow::Borrowed(text))
            }
            b'\\' => self.escaped_string(),
            // JSON forbids raw control characters inside strings.
            _ => None,
        }
    }

    /// A string with escapes: its end found here, its unescaping (and UTF-8 check) left to
    /// serde_json.
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self) -> Option<Cow<'a, str>> {
        let mut end = self.pos + 1;
        loop {
            match *self.bytes.get(end)? {
                b'"' => break,
                b'\\' => end += 2,
                _ => end += 1,
            }
        }
        let text: String = serde_json::from_slice(self.bytes.get(self.pos..=end)?).ok()?;
        self.pos = end + 1;
        Some(Cow::Owned(text))
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at the cursor.
    #[inline(always)]
    fn number(&mut self) -> Option<Number<'a>> {
        let bytes = self.bytes;
        let start = self.pos;
        let mut end = start;
        let (mut significand, mut count) = (0, 0);
        let negative = bytes.get(end) == Some(&b'-');
        if negative {
            end += 1;
        }
        // A leading `0` adds nothing to the digits.
        end = match bytes.get(end)? {
            b'0' => end + 1,
            b'1'..=b'9' => gather_digits(bytes, end, &mut significand, &mut count),
            _ => return None,
        };
        let mut integral = true;
        let mut fraction_digits = 0;
        if bytes.get(end) == Some(&b'.') {
            integral = false;
            let fraction = end + 1;
            let before = count;
            end = gather_digits(bytes, fraction, &mut significand, &mut count);
            if end == fraction {
                return None;
            }
            fraction_digits = count - before;
        }
        let mut exponent: Option<i32> = Some(0);
        if let Some(b'e' | b'E') = bytes.get(end) {
            integral = false;
            end += 1;
            let sign = match bytes.get(end) {
                Some(b'-') => {
                    end += 1;
                    -1
                }
                Some(b'+') => {
                    end += 1;
                    1
                }
                _ => 1,
            };
            let (mut value, mut exponent_digits) = (0, 0);
            let first = end;
            end = gather_digits(bytes, first, &mut value, &mut exponent_digits);
            if end == first {
                return None;
            }
            exponent = (exponent_digits <= 4).then_some(sign * value as i32);
        }
        self.pos = end;
        Some(Number {
            // SAFETY: the grammar above only admits ASCII digits, signs, `.`, `e` and `E`.
            text: unsafe { std::str::from_utf8_unchecked(&bytes[start..end]) },
            negative,
            digits: (count <= 19).then_some(significand),
            scale: exponent.map(|e| e - fraction_digits as i32),
            integral,
        })
    }
}

/// Gathers the run of ASCII digits at `at` into `value` while the run so far has at most 19
/// digits (then they fit a `u64`), counts them into `count`, and returns where the run ends.
/// Eight bytes at a time: numbers are most of a row's values.
#[inline(always)]
fn gather_digits(bytes: &[u8], mut at: usize, value: &mut u64, count: &mut u32) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const POWERS: [u64; 9] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
    ];
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let digits = u64::from_le_bytes(word).wrapping_sub(ONES * u64::from(b'0'));
        // A byte is not a digit when it was below `0` (it wrapped: high bit set) or above `9`
        // (adding 0x76 sets its high bit). Borrows and carries only reach the bytes after the
        // first such byte, and only the first is used.
        let not_digit = (digits | digits.wrapping_add(ONES * 0x76)) & (ONES * 0x80);
        let run = (not_digit.trailing_zeros() / 8) as usize;
        if run > 0 {
            if *count as usize + run <= 19 {
                // The run's digits moved to the top, zeros (leading zeros) below.
                *value = *value * POWERS[run] + eight_digits(digits << (8 * (8 - run)));
            }
            *count += run as u32;
            at += run;
        }
        if run < 8 {
            return at;
        }
    }
    while let Some(digit) = bytes
        .get(at)
        .map(|b| b.wrapping_sub(b'0'))
        .filter(|d| *d < 10)
    {
        if *count < 19 {
            *value = *value * 10 + u64::from(digit);
        }
        *count += 1;
        at += 1;
    }
    at
}

/// The number written by eight digit values, one per byte, the first in the lowest byte.
#[inline(always)]
fn eight_digits(digits: u64) -> u64 {
    // Pairs, then quadruples, then all eight, combined by multiplication.
    // The products wrap by design: only the bits that end up in the top half are kept.
    let pairs = digits.wrapping_mul(10).wrapping_add(digits >> 8);
    let low = (pairs & 0x0000_00ff_0000_00ff).wrapping_mul(100 + (1_000_000 << 32));
    let high = ((pairs >> 16) & 0x0000_00ff_0000_00ff).wrapping_mul(1 + (10_000 << 32));
    low.wrapping_add(high) >> 32
}

/// `"name":`, the spelling of an object key [`Scanner::next_key_is`] matches. `name` must not
/// contain a quote, a backslash or a control character (then its spelling is its text).
pub fn key_pattern(name: &str) -> Box<[u8]> {
    format!("\"{name}\":").into_bytes().into_boxed_slice()
}

/// `a == b` for slices of one length, without a call to `memcmp`: keys are a few bytes long, and
/// the call cost more than the comparison.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    if n < 8 {
        return a == b;
    }
    let mut at = 0;
    while at + 8 <= n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last, partial word, read overlapping the one before.
    at == n || word(a, n - 8) == word(b, n - 8)
}

/// Whether `byte` ends a run of plain string bytes: a quote, a backslash or a control character.
/// A text without such bytes is spelled in JSON exactly as it reads.
pub fn ends_plain_run(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// Where a run of plain string bytes ends, and whether it is all ASCII.
struct PlainRun {
    /// The position of the byte that ends the run.
    end: usize,
    ascii: bool,
}

/// The position of the first `"`, `\\` or control character at or after `at`, eight bytes at a
/// time (most of a DMS message is string content), noting on the way whether a byte before it is
/// outside ASCII.
#[inline(always)]
fn plain_run_end(bytes: &[u8], mut at: usize) -> Option<PlainRun> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // `(x - ONES * n) & !x & HIGH` flags the bytes of `x` below `n`; the lowest flag is exact
    // (a borrow only reaches the bytes above a flagged one), and only the lowest is used.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    // The high bits of the words passed over: any set means a byte outside ASCII.
    let mut high = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let special = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if special != 0 {
            let lead = special.trailing_zeros() / 8;
            let before = word & ((1_u64 << (lead * 8)) - 1);
            return Some(PlainRun {
                end: at + lead as usize,
                ascii: (high | before) & HIGH == 0,
            });
        }
        high |= word;
        at += 8;
    }
    let rest = bytes.get(at..)?;
    let offset = rest.iter().position(|&b| ends_plain_run(b))?;
    Some(PlainRun {
        end: at + offset,
        ascii: high & HIGH == 0 && rest[..offset].is_ascii(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{Strategy, prop, prop_oneof};
    use serde_json::Value;

    use super::*;

    /// Reads a whole document into a `Value`, through the scanner alone.
    fn read(text: &[u8]) -> Option<Value> {
        let mut scanner = Scanner::new(text);
        let value = read_value(&mut scanner)?;
        scanner.at_end().then_some(value)
    }

    fn read_value(scanner: &mut Scanner) -> Option<Value> {
        match scanner.peek()? {
            b'{' => {
                scanner.pos += 1;
                let mut map = serde_json::Map::new();
                let mut first = true;
                loop {
                    // Each member's key is first tried as one of a few plain names.
                    let guessed = ["a", "b", "ab", ""]
                        .into_iter()
                        .find(|name| scanner.next_key_is(&mut first, &key_pattern(name)));
                    let key = match guessed {
                        Some(name) => name.to_owned(),
                        None => match scanner.next_key(&mut first)? {
                            Some(key) => key.into_owned(),
                            None => break,
                        },
                    };
                    map.insert(key, read_value(scanner)?);
                }
                Some(Value::Object(map))
            }
            b'[' => {
                // Arrays are only ever skipped by the decoder; check they are skipped exactly.
                let start = scanner.pos;
                scanner.skip_value()?;
                serde_json::from_slice(&scanner.bytes[start..scanner.pos]).ok()
            }
            _ => Some(match scanner.scalar()? {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Number(n) => serde_json::from_str(n.text).ok()?,
                Scalar::Text(s) => Value::String(s.into_owned()),
            }),
        }
    }

    #[test]
    fn reads_scalars_borrowed_and_escaped() {
        let mut scanner = Scanner::new(br#" "plain" "a\"b\u00e9" -0.5e+3 true null"#);
        assert_eq!(scanner.scalar(), Some(Scalar::Text(Cow::Borrowed("plain"))));
        assert_eq!(
            scanner.scalar(),
            Some(Scalar::Text(Cow::Owned("a\"b\u{e9}".into())))
        );
        assert_eq!(
            scanner.scalar(),
            Some(Scalar::Number(Number {
                text: "-0.5e+3",
                negative: true,
                digits: Some(5),
                scale: Some(2),
                integral: false,
            }))
        );
        assert_eq!(scanner.scalar(), Some(Scalar::Bool(true)));
        assert_eq!(scanner.scalar(), Some(Scalar::Null));
        assert!(scanner.at_end());
    }

    #[test]
    fn refuses_what_json_does_not_allow() {
        for text in [
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"a\nb\"",
            "\"open",
            "{\"a\":1,}",
            "{,\"a\":1}",
            "{\"a\" 1}",
            "[1,]",
            "[1 2]",
            "{\"a\":1",
            "\"bad \\x escape\"",
            "NaN",
        ] {
            assert_eq!(read(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn finds_the_first_special_byte_at_any_position() {
        for len in 0..40 {
            for special in [b'"', b'\\', b'\n', 0x1f] {
                let mut bytes = vec![b'a'; len];
                bytes.extend_from_slice(&[0xc3, 0xa9]);
                bytes.push(special);
                bytes.extend_from_slice(b"\"\\\x01zz");
                let end = |at| plain_run_end(&bytes, at).map(|run| run.end);
                assert_eq!(end(0), Some(len + 2), "{len} {special}");
                assert_eq!(end(len.min(3)), Some(len + 2));
            }
            assert!(plain_run_end(&vec![b' '; len], 0).is_none());
        }
    }

    #[test]
    fn notes_a_byte_outside_ascii_only_before_the_end_of_the_run() {
        for len in 0..40 {
            for at in 0..len + 3 {
                let mut bytes = vec![b'a'; len];
                bytes.extend_from_slice(b"\"bb");
                bytes[at] = 0xe9;
                let run = plain_run_end(&bytes, 0);
                let ascii = run.map(|run| run.ascii);
                if at < len {
                    assert_eq!(ascii, Some(false), "{len} {at}");
                } else if at > len {
                    assert_eq!(ascii, Some(true), "{len} {at}");
                }
            }
        }
    }

    #[test]
    fn refuses_strings_that_are_not_utf8() {
        for text in [
            &b"\"\xff\""[..],
            b"\"caf\xc3\"",
            b"{\"k\xe9\":1}",
            b"\"\xed\xa0\x80\"",
            b"\"long enough for a word \xc3\x28\"",
        ] {
            assert_eq!(read(text), None, "{text:?}");
        }
        assert_eq!(
            read("\"café 😀 long enough\"".as_bytes()),
            Some(Value::String("café 😀 long enough".into()))
        );
    }

    #[test]
    fn gives_up_on_deep_nesting() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(read(deep.as_bytes()), None);
        let shallow = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert!(read(shallow.as_bytes()).is_some());
    }

    /// JSON-like text: valid documents, and the same with bytes cut, doubled or swapped (which
    /// also breaks the UTF-8 of the strings outside ASCII), or with a byte that is never UTF-8.
    fn json_like() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            prop::sample::select(vec![
                "null",
                "true",
                "false",
                "0",
                "-0",
                "12",
                "-3.25",
                "1e5",
                "2E-3",
                "1.5e+300",
                "1e400",
                "\"\"",
                "\"a b\"",
                "\"\\u00e9\\n\"",
                "\"\\ud83d\\ude00\"",
                "\"\\ud83d\"",
                "\"é\"",
            ])
            .prop_map(str::to_owned),
            "\"[ -~]{0,6}\"",
            "\"[ -~é€😀]{0,12}\"",
        ];
        let document = leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec(("[a-c\\\\\"]{0,3}", inner), 0..4).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{ {} }}", members.join(","))
                }),
            ]
        });
        (document, 0..40_usize, 0..5_u8).prop_map(|(text, at, edit)| {
            let mut bytes = text.into_bytes();
            let at = at.min(bytes.len().saturating_sub(1));
            match edit {
                1 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                2 if !bytes.is_empty() => bytes.insert(at, bytes[at]),
                3 if at + 1 < bytes.len() => bytes.swap(at, at + 1),
                4 => bytes.insert(at, 0xff),
                _ => {}
            }
            bytes
        })
    }

    proptest::proptest! {
        /// Whatever the scanner reads, serde_json reads the same; it never accepts more.
        #[test]
        fn accepts_only_what_serde_json_accepts_and_reads_it_alike(text in json_like()) {
            if let Some(value) = read(&text) {
                let expected: Result<Value, _> = serde_json::from_slice(&text);
                let shown = String::from_utf8_lossy(&text);
                proptest::prop_assert_eq!(Some(value), expected.ok(), "{}", shown);
            }
        }
    }
}
