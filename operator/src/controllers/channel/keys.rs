//! A Channel's generated webhook key: made once, kept unchanged, rotated on request with the
//! previous key accepted for a grace period, and dropped when that ends. Pure functions of the
//! Secret's current data and the clock.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::jiff;
use rand::RngCore;

use crate::controllers::resolve::webhook_keys as wk;

/// A fresh webhook key: 32 random bytes as URL-safe base64 (43 characters of `A-Za-z0-9_-`,
/// which Telegram's `secret_token` accepts).
pub fn new_key() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The generated webhook Secret's next data: unchanged unless a rotation was requested or the
/// previous key expired. Returns the data and whether a rotation happened. Times are written
/// in whole seconds, as the routes file and the status carry them.
pub fn next_webhook_data(
    current: Option<&BTreeMap<String, ByteString>>,
    rotate: bool,
    grace: Duration,
    now: jiff::Timestamp,
    fresh_key: impl FnOnce() -> String,
) -> (BTreeMap<String, ByteString>, bool) {
    let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    let text = |k: &str| {
        current
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let b = |s: String| ByteString(s.into_bytes());
    let mut out = BTreeMap::new();
    match text(wk::CURRENT) {
        Some(cur) if !rotate => {
            out.insert(wk::CURRENT.into(), b(cur));
            out.insert(
                wk::CURRENT_CREATED_AT.into(),
                b(text(wk::CURRENT_CREATED_AT).unwrap_or_else(|| now.to_string())),
            );
            if let (Some(prev), Some(exp)) = (text(wk::PREVIOUS), text(wk::PREVIOUS_EXPIRES_AT))
                && exp.parse::<jiff::Timestamp>().is_ok_and(|t| t > now)
            {
                out.insert(wk::PREVIOUS.into(), b(prev));
                out.insert(wk::PREVIOUS_EXPIRES_AT.into(), b(exp));
            }
            (out, false)
        }
        old => {
            out.insert(wk::CURRENT.into(), b(fresh_key()));
            out.insert(wk::CURRENT_CREATED_AT.into(), b(now.to_string()));
            let rotated = old.is_some();
            if let Some(prev) = old
                && !grace.is_zero()
            {
                let exp = now + jiff::SignedDuration::from_secs(grace.as_secs() as i64);
                out.insert(wk::PREVIOUS.into(), b(prev));
                out.insert(wk::PREVIOUS_EXPIRES_AT.into(), b(exp.to_string()));
            }
            (out, rotated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_url_safe_and_fresh() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn first_reconcile_generates_then_keeps_the_key() {
        let now = at("2026-01-01T00:00:00Z");
        let (first, rotated) =
            next_webhook_data(None, false, Duration::from_secs(900), now, || "k1".into());
        assert!(!rotated);
        assert_eq!(first[wk::CURRENT].0, b"k1");
        let (second, _) = next_webhook_data(
            Some(&first),
            false,
            Duration::from_secs(900),
            at("2026-01-02T00:00:00Z"),
            || panic!("no new key"),
        );
        assert_eq!(
            first, second,
            "an unchanged channel must render identical data (no write)"
        );
    }

    #[test]
    fn rotation_keeps_the_previous_key_until_the_grace_period_ends() {
        let now = at("2026-01-01T00:00:00Z");
        let (first, _) =
            next_webhook_data(None, false, Duration::from_secs(900), now, || "old".into());
        let (rotated, did) =
            next_webhook_data(Some(&first), true, Duration::from_secs(900), now, || {
                "new".into()
            });
        assert!(did);
        assert_eq!(rotated[wk::CURRENT].0, b"new");
        assert_eq!(rotated[wk::PREVIOUS].0, b"old");
        assert_eq!(rotated[wk::PREVIOUS_EXPIRES_AT].0, b"2026-01-01T00:15:00Z");
        // Sub-second clocks are written in whole seconds (the routes file's format).
        let (r2, _) = next_webhook_data(
            Some(&first),
            true,
            Duration::from_secs(900),
            at("2026-01-01T00:00:00.75Z"),
            || "new".into(),
        );
        assert_eq!(r2[wk::PREVIOUS_EXPIRES_AT].0, b"2026-01-01T00:15:00Z");
        let (later, _) = next_webhook_data(
            Some(&rotated),
            false,
            Duration::from_secs(900),
            at("2026-01-01T00:15:01Z"),
            || panic!(),
        );
        assert!(
            !later.contains_key(wk::PREVIOUS),
            "expired previous key must be dropped"
        );
        assert_eq!(later[wk::CURRENT].0, b"new");
    }
}
