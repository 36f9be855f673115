//! Durations (`30s`, `5m`, `1h30m`), sizes (`1MB`) and rates (`10/minute`) as policies write them.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::error::PolicyError;

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` or a concatenation such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("invalid duration {text:?}: use e.g. 500ms, 30s, 5m, 1h or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Parses `1048576`, `512KB`, `1MB`, `1MiB` (K/M/G are powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let bad = || format!("invalid size {text:?}: use e.g. 64KB, 1MB or a byte count");
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let value: usize = text[..digits].parse().map_err(|_| bad())?;
    let multiplier: usize = match text[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(bad()),
    };
    let size = value.checked_mul(multiplier).ok_or_else(bad)?;
    if size == 0 {
        return Err(format!("size {text:?} must be greater than zero"));
    }
    Ok(size)
}

/// Parses a rate limit `<count>/<period>` (spec 3.5.2).
pub(crate) fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || {
        format!(
            "invalid rate_limit {text:?}: use <count>/<period>, with period second (sec, s), \
             minute (min, m) or hour (hr, h)"
        )
    };
    let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("invalid rate_limit {text:?}: the count must be at least 1"));
    }
    let period = match period.trim().to_ascii_lowercase().as_str() {
        "second" | "sec" | "s" => Duration::from_secs(1),
        "minute" | "min" | "m" => Duration::from_secs(60),
        "hour" | "hr" | "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok((count, period))
}

/// The duration in `value`, or `default` when absent; a bad one is refused naming `field`.
pub(super) fn duration_field(
    field: &str,
    value: Option<&Spanned<String>>,
    default: Duration,
) -> Result<Duration, PolicyError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(&text.value).map_err(|m| PolicyError::invalid(field, text, m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn rates_accept_every_period_alias() {
        for (text, secs) in [
            ("10/second", 1),
            ("10/sec", 1),
            ("10/s", 1),
            ("10/minute", 60),
            ("10/min", 60),
            ("10/m", 60),
            ("10/hour", 3600),
            ("10/hr", 3600),
            ("10/h", 3600),
        ] {
            assert_eq!(parse_rate(text), Ok((10, Duration::from_secs(secs))), "{text}");
        }
        for bad in ["10", "0/minute", "ten/minute", "10/fortnight", "/minute", "-1/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
