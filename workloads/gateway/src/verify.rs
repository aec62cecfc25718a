//! Webhook authentication, exactly as each provider documents it, on the raw request bytes
//! and in constant time. Keys and signatures never appear in an error.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The credential header is absent (401).
    Missing(&'static str),
    /// The credential is present but wrong or malformed (403).
    Invalid(&'static str),
    /// The channel has no non-empty key to check against (503): an empty key would accept an
    /// empty token, or a signature anyone can compute, so nothing is accepted.
    NoKey,
}

/// The keys worth comparing against: an empty (or blank) one never is.
fn usable<'a>(keys: &[&'a str]) -> Result<Vec<&'a str>, Refusal> {
    let k: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !k.trim().is_empty())
        .collect();
    if k.is_empty() {
        Err(Refusal::NoKey)
    } else {
        Ok(k)
    }
}

/// Telegram: `X-Telegram-Bot-Api-Secret-Token` must equal one of the accepted keys (the
/// current one, or an earlier one during a rotation). Compared in constant time.
pub fn telegram_token(header: Option<&[u8]>, accepted: &[&str]) -> Result<(), Refusal> {
    let accepted = usable(accepted)?;
    let got = header.ok_or(Refusal::Missing("X-Telegram-Bot-Api-Secret-Token"))?;
    // Every key is compared, match or not, so timing says nothing about which one matched.
    let ok = accepted.iter().fold(0u8, |acc, k| {
        acc | u8::from(bool::from(k.as_bytes().ct_eq(got)))
    });
    if ok == 1 {
        Ok(())
    } else {
        Err(Refusal::Invalid("X-Telegram-Bot-Api-Secret-Token"))
    }
}

/// Meta (WhatsApp Cloud API, Instagram): `X-Hub-Signature-256: sha256=<hex>`, an
/// HMAC-SHA256 of the exact raw body with the app secret (the current one, or a previous one
/// until its expiry). Verified before any parsing.
pub fn meta_signature(
    header: Option<&[u8]>,
    body: &[u8],
    app_secrets: &[&str],
) -> Result<(), Refusal> {
    let sig = meta_signature_header(header, app_secrets)?;
    meta_signature_matches(&sig, body, app_secrets)
}

/// The first half of [`meta_signature`], before the body is read: that there is a key to
/// check with, and the signature the header holds (present and well-formed).
pub fn meta_signature_header(
    header: Option<&[u8]>,
    app_secrets: &[&str],
) -> Result<Vec<u8>, Refusal> {
    usable(app_secrets)?;
    let got = header.ok_or(Refusal::Missing("X-Hub-Signature-256"))?;
    let hex = got
        .strip_prefix(b"sha256=")
        .ok_or(Refusal::Invalid("X-Hub-Signature-256"))?;
    decode_hex(hex).ok_or(Refusal::Invalid("X-Hub-Signature-256"))
}

/// The second half of [`meta_signature`]: `sig` is the HMAC of `body` with one of the
/// secrets. Every secret is tried, match or not.
pub fn meta_signature_matches(
    sig: &[u8],
    body: &[u8],
    app_secrets: &[&str],
) -> Result<(), Refusal> {
    let app_secrets = usable(app_secrets)?;
    let mut ok = false;
    for secret in &app_secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        ok |= mac.verify_slice(sig).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(Refusal::Invalid("X-Hub-Signature-256"))
    }
}

/// Hex digest of HMAC-SHA256(`key`, `body`) — what Meta puts after `sha256=`.
pub fn meta_sign(key: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn decode_hex(h: &[u8]) -> Option<Vec<u8>> {
    hex::decode(h).ok().filter(|b| b.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_accepts_current_and_previous_keys_only() {
        assert_eq!(telegram_token(Some(b"new"), &["new", "old"]), Ok(()));
        assert_eq!(telegram_token(Some(b"old"), &["new", "old"]), Ok(()));
        assert_eq!(
            telegram_token(Some(b"NEW"), &["new"]),
            Err(Refusal::Invalid("X-Telegram-Bot-Api-Secret-Token"))
        );
        assert_eq!(
            telegram_token(Some(b""), &["new"]),
            Err(Refusal::Invalid("X-Telegram-Bot-Api-Secret-Token"))
        );
        assert_eq!(
            telegram_token(None, &["new"]),
            Err(Refusal::Missing("X-Telegram-Bot-Api-Secret-Token"))
        );
        assert!(telegram_token(Some(b"x"), &[]).is_err());
    }

    #[test]
    fn an_empty_key_accepts_nothing_not_an_empty_token_or_signature() {
        // An empty Telegram key would equal an empty header; an empty app secret gives a
        // signature anyone can compute. Neither is accepted, and the channel says why.
        assert_eq!(telegram_token(Some(b""), &[""]), Err(Refusal::NoKey));
        assert_eq!(telegram_token(Some(b" "), &[" ", ""]), Err(Refusal::NoKey));
        assert_eq!(telegram_token(None, &[]), Err(Refusal::NoKey));
        let body = b"{}";
        let forged = format!("sha256={}", meta_sign("", body));
        assert_eq!(
            meta_signature(Some(forged.as_bytes()), body, &[""]),
            Err(Refusal::NoKey)
        );
        // An empty previous key beside a real one: only the real one counts.
        assert_eq!(
            telegram_token(Some(b""), &["real", ""]),
            Err(Refusal::Invalid("X-Telegram-Bot-Api-Secret-Token"))
        );
        assert_eq!(
            meta_signature(Some(forged.as_bytes()), body, &["real", ""]),
            Err(Refusal::Invalid("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn meta_signature_covers_the_raw_bytes() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = format!("sha256={}", meta_sign("app-secret", body));
        assert_eq!(
            meta_signature(Some(sig.as_bytes()), body, &["app-secret"]),
            Ok(())
        );
        // Same JSON, different whitespace: a different body, so a different signature.
        let respaced = br#"{"object": "whatsapp_business_account", "entry": []}"#;
        assert!(meta_signature(Some(sig.as_bytes()), respaced, &["app-secret"]).is_err());
        assert!(meta_signature(Some(sig.as_bytes()), body, &["other-secret"]).is_err());
        let wrong_prefix = sig.replacen("sha256=", "sha1=", 1);
        assert_eq!(
            meta_signature(Some(wrong_prefix.as_bytes()), body, &["app-secret"]),
            Err(Refusal::Invalid("X-Hub-Signature-256"))
        );
        assert_eq!(
            meta_signature(Some(b"sha256=zz"), body, &["app-secret"]),
            Err(Refusal::Invalid("X-Hub-Signature-256"))
        );
        assert_eq!(
            meta_signature(None, body, &["app-secret"]),
            Err(Refusal::Missing("X-Hub-Signature-256"))
        );
    }
}
