//! Parsers for the human units the config file uses: durations (`250ms`,
//! `10s`, `5m`, `2h`, `30d`), sizes (`64KiB`, `10MiB`, plain bytes) and
//! weights (percent with at most two decimals, kept as basis points).
//!
//! Pure functions returning a message on failure; the validator adds the
//! field path.

use std::time::Duration;

/// Parse a duration such as `250ms`, `10s`, `1.5s`, `5m`, `2h`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 250ms, 10s, 5m)"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => return Err(format!("unknown duration unit `{other}` in `{s}` (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse a size such as `64KiB`, `10MiB`, `1GiB`, `512B`, `10KB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 64KiB, 10MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB)")),
    };
    value.checked_mul(mult).ok_or_else(|| format!("size `{s}` is too large"))
}

/// Convert a percent (0–100, at most two decimals) into basis points (0–10000).
pub fn weight_to_bp(w: f64) -> Result<u16, String> {
    if !w.is_finite() || !(0.0..=100.0).contains(&w) {
        return Err(format!("weight {w} is outside 0–100"));
    }
    let bp = (w * 100.0).round();
    if (w * 100.0 - bp).abs() > 1e-6 {
        return Err(format!("weight {w} has more than two decimals"));
    }
    // In range 0..=10000 by the checks above.
    Ok(bp as u16)
}

/// Parse a rate such as `200/s`, `50/m` or `1000/min` into events per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, unit) = s.split_once('/').ok_or_else(|| format!("`{s}` is not a rate (e.g. 200/s, 600/m)"))?;
    let value: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a rate (e.g. 200/s, 600/m)"))?;
    let per_second = match unit.trim() {
        "s" => value,
        "m" | "min" => value / 60.0,
        "h" => value / 3600.0,
        other => return Err(format!("unknown rate unit `/{other}` in `{s}` (use /s, /m or /h)")),
    };
    if !per_second.is_finite() || per_second <= 0.0 {
        return Err(format!("rate `{s}` must be above 0"));
    }
    Ok(per_second)
}

/// Serialize a duration as whole milliseconds (admin views, journal).
pub fn ser_duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn ser_opt_duration_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration_ms(d, s),
        None => s.serialize_none(),
    }
}

/// Render basis points as a percent for humans and JSON (`500` -> 5, `1` -> 0.01).
pub fn bp_to_percent(bp: u16) -> f64 {
    f64::from(bp) / 100.0
}

/// Milliseconds in a duration, saturating.
pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn rates_parse_per_second_minute_hour() {
        assert_eq!(parse_rate("200/s"), Ok(200.0));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert_eq!(parse_rate("60/min"), Ok(1.0));
        assert_eq!(parse_rate("3600/h"), Ok(1.0));
        assert!(parse_rate("200").is_err());
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("-5/s").is_err());
        assert!(parse_rate("5/fortnight").is_err());
    }

    #[test]
    fn weights_keep_two_decimals_exactly() {
        assert_eq!(weight_to_bp(0.0), Ok(0));
        assert_eq!(weight_to_bp(100.0), Ok(10000));
        assert_eq!(weight_to_bp(5.0), Ok(500));
        assert_eq!(weight_to_bp(0.01), Ok(1));
        assert_eq!(weight_to_bp(33.33), Ok(3333));
        assert!(weight_to_bp(101.0).is_err());
        assert!(weight_to_bp(-1.0).is_err());
        assert!(weight_to_bp(1.234).is_err());
        assert!(weight_to_bp(f64::NAN).is_err());
    }
}
