//! Exact decimal numbers written as text. Rounding, decimal columns and decimal bounds work on
//! the decimal digits, never on binary floating point, so `37.05` rounds to `37.1` exactly as the
//! original (Spark goes through `BigDecimal(Double.toString(x))`) does.

use std::cmp::Ordering;
use std::fmt;

/// A finite decimal number: `±digits × 10^exponent`, normalized (no leading or trailing zeros in
/// `digits`; zero has no digits and is never negative), so equal values are equal structs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// ASCII digits.
    digits: Vec<u8>,
    exponent: i64,
}

/// Why a decimal does not fit a `decimal(p,s)` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalFitError {
    /// More fractional digits than the scale allows.
    Inexact,
    /// More integer digits than `precision - scale` allows.
    Overflow,
}

/// Exponents beyond this are refused: no real value needs them, and shifting by them would
/// allocate without bound.
const MAX_EXPONENT: i64 = 400;

impl Decimal {
    pub fn zero() -> Decimal {
        Decimal {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (also `.5` and `5.`), as Java's BigDecimal
    /// does. Anything else (spaces, `NaN`, hex, empty) is `None`.
    pub fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&sign) = bytes.first()
            && (sign == b'-' || sign == b'+')
        {
            negative = sign == b'-';
            i = 1;
        }
        let mut digits = Vec::with_capacity(bytes.len());
        let mut fraction_digits: i64 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while i < bytes.len() {
            match bytes[i] {
                b'0'..=b'9' => {
                    seen_digit = true;
                    digits.push(bytes[i]);
                    if seen_point {
                        fraction_digits += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return None,
            }
            i += 1;
        }
        if !seen_digit {
            return None;
        }
        let mut exponent: i64 = 0;
        if i < bytes.len() {
            // bytes[i] is the exponent marker.
            let exp_text = &text[i + 1..];
            let exp_digits = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
            if exp_digits.is_empty()
                || !exp_digits.bytes().all(|b| b.is_ascii_digit())
                || exp_digits.len() > 6
            {
                return None;
            }
            exponent = exp_text.parse::<i64>().ok()?;
        }
        Decimal::from_parts(negative, digits, exponent - fraction_digits)
    }

    /// The decimal form of a finite double, from its shortest round-trip representation (what
    /// Rust's `{}` and Java's `Double.toString` print). `None` for NaN and infinities.
    pub fn from_f64(value: f64) -> Option<Decimal> {
        if !value.is_finite() {
            return None;
        }
        Decimal::parse(&format!("{value}"))
    }

    /// The value of `unscaled × 10^-scale` (an Arrow Decimal128 cell).
    pub fn from_unscaled(unscaled: i128, scale: i8) -> Decimal {
        let negative = unscaled < 0;
        let digits = unscaled.unsigned_abs().to_string().into_bytes();
        Decimal::from_parts(negative, digits, -i64::from(scale)).unwrap_or_else(Decimal::zero)
    }

    fn from_parts(negative: bool, mut digits: Vec<u8>, mut exponent: i64) -> Option<Decimal> {
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Some(Decimal::zero());
        }
        let magnitude = exponent + digits.len() as i64;
        if !(-MAX_EXPONENT..=MAX_EXPONENT).contains(&magnitude) {
            return None;
        }
        Some(Decimal {
            negative,
            digits,
            exponent,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    pub fn is_integer(&self) -> bool {
        self.exponent >= 0
    }

    /// Rounds to `decimals` fractional digits, ties away from zero (Java's `RoundingMode.HALF_UP`).
    pub fn round_half_up(&self, decimals: u32) -> Decimal {
        let target = -i64::from(decimals);
        if self.exponent >= target {
            return self.clone();
        }
        let dropped = (target - self.exponent) as usize;
        let len = self.digits.len();
        if dropped > len {
            // Every kept digit is zero and the first dropped digit is a leading zero.
            return Decimal::zero();
        }
        let mut kept = self.digits[..len - dropped].to_vec();
        if self.digits[len - dropped] >= b'5' {
            increment(&mut kept);
        }
        Decimal::from_parts(self.negative, kept, target).unwrap_or_else(Decimal::zero)
    }

    /// The unscaled integer of this value in a `decimal(precision, scale)` column.
    pub fn to_unscaled(&self, precision: u8, scale: i8) -> Result<i128, DecimalFitError> {
        if self.is_zero() {
            return Ok(0);
        }
        let shift = self.exponent + i64::from(scale);
        if shift < 0 {
            return Err(DecimalFitError::Inexact);
        }
        let total_digits = self.digits.len() as i64 + shift;
        if total_digits > i64::from(precision) || total_digits > 38 {
            return Err(DecimalFitError::Overflow);
        }
        let mut unscaled: i128 = 0;
        for &d in &self.digits {
            unscaled = unscaled * 10 + i128::from(d - b'0');
        }
        for _ in 0..shift {
            unscaled *= 10;
        }
        Ok(if self.negative { -unscaled } else { unscaled })
    }

    /// The integer value, if this is an integer that fits in i64.
    pub fn to_i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        if self.digits.len() as i64 + self.exponent > 19 {
            return None;
        }
        let unscaled = self.to_unscaled(38, 0).ok()?;
        i64::try_from(unscaled).ok()
    }

    /// The nearest double (correctly rounded by Rust's parser).
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse::<f64>().unwrap_or(f64::NAN)
    }

    /// Compares values (not representations).
    pub fn cmp_value(&self, other: &Decimal) -> Ordering {
        match (self.sign(), other.sign()) {
            (a, b) if a != b => a.cmp(&b),
            (0, _) => Ordering::Equal,
            (sign, _) => {
                let magnitude = self.cmp_magnitude(other);
                if sign < 0 {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
        }
    }

    fn sign(&self) -> i8 {
        if self.is_zero() {
            0
        } else if self.negative {
            -1
        } else {
            1
        }
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        let self_top = self.exponent + self.digits.len() as i64;
        let other_top = other.exponent + other.digits.len() as i64;
        self_top.cmp(&other_top).then_with(|| {
            // Same position of the leading digit: compare digit by digit, missing digits are zeros.
            let n = self.digits.len().max(other.digits.len());
            for i in 0..n {
                let a = self.digits.get(i).copied().unwrap_or(b'0');
                let b = other.digits.get(i).copied().unwrap_or(b'0');
                if a != b {
                    return a.cmp(&b);
                }
            }
            Ordering::Equal
        })
    }
}

/// Adds one to a digit string, carrying (`999` → `1000`).
fn increment(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, b'1');
}

impl fmt::Display for Decimal {
    /// Plain notation, no exponent: `-0.0012`, `1200`, `37.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        let digits = std::str::from_utf8(&self.digits).map_err(|_| fmt::Error)?;
        if self.exponent >= 0 {
            f.write_str(digits)?;
            for _ in 0..self.exponent {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let fraction = (-self.exponent) as usize;
        if fraction >= digits.len() {
            f.write_str("0.")?;
            for _ in 0..fraction - digits.len() {
                f.write_str("0")?;
            }
            f.write_str(digits)
        } else {
            let (int_part, frac_part) = digits.split_at(digits.len() - fraction);
            write!(f, "{int_part}.{frac_part}")
        }
    }
}

/// The text of a Decimal128 cell with exactly `scale` fractional digits, as Spark prints it
/// (`12.50` for 1250 at scale 2).
pub fn format_unscaled(unscaled: i128, scale: i8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale <= 0 {
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return if unscaled == 0 {
            "0".into()
        } else {
            format!("{sign}{digits}{zeros}")
        };
    }
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    format!("{sign}{int_part}.{frac_part}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text} should parse"))
    }

    #[test]
    fn parses_plain_exponent_and_signed_forms_to_normalized_values() {
        assert_eq!(d("37.050"), d("37.05"));
        assert_eq!(d("1e3"), d("1000"));
        assert_eq!(d("1.5E-3").to_string(), "0.0015");
        assert_eq!(d("-0.000").to_string(), "0");
        assert_eq!(d("+.5").to_string(), "0.5");
        assert_eq!(d("5.").to_string(), "5");
        assert_eq!(d("001200").to_string(), "1200");
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "abc",
            " 1",
            "1 ",
            "NaN",
            "1e",
            "1e+",
            "0x10",
            "1e9999999",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad:?} must not parse");
        }
    }

    #[test]
    fn rounds_half_up_away_from_zero_on_the_decimal_form() {
        let cases = [
            ("37.05", 1, "37.1"),
            ("72.5", 0, "73"),
            ("-2.5", 0, "-3"),
            ("-2.4", 0, "-2"),
            ("2.345", 2, "2.35"),
            ("9.995", 2, "10"),
            ("0.004", 2, "0"),
            ("0.005", 2, "0.01"),
            ("0.0005", 2, "0"),
            ("-0.004", 2, "0"),
            ("40.7127753", 5, "40.71278"),
            ("12", 3, "12"),
        ];
        for (input, decimals, expected) in cases {
            assert_eq!(
                d(input).round_half_up(decimals).to_string(),
                expected,
                "{input} at {decimals}"
            );
        }
    }

    #[test]
    fn from_f64_uses_the_shortest_round_trip_form() {
        assert_eq!(
            Decimal::from_f64(37.05).map(|x| x.to_string()),
            Some("37.05".into())
        );
        assert_eq!(
            Decimal::from_f64(0.1 + 0.2).map(|x| x.to_string()),
            Some("0.30000000000000004".into())
        );
        assert_eq!(
            Decimal::from_f64(1e21).map(|x| x.to_string()),
            Some("1000000000000000000000".into())
        );
        assert_eq!(Decimal::from_f64(f64::NAN), None);
    }

    #[test]
    fn fits_decimal_columns_exactly_or_says_why_not() {
        assert_eq!(d("12.5").to_unscaled(5, 2), Ok(1250));
        assert_eq!(d("-0.01").to_unscaled(5, 2), Ok(-1));
        assert_eq!(d("12.345").to_unscaled(5, 2), Err(DecimalFitError::Inexact));
        assert_eq!(
            d("1234.5").to_unscaled(5, 2),
            Err(DecimalFitError::Overflow)
        );
        assert_eq!(d("999.99").to_unscaled(5, 2), Ok(99999));
        assert_eq!(d("0").to_unscaled(1, 0), Ok(0));
    }

    #[test]
    fn compares_values_across_scales_and_signs() {
        assert_eq!(d("90").cmp_value(&d("90.000")), Ordering::Equal);
        assert_eq!(d("90.000001").cmp_value(&d("90")), Ordering::Greater);
        assert_eq!(d("-90.5").cmp_value(&d("-90")), Ordering::Less);
        assert_eq!(d("0").cmp_value(&d("-0.1")), Ordering::Greater);
        assert_eq!(d("100").cmp_value(&d("99.999")), Ordering::Greater);
        assert_eq!(d("0.1").cmp_value(&d("0.09")), Ordering::Greater);
    }

    #[test]
    fn formats_unscaled_cells_with_their_scale() {
        assert_eq!(format_unscaled(1250, 2), "12.50");
        assert_eq!(format_unscaled(-5, 3), "-0.005");
        assert_eq!(format_unscaled(0, 2), "0.00");
        assert_eq!(format_unscaled(7, 0), "7");
    }

    #[test]
    fn converts_to_integers_and_doubles() {
        assert_eq!(d("1000.0").to_i64(), Some(1000));
        assert_eq!(d("1.5").to_i64(), None);
        assert_eq!(d("9223372036854775808").to_i64(), None);
        assert_eq!(d("-9223372036854775808").to_i64(), Some(i64::MIN));
        assert_eq!(d("37.1").to_f64(), 37.1);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn parsing_arbitrary_text_never_panics(text in "\\PC{0,40}") {
                let _ = Decimal::parse(&text);
            }

            #[test]
            fn finite_doubles_round_trip_through_their_decimal_form(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
                let decimal = Decimal::from_f64(x);
                prop_assert!(decimal.is_some());
                prop_assert_eq!(decimal.map(|d| d.to_f64()), Some(x));
            }

            #[test]
            fn half_up_on_cents_matches_integer_arithmetic(cents in -10_000_000_i64..10_000_000) {
                // cents / 100 rounded to 1 decimal, ties away from zero, computed on integers.
                let tenths = (cents.abs() + 5) / 10 * cents.signum();
                let expected = Decimal::from_unscaled(i128::from(tenths), 1);
                let rounded = Decimal::from_unscaled(i128::from(cents), 2).round_half_up(1);
                prop_assert_eq!(rounded, expected);
            }

            #[test]
            fn value_order_matches_integer_order(a in -1_000_000_i64..1_000_000, b in -1_000_000_i64..1_000_000, sa in 0_i8..6, sb in 0_i8..6) {
                // a×10^-sa vs b×10^-sb, compared exactly on integers scaled to 10^-6.
                let scale = |v: i64, s: i8| i128::from(v) * 10_i128.pow(6 - s as u32);
                let expected = scale(a, sa).cmp(&scale(b, sb));
                prop_assert_eq!(Decimal::from_unscaled(i128::from(a), sa).cmp_value(&Decimal::from_unscaled(i128::from(b), sb)), expected);
            }
        }
    }
}
