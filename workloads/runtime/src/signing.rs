//! Service-to-service request signing with the tenant's signing key (the
//! `xin-tenant-signing` Secret the operator generates): the gateway signs its calls to the
//! orchestrator, the orchestrator verifies them. The key never travels.
//!
//! `X-Xin-Timestamp: <unix seconds>` and
//! `X-Xin-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>\n<METHOD>\n<path?query>\n" ++ body)>`.
//! A timestamp more than [`MAX_SKEW_SECONDS`] away from the verifier's clock is refused, which
//! bounds replays; comparison is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "x-xin-timestamp";
pub const SIGNATURE_HEADER: &str = "x-xin-signature";
pub const MAX_SKEW_SECONDS: i64 = 300;

fn mac(
    key: &[u8],
    timestamp: i64,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(format!("{timestamp}\n{method}\n{path_and_query}\n").as_bytes());
    m.update(body);
    m
}

/// The `X-Xin-Signature` value for a request.
pub fn sign(key: &[u8], timestamp: i64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    let tag = mac(key, timestamp, method, path_and_query, body)
        .finalize()
        .into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// Why a signed request was refused (no secret material in it).
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Expired,
    Mismatch,
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing_signature",
            SignatureError::Malformed => "malformed_signature",
            SignatureError::Expired => "signature_expired",
            SignatureError::Mismatch => "invalid_signature",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            SignatureError::Missing => "X-Xin-Timestamp and X-Xin-Signature headers are required",
            SignatureError::Malformed => {
                "X-Xin-Signature must be sha256=<64 hex digits> and X-Xin-Timestamp unix seconds"
            }
            SignatureError::Expired => {
                "X-Xin-Timestamp is more than 300 seconds away from the server's clock"
            }
            SignatureError::Mismatch => "X-Xin-Signature does not match the request",
        }
    }
}

/// Verifies a request's signature headers against `key`; `now` is unix seconds.
pub fn verify(
    key: &[u8],
    timestamp: Option<&[u8]>,
    signature: Option<&[u8]>,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let ts: i64 = std::str::from_utf8(ts)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(SignatureError::Malformed)?;
    let sig = sig
        .strip_prefix(b"sha256=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 32)
        .ok_or(SignatureError::Malformed)?;
    if ts.abs_diff(now) > MAX_SKEW_SECONDS as u64 {
        return Err(SignatureError::Expired);
    }
    mac(key, ts, method, path_and_query, body)
        .verify_slice(&sig)
        .map_err(|_| SignatureError::Mismatch)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_every_part_is_covered() {
        let k = b"tenant-key";
        let s = sign(k, 1000, "POST", "/v1/conversations", b"{}");
        let ok = |key: &[u8], ts: &str, m: &str, p: &str, b: &[u8], now| {
            verify(key, Some(ts.as_bytes()), Some(s.as_bytes()), m, p, b, now)
        };
        assert_eq!(
            ok(k, "1000", "POST", "/v1/conversations", b"{}", 1000),
            Ok(())
        );
        assert_eq!(
            ok(k, "1000", "POST", "/v1/conversations", b"{}", 1300),
            Ok(())
        );
        assert_eq!(
            ok(b"other", "1000", "POST", "/v1/conversations", b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(k, "1001", "POST", "/v1/conversations", b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(k, "1000", "GET", "/v1/conversations", b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(k, "1000", "POST", "/v1/conversations/x", b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(k, "1000", "POST", "/v1/conversations", b"{ }", 1000),
            Err(SignatureError::Mismatch)
        );
        // Extreme timestamps are refused, never an overflow.
        assert_eq!(
            ok(
                k,
                &i64::MIN.to_string(),
                "POST",
                "/v1/conversations",
                b"{}",
                i64::MAX
            ),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            ok(k, "1000", "POST", "/v1/conversations", b"{}", 1301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(k, None, Some(s.as_bytes()), "POST", "/", b"", 0),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(k, Some(b"x"), Some(s.as_bytes()), "POST", "/", b"", 0),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(k, Some(b"1"), Some(b"md5=00"), "POST", "/", b"", 0),
            Err(SignatureError::Malformed)
        );
    }
}
