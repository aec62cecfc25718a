//! Widget session tokens: `<base64url(payload)>.<hex HMAC-SHA256>`, issued by the gateway
//! after an identity check and presented by the browser on every later request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn session_mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    // Domain separation: this key also signs service-to-service calls.
    m.update(b"xin-widget-session\n");
    m.update(payload.as_bytes());
    m
}

/// A session token `<base64url(payload)>.<hex mac>` for `user` on `channel`.
pub fn issue_session(key: &[u8], channel: &str, user: &str, expires: i64) -> String {
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"c": channel, "u": user, "exp": expires}).to_string());
    let tag = hex::encode(session_mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// The user of a valid, unexpired session token for `channel`. The MAC is checked (in
/// constant time) before the payload is decoded.
pub fn check_session(key: &[u8], channel: &str, token: &str, now: i64) -> Option<String> {
    let (payload, tag) = token.split_once('.')?;
    let tag = hex::decode(tag).ok()?;
    session_mac(key, payload).verify_slice(&tag).ok()?;
    let v: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (v["c"] == channel && v["exp"].as_i64()? > now).then(|| v["u"].as_str().map(str::to_string))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_to_key_channel_and_time() {
        let t = issue_session(b"k", "web", "user-1", 100);
        assert_eq!(check_session(b"k", "web", &t, 99), Some("user-1".into()));
        assert_eq!(check_session(b"k", "web", &t, 100), None);
        assert_eq!(check_session(b"other", "web", &t, 99), None);
        assert_eq!(check_session(b"k", "web2", &t, 99), None);
        let (p, tag) = t.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"c":"web","u":"admin","exp":999}"#);
        assert_eq!(
            check_session(b"k", "web", &format!("{forged}.{tag}"), 99),
            None
        );
        assert_eq!(check_session(b"k", "web", p, 99), None);
    }
}
