//! How exporter-toolkit (Go) reads a web config's scalars, so the same text means the same here:
//! go-yaml v2's booleans (YAML 1.1: `yes`, `on`, ...), `strconv.ParseInt(s, 0, 64)` for integers
//! and `time.ParseDuration` for durations (`1h30m`, `1.5s`, `250ms`, `10us`).
//!
//! Pure functions on strings; it knows nothing of the config's keys.

use std::time::Duration;

/// go-yaml v2's resolution of a plain scalar as a bool.
pub(super) fn yaml_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// `strconv.ParseInt(text, 0, 64)` as go-yaml applies it to a plain scalar: an optional sign,
/// then decimal, `0x` hex, `0o` or leading-`0` octal, or `0b` binary; `_` between digits.
pub(super) fn parse_int(text: &str) -> Option<i64> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    // Parse the magnitude wider than i64 so that i64::MIN is reachable.
    let magnitude = i128::from(u64::from_str_radix(&digits, radix).ok()?);
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Why a duration was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DurationError {
    Invalid,
    Negative,
    TooLarge,
}

/// `time.ParseDuration`: a sequence of decimal numbers, each with an optional fraction and a
/// unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), e.g. `1h30m` or `1.5s`; `0` alone needs no
/// unit. Negative durations (which Go accepts) are refused: no key here has a use for one.
pub(super) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid);
    }
    // Total in nanoseconds; Go's limit is i64::MAX ns (about 292 years).
    let mut total: u128 = 0;
    let limit = i64::MAX as u128;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::Invalid);
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::Invalid),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationError::TooLarge)?
        };
        let mut value = whole.checked_mul(unit).ok_or(DurationError::TooLarge)?;
        // The fraction, to nanosecond precision (Go truncates the same way).
        let mut scale = unit;
        for d in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value = value
                .checked_add(u128::from(d.saturating_sub(b'0')) * scale)
                .ok_or(DurationError::TooLarge)?;
        }
        total = total.checked_add(value).ok_or(DurationError::TooLarge)?;
        if total > limit {
            return Err(DurationError::TooLarge);
        }
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    let nanos = u64::try_from(total).map_err(|_| DurationError::TooLarge)?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_reads_them() {
        let ok = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e:?}"));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok(".5m"), Duration::from_secs(30));
        assert_eq!(ok("1m0.000000001s"), Duration::new(60, 1));
        assert_eq!(ok("+2s"), Duration::from_secs(2));
        assert_eq!(ok("-0s"), Duration::ZERO);
        for bad in ["", "1", "s", "1x", "1.s.", ".s", "1 s", "1S", "- 1s"] {
            assert_eq!(parse_duration(bad), Err(DurationError::Invalid), "{bad:?}");
        }
        assert_eq!(parse_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("3000000h"), Err(DurationError::TooLarge));
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999h"),
            Err(DurationError::TooLarge)
        );
    }

    #[test]
    fn integers_and_bools_as_go_yaml_reads_them() {
        assert_eq!(parse_int("20"), Some(20));
        assert_eq!(parse_int("+3"), Some(3));
        assert_eq!(parse_int("-1"), Some(-1));
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("0b101"), Some(5));
        assert_eq!(parse_int("1_000"), Some(1000));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "",
            "-",
            "1.5",
            "1e3",
            "ten",
            "9223372036854775808",
            "_1",
            "08",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
        assert_eq!(yaml_bool("yes"), Some(true));
        assert_eq!(yaml_bool("Off"), Some(false));
        assert_eq!(yaml_bool("maybe"), None);
    }
}
