//! Backoff between attempts and `Retry-After` parsing.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rlm_protocol::{Error, ModelResponse, Result};

/// Why one attempt of a model request failed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Option<u16>,
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

/// How often and how patiently a client retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// Runs `attempt` until it succeeds, fails for good, or the retries are used up, waiting [`retry_delay`] between
/// attempts. `provider` and `model` name the request in the warnings.
pub(crate) async fn with_retries<F, Fut>(
    policy: RetryPolicy,
    provider: &str,
    model: &str,
    mut attempt: F,
) -> Result<ModelResponse>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<ModelResponse, Failure>>,
{
    let mut retries = 0;
    loop {
        let failure = match attempt().await {
            Ok(response) => return Ok(response),
            Err(failure) => failure,
        };
        if !failure.retryable || retries >= policy.max_retries {
            let message = if failure.retryable && retries > 0 {
                format!("{} (gave up after {} attempts)", failure.message, retries + 1)
            } else {
                failure.message
            };
            return Err(Error::model(failure.status, message, failure.retryable));
        }
        let delay = retry_delay(retries, policy.initial_backoff, policy.max_backoff, failure.retry_after);
        retries += 1;
        tracing::warn!(
            provider,
            model,
            status = ?failure.status,
            retry = retries,
            max_retries = policy.max_retries,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %failure.message,
            "model request failed; retrying",
        );
        tokio::time::sleep(delay).await;
    }
}

/// Wait before retry number `retry` (0-based): the server's `Retry-After` if given, otherwise exponential backoff with
/// full jitter — uniformly random in `[0, min(max, initial * 2^retry)]`. Never more than `max`.
pub(crate) fn retry_delay(retry: u32, initial: Duration, max: Duration, retry_after: Option<Duration>) -> Duration {
    if let Some(requested) = retry_after {
        return requested.min(max);
    }
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    let ceiling = initial.saturating_mul(factor).min(max);
    ceiling.mul_f64(fastrand::f64())
}

/// Parse a `Retry-After` value: delay seconds (`"120"`, leniently also `"1.5"`) or an IMF-fixdate HTTP date
/// (`"Sun, 06 Nov 1994 08:49:37 GMT"`), relative to `now`. Dates in the past mean "now".
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the Unix epoch of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<u64> {
    let mut parts = value.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u64 = parts.next()?.parse().ok()?;
    let mut time = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || time.next().is_some() {
        return None;
    }
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (year ≥ 1970).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    // Count years from March so the leap day is the last day of the counted year.
    let (year, month) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let day_of_year = (153 * month + 2) / 5 + day - 1;
    let days_before_year = year * 365 + year / 4 - year / 100 + year / 400;
    // 719_468 = days from 0000-03-01 to 1970-01-01.
    days_before_year + day_of_year - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + Duration::from_secs(60)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 PST", now), None);
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for retry in 0..40 {
            let ceiling = (initial * 2u32.saturating_pow(retry.min(20))).min(max);
            let delay = retry_delay(retry, initial, max, None);
            assert!(delay <= ceiling, "retry {retry}: {delay:?} > {ceiling:?}");
        }
        assert_eq!(retry_delay(0, initial, max, Some(Duration::from_secs(5))), max);
        assert_eq!(retry_delay(3, initial, max, Some(Duration::from_millis(300))), Duration::from_millis(300));
    }
}
