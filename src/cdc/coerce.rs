//! JSON values as DMS sends them (numbers as numbers, booleans and timestamps as strings,
//! decimals as strings or numbers) coerced to the configured column types. A value that cannot be
//! coerced is an error, never NULL: the decoder turns it into a malformed record.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::{Number, Value};

use super::scan;
use crate::config::spec::ColumnType;
use crate::pipeline::decimal::{Decimal, DecimalFitError};

/// One coerced, non-null value in the representation of its Arrow column. Text borrows from the
/// payload where it can: an owned string per text cell was a large part of decoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Text(Cow<'a, str>),
    Int(i32),
    Long(i64),
    Double(f64),
    Boolean(bool),
    /// Microseconds since the epoch, UTC.
    TimestampMicros(i64),
    /// Days since the epoch.
    Date(i32),
    /// Unscaled value at the column's scale.
    Decimal(i128),
}

impl Cell<'_> {
    /// The cell with its text owned, to outlive the document it was read from.
    pub fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Text(text) => Cell::Text(Cow::Owned(text.into_owned())),
            Cell::Int(v) => Cell::Int(v),
            Cell::Long(v) => Cell::Long(v),
            Cell::Double(v) => Cell::Double(v),
            Cell::Boolean(v) => Cell::Boolean(v),
            Cell::TimestampMicros(v) => Cell::TimestampMicros(v),
            Cell::Date(v) => Cell::Date(v),
            Cell::Decimal(v) => Cell::Decimal(v),
        }
    }
}

/// Why a value does not fit its column; rendered into `expected <type>, found <value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoerceError {
    pub expected: String,
    /// The offending JSON value, compact, shortened if long.
    pub found: String,
    /// Extra detail, e.g. `out of range for a 32-bit integer`.
    pub detail: Option<String>,
}

impl std::fmt::Display for CoerceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// Longest rendering of an offending value inside a reason.
const FOUND_MAX_CHARS: usize = 80;

/// A non-null JSON value, borrowed: from a parsed [`Value`] or straight from a payload, so the hot
/// decode path needs no `Value` tree.
#[derive(Debug, Clone, Copy)]
pub enum JsonRef<'a> {
    Bool(bool),
    Number(&'a Number),
    Text(&'a str),
    /// An array or object; only text columns take it (as its compact JSON).
    Nested(&'a Value),
}

impl<'a> JsonRef<'a> {
    /// None for JSON null.
    pub fn from_value(value: &'a Value) -> Option<JsonRef<'a>> {
        match value {
            Value::Null => None,
            Value::Bool(b) => Some(JsonRef::Bool(*b)),
            Value::Number(n) => Some(JsonRef::Number(n)),
            Value::String(s) => Some(JsonRef::Text(s)),
            nested => Some(JsonRef::Nested(nested)),
        }
    }

    /// Compact JSON, as `Value::to_string` renders it.
    fn render(self) -> String {
        match self {
            JsonRef::Bool(b) => b.to_string(),
            JsonRef::Number(n) => n.to_string(),
            JsonRef::Text(s) => Value::String(s.to_owned()).to_string(),
            JsonRef::Nested(v) => v.to_string(),
        }
    }
}

fn error(column_type: ColumnType, value: JsonRef<'_>, detail: Option<&str>) -> CoerceError {
    let rendered = value.render();
    let found = if rendered.chars().count() > FOUND_MAX_CHARS {
        let mut short: String = rendered.chars().take(FOUND_MAX_CHARS).collect();
        short.push('…');
        short
    } else {
        rendered
    };
    CoerceError {
        expected: column_type.to_string(),
        found,
        detail: detail.map(str::to_owned),
    }
}

/// Coerces a non-null JSON value to `column_type`. (NULL handling is the caller's: JSON null and
/// a missing field are both NULL.)
pub fn coerce(value: &Value, column_type: ColumnType) -> Result<Cell<'_>, CoerceError> {
    match JsonRef::from_value(value) {
        Some(value) => coerce_ref(value, column_type),
        None => Err(error(column_type, JsonRef::Nested(value), None)),
    }
}

/// [`coerce`] on a borrowed value.
pub fn coerce_ref(value: JsonRef<'_>, column_type: ColumnType) -> Result<Cell<'_>, CoerceError> {
    let fail = |detail: Option<&str>| error(column_type, value, detail);
    match column_type {
        ColumnType::String | ColumnType::Text => Ok(Cell::Text(match value {
            JsonRef::Text(s) => Cow::Borrowed(s),
            JsonRef::Number(n) => Cow::Owned(n.to_string()),
            JsonRef::Bool(b) => Cow::Owned(b.to_string()),
            // json/jsonb and arrays arrive as nested JSON: keep their compact text.
            JsonRef::Nested(other) => Cow::Owned(other.to_string()),
        })),
        ColumnType::Int => {
            let whole = integer(value).ok_or_else(|| fail(None))?;
            let whole = whole.ok_or_else(|| fail(Some("not a whole number")))?;
            i32::try_from(whole)
                .map(Cell::Int)
                .map_err(|_| fail(Some("out of range for a 32-bit integer")))
        }
        ColumnType::Long => {
            let whole = integer(value).ok_or_else(|| fail(None))?;
            let whole = whole.ok_or_else(|| {
                fail(Some(
                    "not a whole number or out of range for a 64-bit integer",
                ))
            })?;
            Ok(Cell::Long(whole))
        }
        ColumnType::Double | ColumnType::Real => match value {
            JsonRef::Number(n) => n.as_f64().map(Cell::Double).ok_or_else(|| fail(None)),
            JsonRef::Text(s) => parse_double(s).map(Cell::Double).ok_or_else(|| fail(None)),
            _ => Err(fail(None)),
        },
        ColumnType::Decimal { precision, scale } => {
            let decimal = match value {
                JsonRef::Number(n) => Decimal::parse(&n.to_string()),
                JsonRef::Text(s) => Decimal::parse(s.trim()),
                _ => None,
            }
            .ok_or_else(|| fail(None))?;
            decimal
                .to_unscaled(precision, scale)
                .map(Cell::Decimal)
                .map_err(|e| match e {
                    DecimalFitError::Inexact => fail(Some("more fractional digits than the scale")),
                    DecimalFitError::Overflow => fail(Some("too many digits for the precision")),
                })
        }
        ColumnType::Boolean => match value {
            JsonRef::Bool(b) => Ok(Cell::Boolean(b)),
            JsonRef::Text(s) => parse_bool(s).map(Cell::Boolean).ok_or_else(|| fail(None)),
            JsonRef::Number(n) => match n.as_i64() {
                Some(1) => Ok(Cell::Boolean(true)),
                Some(0) => Ok(Cell::Boolean(false)),
                _ => Err(fail(None)),
            },
            _ => Err(fail(None)),
        },
        ColumnType::Timestamp => match value {
            JsonRef::Text(s) => parse_timestamp_micros(s)
                .map(Cell::TimestampMicros)
                .ok_or_else(|| fail(None)),
            _ => Err(fail(None)),
        },
        ColumnType::Date => match value {
            JsonRef::Text(s) => parse_date_days(s).map(Cell::Date).ok_or_else(|| fail(None)),
            _ => Err(fail(None)),
        },
    }
}

/// The text of a JSON number coerced to `column_type`, as [`coerce_ref`] coerces the parsed
/// number: whole numbers into integer columns and any number into a double column straight from
/// the text, every other case through serde_json's `Number`. None when it does not fit.
pub fn coerce_number_text(text: &str, column_type: ColumnType) -> Option<Cell<'static>> {
    // serde_json reads `-0` as the double -0.0; leave it to the general route.
    let whole = || text != "-0" && text.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    match column_type {
        ColumnType::Int if whole() => text.parse::<i32>().ok().map(Cell::Int),
        ColumnType::Long if whole() => text.parse::<i64>().ok().map(Cell::Long),
        ColumnType::Double | ColumnType::Real => {
            // Correctly rounded like Rust's parser (and serde_json's `float_roundtrip`), and
            // faster: a row holds several doubles.
            let value = lexical_core::parse::<f64>(text.as_bytes()).ok()?;
            // serde_json refuses numbers beyond f64's range, which Rust reads as infinite.
            value.is_finite().then_some(Cell::Double(value))
        }
        _ => {
            let number: Number = serde_json::from_str(text).ok()?;
            coerce_ref(JsonRef::Number(&number), column_type)
                .ok()
                .map(Cell::into_owned)
        }
    }
}

/// Powers of ten a double holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// [`coerce_number_text`] from a number the scanner has already taken apart. Plain integers into
/// integer columns, and doubles whose digits and power of ten a double holds exactly (then one
/// multiplication or division rounds correctly: Clinger's fast path), need no second reading of
/// the text; every other number takes the text route.
pub fn coerce_number(number: &scan::Number<'_>, column_type: ColumnType) -> Option<Cell<'static>> {
    let mut cell = None;
    coerce_number_into(number, column_type, &mut cell)?;
    cell
}

/// [`coerce_number`] written into `slot`. The cell is built where it is stored: returned by value
/// it went through memory and was read back wider than it was written, a stall that was a tenth
/// of the row reader's time.
#[inline(always)]
pub fn coerce_number_into(
    number: &scan::Number<'_>,
    column_type: ColumnType,
    slot: &mut Option<Cell<'_>>,
) -> Option<()> {
    let signed = |value: u64| {
        let value = i64::try_from(value).ok()?;
        Some(if number.negative { -value } else { value })
    };
    // `-0` is a double to serde_json: the text route decides.
    let integral = number.integral && !(number.negative && number.digits == Some(0));
    match (column_type, number.digits, number.scale) {
        (ColumnType::Int, Some(digits), _) if integral => {
            if let Some(value) = signed(digits).and_then(|v| i32::try_from(v).ok()) {
                *slot = Some(Cell::Int(value));
                return Some(());
            }
        }
        (ColumnType::Long, Some(digits), _) if integral => {
            if let Some(value) = signed(digits) {
                *slot = Some(Cell::Long(value));
                return Some(());
            }
        }
        (ColumnType::Double | ColumnType::Real, Some(digits), Some(scale))
            if digits <= 1 << 53 && scale.unsigned_abs() <= 22 =>
        {
            let power = EXACT_POWERS_OF_TEN[scale.unsigned_abs() as usize];
            let magnitude = if scale < 0 {
                digits as f64 / power
            } else {
                digits as f64 * power
            };
            *slot = Some(Cell::Double(if number.negative {
                -magnitude
            } else {
                magnitude
            }));
            return Some(());
        }
        _ => {}
    }
    *slot = Some(coerce_number_text(number.text, column_type)?);
    Some(())
}

/// `None`: not numeric at all. `Some(None)`: numeric but not an i64 (fraction or range).
fn integer(value: JsonRef<'_>) -> Option<Option<i64>> {
    match value {
        JsonRef::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Some(Some(i));
            }
            if n.is_u64() {
                return Some(None);
            }
            Some(Decimal::parse(&n.to_string()).and_then(|d| d.to_i64()))
        }
        JsonRef::Text(s) => {
            let trimmed = s.trim();
            if let Ok(i) = trimmed.parse::<i64>() {
                return Some(Some(i));
            }
            Decimal::parse(trimmed).map(|d| d.to_i64())
        }
        _ => None,
    }
}

/// Numeric strings, and PostgreSQL's spellings of the non-finite doubles.
pub fn parse_double(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    match trimmed {
        "NaN" => return Some(f64::NAN),
        "Infinity" | "+Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Only plain decimal syntax: Rust's parser would also take "inf" or "nan".
    Decimal::parse(trimmed)?;
    trimmed.parse::<f64>().ok()
}

/// `true`/`false` and PostgreSQL's `t`/`f`, `1`/`0` (any case).
pub fn parse_bool(text: &str) -> Option<bool> {
    let text = text.trim();
    let is = |word: &str| text.eq_ignore_ascii_case(word);
    if is("true") || is("t") || text == "1" {
        Some(true)
    } else if is("false") || is("f") || text == "0" {
        Some(false)
    } else {
        None
    }
}

/// ISO 8601 / PostgreSQL timestamps: `2026-11-25T14:01:32.123456Z`, `2026-11-25 14:01:32`,
/// `2026-11-25 14:01:32.5+02`, `...+05:30`, `...+0530`, a bare date (midnight). No zone means UTC
/// (DMS converts to UTC). Fractions beyond microseconds are truncated.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    // Untrimmed first: what DMS writes has no spaces around it, and trimming was a visible cost.
    parse_timestamp_fixed(text).or_else(|| {
        let text = text.trim();
        parse_timestamp_fixed(text).or_else(|| parse_timestamp_general(text))
    })
}

/// [`parse_timestamp`] through chrono's format parser: every accepted shape.
fn parse_timestamp_general(text: &str) -> Option<DateTime<Utc>> {
    let date_len = text.find(['T', 't', ' ']).unwrap_or(text.len());
    let date = NaiveDate::parse_from_str(&text[..date_len], "%Y-%m-%d").ok()?;
    if date_len == text.len() {
        return Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)));
    }
    let rest = &text[date_len + 1..];
    let (time, zone) = NaiveTime::parse_and_remainder(rest, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_and_remainder(rest, "%H:%M"))
        .ok()?;
    let local = NaiveDateTime::new(date, time);
    let offset = parse_zone(zone.trim_start())?;
    offset
        .from_local_datetime(&local)
        .single()
        .map(|ts| ts.with_timezone(&Utc))
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][zone]`, the shape PostgreSQL and DMS write, read by position
/// instead of through chrono's format interpreter (several times faster, and every record has at
/// least one timestamp). None for any other shape: [`parse_timestamp`] then decides.
fn parse_timestamp_fixed(text: &str) -> Option<DateTime<Utc>> {
    let fields = timestamp_fields(text)?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(fields.year).ok()?, fields.month, fields.day)?;
    let time =
        NaiveTime::from_hms_nano_opt(fields.hour, fields.minute, fields.second, fields.nanos)?;
    let local = NaiveDateTime::new(date, time);
    if fields.is_utc() {
        // UTC, as DMS writes it: no offset to apply.
        return Some(local.and_utc());
    }
    let offset = parse_zone(fields.zone.trim_start())?;
    offset
        .from_local_datetime(&local)
        .single()
        .map(|ts| ts.with_timezone(&Utc))
}

/// The fields of `YYYY-MM-DD[T ]HH:MM:SS[.fraction]`, read by position, and the zone text after
/// them; their ranges are left to the caller.
struct TimestampFields<'a> {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    zone: &'a str,
}

impl TimestampFields<'_> {
    /// No zone, or `Z`.
    fn is_utc(&self) -> bool {
        matches!(self.zone, "" | "Z" | "z")
    }
}

/// None for any other shape than [`TimestampFields`] reads.
fn timestamp_fields(text: &str) -> Option<TimestampFields<'_>> {
    let bytes = text.as_bytes();
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let mut end = 19;
    let mut nanos = 0;
    if let [b'.', fraction @ ..] = &bytes[19..] {
        let count = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(&fraction[..count])? * 10_u32.pow((9 - count) as u32);
        end = 20 + count;
    }
    Some(TimestampFields {
        year: digits(&bytes[..4])?,
        month: digits(&bytes[5..7])?,
        day: digits(&bytes[8..10])?,
        hour: digits(&bytes[11..13])?,
        minute: digits(&bytes[14..16])?,
        second: digits(&bytes[17..19])?,
        nanos,
        // Every byte before `end` is ASCII, so `end` is a character boundary.
        zone: text.get(end..)?,
    })
}

/// Exactly `YYYY-MM-DD`.
fn parse_date_fixed(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(&bytes[..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(&bytes[5..7])?, digits(&bytes[8..10])?)
}

/// ASCII digits as a number; None if any byte is not a digit.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0_u32, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
    })
}

/// Microseconds since the epoch of [`parse_timestamp`].
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    utc_micros_fixed(text).or_else(|| parse_timestamp(text).map(|ts| ts.timestamp_micros()))
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z]` (UTC, as DMS writes every record's commit time) as
/// microseconds, counted directly from the fields; None for any other text, which
/// [`parse_timestamp`] then reads. Building chrono's date and time values first was a visible
/// cost per record.
fn utc_micros_fixed(text: &str) -> Option<i64> {
    let fields = timestamp_fields(text)?;
    let year = i64::from(fields.year);
    if !fields.is_utc()
        || !(1..=12).contains(&fields.month)
        || fields.day == 0
        || fields.day > days_in_month(year, fields.month)
        || fields.hour > 23
        || fields.minute > 59
        || fields.second > 59
    {
        return None;
    }
    let days = days_from_civil(year, fields.month, fields.day);
    let seconds =
        days * 86_400 + i64::from(fields.hour * 3600 + fields.minute * 60 + fields.second);
    // Nanoseconds truncated to microseconds, as chrono does.
    Some(seconds * 1_000_000 + i64::from(fields.nanos / 1000))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `Z`, empty (UTC), `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS` (PostgreSQL prints seconds for
/// historical zones).
fn parse_zone(zone: &str) -> Option<FixedOffset> {
    if zone.is_empty() || zone == "Z" || zone == "z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let parts: Vec<&str> = if digits.contains(':') {
        digits.split(':').collect()
    } else if digits.len() == 4 {
        vec![&digits[..2], &digits[2..]]
    } else {
        vec![digits]
    };
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut seconds = 0_i32;
    for (part, unit) in parts.iter().zip([3600, 60, 1]) {
        seconds += part.parse::<i32>().ok()? * unit;
    }
    FixedOffset::east_opt(sign * seconds)
}

/// `YYYY-MM-DD` (a timestamp at exactly midnight is accepted too).
pub fn parse_date_days(text: &str) -> Option<i32> {
    let text = text.trim();
    let date = match parse_date_fixed(text)
        .map(Ok)
        .unwrap_or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d"))
    {
        Ok(date) => date,
        Err(_) => {
            let ts = parse_timestamp(text)?;
            if ts.time() != NaiveTime::MIN {
                return None;
            }
            ts.date_naive()
        }
    };
    i32::try_from(
        date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?)
            .num_days(),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// `seconds` and `nanos` since the epoch written `YYYY-MM-DD{separator}HH:MM:SS`, with the
    /// first `digits` digits of the fraction, and `zone`.
    fn timestamp_text(
        seconds: i64,
        nanos: u32,
        digits: usize,
        separator: &str,
        zone: &str,
    ) -> String {
        let ts = DateTime::from_timestamp(seconds, nanos).expect("in range");
        let fraction = if digits == 0 {
            String::new()
        } else {
            format!(".{:09}", nanos)[..=digits].to_string()
        };
        format!(
            "{}{separator}{}{fraction}{zone}",
            ts.format("%Y-%m-%d"),
            ts.format("%H:%M:%S")
        )
    }

    proptest! {
        /// The positional parser agrees with chrono's wherever it answers, and answers for the
        /// shapes PostgreSQL and DMS write.
        #[test]
        fn the_fixed_timestamp_parser_agrees_with_the_general_one(
            seconds in -2_000_000_000_i64..4_000_000_000,
            nanos in 0_u32..1_000_000_000,
            digits in 0_usize..=9,
            separator in prop::sample::select(vec!["T", " ", "t"]),
            zone in prop::sample::select(vec!["", "Z", "+00", "+02", "-05:30", "+0530", "+01:00:00", " +03"]),
        ) {
            let text = timestamp_text(seconds, nanos, digits, separator, zone);
            let fixed = parse_timestamp_fixed(&text);
            prop_assert!(fixed.is_some(), "{text} not read by position");
            prop_assert_eq!(fixed, parse_timestamp_general(&text), "{}", text);
            for padded in [format!(" {text}"), format!("{text} "), format!("\t{text}\n")] {
                prop_assert_eq!(parse_timestamp(&padded), fixed, "{:?}", padded);
            }
        }

        #[test]
        fn the_fixed_parser_never_accepts_what_the_general_one_refuses(text in "[0-9T:. +Z-]{10,32}") {
            if let Some(fixed) = parse_timestamp_fixed(&text) {
                prop_assert_eq!(Some(fixed), parse_timestamp_general(&text), "{}", text);
            }
            if let Some(micros) = utc_micros_fixed(&text) {
                prop_assert_eq!(Some(micros), parse_timestamp_general(&text).map(|ts| ts.timestamp_micros()), "{}", text);
            }
        }

        /// UTC timestamps counted from their fields are chrono's, to the microsecond, over
        /// years 0 to 9999, leap days and sub-microsecond digits included; near misses (a day
        /// past the month's end, an hour of 24) are refused by both.
        #[test]
        fn utc_timestamps_counted_directly_are_chronos(
            seconds in -62_167_219_200_i64..253_402_300_800,
            nanos in 0_u32..1_000_000_000,
            digits in 0_usize..=9,
            zone in prop::sample::select(vec!["", "Z", "z"]),
            day in 28_u32..=32,
            hour in 22_u32..=24,
        ) {
            let text = timestamp_text(seconds, nanos, digits, "T", zone);
            let expected = parse_timestamp_general(&text).map(|ts| ts.timestamp_micros());
            prop_assert!(expected.is_some());
            prop_assert_eq!(utc_micros_fixed(&text), expected, "{}", text);
            let edge = format!("{}-{day:02} {hour:02}:00:00Z", &text[..7]);
            prop_assert_eq!(
                utc_micros_fixed(&edge),
                parse_timestamp_general(&edge).map(|ts| ts.timestamp_micros()),
                "{}", edge
            );
        }

        /// Number text read into a double column is the double serde_json reads from it, to
        /// the bit: printed doubles, and digit strings longer than a double holds.
        #[test]
        fn number_text_into_a_double_is_the_double_serde_json_reads(
            value in any::<f64>().prop_filter("finite", |v| v.is_finite()),
            digits in "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
        ) {
            for text in [value.to_string(), format!("{value:e}"), digits] {
                let expected = serde_json::from_str::<f64>(&text).ok();
                let read = match coerce_number_text(&text, ColumnType::Double) {
                    Some(Cell::Double(v)) => Some(v),
                    _ => None,
                };
                prop_assert_eq!(read.map(f64::to_bits), expected.map(f64::to_bits), "{}", text);
            }
        }
    }

    proptest! {
        /// A number taken apart by the scanner coerces, into every column type, to exactly what
        /// its text does (doubles to the bit).
        #[test]
        fn a_scanned_number_coerces_as_its_text_does(
            value in any::<f64>().prop_filter("finite", |v| v.is_finite()),
            whole in any::<i64>(),
            digits in "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,5})?",
        ) {
            let texts = [
                value.to_string(),
                format!("{value:e}"),
                whole.to_string(),
                (whole / 1_000_000).to_string(),
                digits,
            ];
            let types = [
                ColumnType::Int,
                ColumnType::Long,
                ColumnType::Double,
                ColumnType::Real,
                ColumnType::String,
                ColumnType::Boolean,
                ColumnType::Decimal { precision: 38, scale: 4 },
            ];
            // Followed by the end of the text, or by more bytes than a word the scanner reads.
            let followed = texts
                .iter()
                .flat_map(|text| [(text, text.clone()), (text, format!("{text},\"next\":12345678}}"))]);
            for (text, document) in followed {
                let mut scanner = scan::Scanner::new(document.as_bytes());
                let Some(scan::Scalar::Number(number)) = scanner.scalar() else {
                    return Err(TestCaseError::fail(format!("{document} not scanned as a number")));
                };
                prop_assert_eq!(number.text, text.as_str());
                for ty in types {
                    let bits = |cell: Option<Cell>| match cell {
                        Some(Cell::Double(v)) => format!("{:x}", v.to_bits()),
                        other => format!("{other:?}"),
                    };
                    prop_assert_eq!(
                        bits(coerce_number(&number, ty)),
                        bits(coerce_number_text(text, ty)),
                        "{} as {}", text, ty
                    );
                }
            }
        }
    }

    #[test]
    fn utc_timestamps_counted_directly_know_the_leap_years() {
        for (date, valid) in [
            ("2000-02-29", true),
            ("0000-02-29", true),
            ("2024-02-29", true),
            ("1900-02-29", false),
            ("2100-02-29", false),
            ("2023-02-29", false),
            ("2023-04-31", false),
            ("2023-12-31", true),
            ("2023-13-01", false),
        ] {
            let text = format!("{date}T23:59:59.999999Z");
            let expected = parse_timestamp_general(&text).map(|ts| ts.timestamp_micros());
            assert_eq!(expected.is_some(), valid, "{text}");
            assert_eq!(utc_micros_fixed(&text), expected, "{text}");
        }
    }

    fn ok(value: Value, ty: ColumnType) -> Cell<'static> {
        coerce(&value, ty)
            .map(Cell::into_owned)
            .unwrap_or_else(|e| panic!("{value} as {ty}: {e}"))
    }

    fn err(value: Value, ty: ColumnType) -> String {
        match coerce(&value, ty) {
            Ok(cell) => panic!("{value} as {ty} should fail, got {cell:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn integers_accept_numbers_and_numeric_strings_but_not_fractions_or_overflow() {
        assert_eq!(ok(json!(42), ColumnType::Int), Cell::Int(42));
        assert_eq!(ok(json!("-7"), ColumnType::Int), Cell::Int(-7));
        assert_eq!(ok(json!(3.0), ColumnType::Int), Cell::Int(3));
        assert_eq!(
            ok(json!(9_000_000_000_i64), ColumnType::Long),
            Cell::Long(9_000_000_000)
        );
        assert_eq!(
            err(json!(1.5), ColumnType::Int),
            "expected integer, found 1.5 (not a whole number)"
        );
        assert_eq!(
            err(json!(2_147_483_648_i64), ColumnType::Int),
            "expected integer, found 2147483648 (out of range for a 32-bit integer)"
        );
        assert_eq!(
            err(json!("abc"), ColumnType::Int),
            "expected integer, found \"abc\""
        );
        assert_eq!(
            err(json!(true), ColumnType::Long),
            "expected long, found true"
        );
        assert!(
            err(json!(u64::MAX), ColumnType::Long)
                .starts_with("expected long, found 18446744073709551615")
        );
    }

    #[test]
    fn doubles_accept_numbers_numeric_strings_and_postgres_non_finite_spellings() {
        assert_eq!(ok(json!(37.05), ColumnType::Double), Cell::Double(37.05));
        assert_eq!(ok(json!(12), ColumnType::Double), Cell::Double(12.0));
        assert_eq!(ok(json!("1e3"), ColumnType::Real), Cell::Double(1000.0));
        assert_eq!(
            ok(json!("-Infinity"), ColumnType::Double),
            Cell::Double(f64::NEG_INFINITY)
        );
        assert!(matches!(ok(json!("NaN"), ColumnType::Double), Cell::Double(x) if x.is_nan()));
        assert_eq!(
            err(json!("abc"), ColumnType::Double),
            "expected double, found \"abc\""
        );
        assert_eq!(
            err(json!("inf"), ColumnType::Double),
            "expected double, found \"inf\""
        );
        assert_eq!(
            err(json!([1]), ColumnType::Double),
            "expected double, found [1]"
        );
    }

    #[test]
    fn decimals_are_exact_from_strings_and_number_text() {
        let ty = ColumnType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(ok(json!("12345678.90"), ty), Cell::Decimal(1_234_567_890));
        assert_eq!(ok(json!(0.1), ty), Cell::Decimal(10));
        assert_eq!(ok(json!(7), ty), Cell::Decimal(700));
        assert_eq!(
            err(json!("1.234"), ty),
            "expected decimal(10,2), found \"1.234\" (more fractional digits than the scale)"
        );
        assert_eq!(
            err(json!("123456789.00"), ty),
            "expected decimal(10,2), found \"123456789.00\" (too many digits for the precision)"
        );
        assert_eq!(
            err(json!("12,5"), ty),
            "expected decimal(10,2), found \"12,5\""
        );
    }

    #[test]
    fn booleans_accept_postgres_and_dms_spellings() {
        for (value, expected) in [
            (json!(true), true),
            (json!("false"), false),
            (json!("t"), true),
            (json!("F"), false),
            (json!("1"), true),
            (json!(0), false),
        ] {
            assert_eq!(ok(value, ColumnType::Boolean), Cell::Boolean(expected));
        }
        assert_eq!(
            err(json!("yes"), ColumnType::Boolean),
            "expected boolean, found \"yes\""
        );
        assert_eq!(
            err(json!(2), ColumnType::Boolean),
            "expected boolean, found 2"
        );
    }

    #[test]
    fn timestamps_accept_iso_and_postgres_forms_with_or_without_zone() {
        let expected = 1_795_615_292_123_456_i64;
        for text in [
            "2026-11-25T14:01:32.123456Z",
            "2026-11-25 14:01:32.123456",
            "2026-11-25T16:01:32.123456+02",
            "2026-11-25T16:01:32.123456+02:00",
            "2026-11-25T12:01:32.123456-0200",
            "2026-11-25 14:01:32.123456789",
        ] {
            assert_eq!(
                ok(json!(text), ColumnType::Timestamp),
                Cell::TimestampMicros(expected),
                "{text}"
            );
        }
        assert_eq!(
            ok(json!("2026-11-25 14:01"), ColumnType::Timestamp),
            Cell::TimestampMicros(1_795_615_260_000_000)
        );
        assert_eq!(
            ok(json!("2026-11-25"), ColumnType::Timestamp),
            Cell::TimestampMicros(1_795_564_800_000_000)
        );
        for bad in [
            "2026-13-01 00:00:00",
            "yesterday",
            "2026-11-25T25:00:00",
            "2026-11-25 14:01:32 CET",
            "infinity",
        ] {
            assert!(
                coerce(&json!(bad), ColumnType::Timestamp).is_err(),
                "{bad} must be rejected"
            );
        }
        assert_eq!(
            err(json!(1_795_615_292), ColumnType::Timestamp),
            "expected timestamp, found 1795615292"
        );
    }

    #[test]
    fn dates_accept_iso_dates_and_midnight_timestamps_only() {
        assert_eq!(
            ok(json!("2026-11-25"), ColumnType::Date),
            Cell::Date(20_782)
        );
        assert_eq!(ok(json!("1969-12-31"), ColumnType::Date), Cell::Date(-1));
        assert_eq!(
            ok(json!("2026-11-25T00:00:00Z"), ColumnType::Date),
            Cell::Date(20_782)
        );
        assert_eq!(
            err(json!("2026-11-25 10:00:00"), ColumnType::Date),
            "expected date, found \"2026-11-25 10:00:00\""
        );
    }

    #[test]
    fn strings_take_any_scalar_as_text_and_nested_json_as_compact_text() {
        assert_eq!(
            ok(json!("abc"), ColumnType::String),
            Cell::Text("abc".into())
        );
        assert_eq!(ok(json!(12.5), ColumnType::Text), Cell::Text("12.5".into()));
        assert_eq!(
            ok(json!(false), ColumnType::String),
            Cell::Text("false".into())
        );
        assert_eq!(
            ok(json!({"a": 1}), ColumnType::String),
            Cell::Text("{\"a\":1}".into())
        );
    }

    #[test]
    fn long_offending_values_are_shortened_in_the_message() {
        let message = err(json!("x".repeat(500)), ColumnType::Int);
        assert!(message.chars().count() < 120, "{message}");
        assert!(message.contains('…'));
    }
}
