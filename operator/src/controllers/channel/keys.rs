//! A Channel's generated webhook keys: made once, kept unchanged, rotated on request with the
//! earlier keys accepted for a grace period, and dropped when that ends — but, on a Telegram
//! channel with a public URL, never before Telegram has acknowledged the current key
//! (`setWebhook`): until then Telegram signs with an earlier one. Pure functions of the
//! Secret's data, the channel and the clock.
//!
//! The Secret's data (`<channel>-webhook`):
//! - `current`, `current-created-at`: the key deliveries should carry, and when it was made;
//! - `previous`, `previous-expires-at`, then `previous-2`, `previous-2-expires-at` … (newest
//!   first, at most [`MAX_PREVIOUS`]): earlier keys and the end of their grace period;
//! - `telegram-registered-key-sha256`, `telegram-registered-url`, `telegram-registered-at`:
//!   the key (by its SHA-256) and URL Telegram last acknowledged, and when.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::jiff;
use kube::ResourceExt;
use rand::RngCore;
use xin_api::channel::{Channel, ChannelType};
use xin_api::routes::{Time, WebhookKey};

/// Earlier keys kept at most (a rotation beyond drops the oldest). Only Telegram not
/// acknowledging several rotations in a row holds more than one past its grace period.
pub const MAX_PREVIOUS: usize = 8;

const CURRENT: &str = "current";
const CURRENT_CREATED_AT: &str = "current-created-at";
const TG_KEY_SHA256: &str = "telegram-registered-key-sha256";
const TG_URL: &str = "telegram-registered-url";
const TG_AT: &str = "telegram-registered-at";

fn previous_key(i: usize) -> String {
    match i {
        0 => "previous".into(),
        i => format!("previous-{}", i + 1),
    }
}

fn previous_expiry(i: usize) -> String {
    format!("{}-expires-at", previous_key(i))
}

/// A fresh webhook key: 32 random bytes as URL-safe base64 (43 characters of `A-Za-z0-9_-`,
/// which Telegram's `secret_token` accepts).
pub fn new_key() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whether Telegram accepts `token` as a webhook `secret_token`: 1–256 characters of
/// `A-Z a-z 0-9 _ -` (<https://core.telegram.org/bots/api#setwebhook>).
pub fn telegram_accepts(token: &[u8]) -> bool {
    (1..=256).contains(&token.len())
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// An earlier key and the end of its grace period.
#[derive(Clone, PartialEq, Eq)]
pub struct Previous {
    pub key: String,
    pub expires_at: jiff::Timestamp,
}

/// What Telegram last acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Hex SHA-256 of the key it was given.
    pub key_sha256: String,
    pub url: String,
    pub at: jiff::Timestamp,
}

/// The keys of a generated webhook Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet {
    pub current: String,
    pub created_at: jiff::Timestamp,
    /// Newest first.
    pub previous: Vec<Previous>,
    pub telegram: Option<Registration>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("created_at", &self.created_at)
            .field(
                "previous_expire_at",
                &self
                    .previous
                    .iter()
                    .map(|p| p.expires_at)
                    .collect::<Vec<_>>(),
            )
            .field("telegram", &self.telegram)
            .finish_non_exhaustive()
    }
}

fn sha256(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

fn whole_seconds(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The public URL Telegram is told to deliver to: the Ingress host and the webhook path.
pub fn public_url(ch: &Channel) -> Option<String> {
    ch.spec.ingress.as_ref().map(|ing| {
        format!(
            "https://{}{}",
            ing.host,
            crate::builders::gateway::webhook_path(&ch.name_any())
        )
    })
}

/// The URL the operator registers with Telegram, when it registers at all: a Telegram
/// channel whose key Xin generates and that has a public URL.
pub fn telegram_url(ch: &Channel) -> Option<String> {
    let generated = ch.spec.webhook.secret_ref.is_none();
    match ch.spec.type_ {
        ChannelType::Telegram if generated => public_url(ch),
        _ => None,
    }
}

impl KeySet {
    /// The key set in a Secret's data; `None` without a current key.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Option<KeySet> {
        let text = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        let time = |k: &str| text(k).and_then(|s| s.parse::<jiff::Timestamp>().ok());
        let current = text(CURRENT)?;
        // An earlier version wrote the creation time with fractions: compared in whole seconds.
        let created_at = whole_seconds(time(CURRENT_CREATED_AT).unwrap_or_default());
        let previous = (0..MAX_PREVIOUS)
            .map_while(|i| {
                Some(Previous {
                    key: text(&previous_key(i))?,
                    expires_at: time(&previous_expiry(i))?,
                })
            })
            .collect();
        let telegram = match (text(TG_KEY_SHA256), text(TG_URL), time(TG_AT)) {
            (Some(key_sha256), Some(url), Some(at)) => Some(Registration {
                key_sha256,
                url,
                at,
            }),
            _ => None,
        };
        Some(KeySet {
            current,
            created_at,
            previous,
            telegram,
        })
    }

    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let b = |s: String| ByteString(s.into_bytes());
        let mut out = BTreeMap::from([
            (CURRENT.to_string(), b(self.current.clone())),
            (
                CURRENT_CREATED_AT.to_string(),
                b(self.created_at.to_string()),
            ),
        ]);
        for (i, p) in self.previous.iter().enumerate() {
            out.insert(previous_key(i), b(p.key.clone()));
            out.insert(previous_expiry(i), b(p.expires_at.to_string()));
        }
        if let Some(r) = &self.telegram {
            out.insert(TG_KEY_SHA256.into(), b(r.key_sha256.clone()));
            out.insert(TG_URL.into(), b(r.url.clone()));
            out.insert(TG_AT.into(), b(r.at.to_string()));
        }
        out
    }

    /// Telegram has acknowledged the current key at `url`.
    pub fn registered_at(&self, url: &str) -> Option<jiff::Timestamp> {
        self.telegram
            .as_ref()
            .filter(|r| r.key_sha256 == sha256(&self.current) && r.url == url)
            .map(|r| r.at)
    }

    /// Earlier keys are held past their grace period: the operator registers this channel
    /// with Telegram and Telegram has not acknowledged the current key yet, so it may still
    /// sign with an earlier one.
    pub fn held(&self, ch: &Channel) -> bool {
        telegram_url(ch).is_some_and(|url| self.registered_at(&url).is_none())
    }

    /// The keys the gateway accepts at `now`: the current one, and each earlier one until it
    /// expires — with no expiry while [`held`](Self::held).
    pub fn accepted(&self, now: jiff::Timestamp, held: bool) -> Vec<WebhookKey> {
        let mut out = vec![WebhookKey {
            key: self.current.clone(),
            expires_at: None,
        }];
        for p in &self.previous {
            if held {
                out.push(WebhookKey {
                    key: p.key.clone(),
                    expires_at: None,
                });
            } else if p.expires_at > now {
                out.push(WebhookKey {
                    key: p.key.clone(),
                    expires_at: Some(Time(p.expires_at)),
                });
            }
        }
        out
    }

    /// Telegram acknowledged the current key at `url` at `now`: recorded, and no earlier key
    /// ends its grace period before now (it was needed until this moment).
    pub fn acknowledged(mut self, url: &str, now: jiff::Timestamp) -> KeySet {
        let now = whole_seconds(now);
        self.telegram = Some(Registration {
            key_sha256: sha256(&self.current),
            url: url.to_string(),
            at: now,
        });
        for p in &mut self.previous {
            p.expires_at = p.expires_at.max(now);
        }
        self
    }
}

/// The next key set: unchanged unless a rotation was requested or an earlier key's time is
/// over. Returns it and whether a rotation happened. Times are whole seconds, as the routes
/// file and the status carry them. `telegram_url`: where the operator registers the channel
/// with Telegram ([`telegram_url`]); then earlier keys stay until Telegram acknowledges the
/// current one, whatever their expiry (see [`KeySet::held`]).
pub fn next_keys(
    current: Option<KeySet>,
    rotate: bool,
    grace: Duration,
    now: jiff::Timestamp,
    telegram_url: Option<&str>,
    fresh_key: impl FnOnce() -> String,
) -> (KeySet, bool) {
    let now = whole_seconds(now);
    let held = |k: &KeySet| telegram_url.is_some_and(|u| k.registered_at(u).is_none());
    match current {
        Some(mut k) if !rotate => {
            let held = held(&k);
            k.previous.retain(|p| held || p.expires_at > now);
            (k, false)
        }
        Some(old) => {
            let was_held = held(&old);
            let mut previous = Vec::with_capacity(MAX_PREVIOUS);
            // The replaced key is needed for the grace period, and until Telegram moves on.
            if !grace.is_zero() || telegram_url.is_some() {
                previous.push(Previous {
                    key: old.current,
                    expires_at: now + jiff::SignedDuration::from_secs(grace.as_secs() as i64),
                });
            }
            previous.extend(
                old.previous
                    .into_iter()
                    .filter(|p| was_held || p.expires_at > now),
            );
            previous.truncate(MAX_PREVIOUS);
            let next = KeySet {
                current: fresh_key(),
                created_at: now,
                previous,
                telegram: old.telegram,
            };
            (next, true)
        }
        None => {
            let first = KeySet {
                current: fresh_key(),
                created_at: now,
                previous: vec![],
                telegram: None,
            };
            (first, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    const GRACE: Duration = Duration::from_secs(900);

    fn telegram(host: Option<&str>) -> Channel {
        let mut spec = serde_json::json!({"type": "telegram", "displayName": "bot",
            "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}}});
        if let Some(h) = host {
            spec["ingress"] = serde_json::json!({"host": h});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": "bot", "namespace": "xin-acme"}, "spec": spec}))
        .unwrap()
    }

    fn keys(k: &KeySet) -> Vec<&str> {
        std::iter::once(k.current.as_str())
            .chain(k.previous.iter().map(|p| p.key.as_str()))
            .collect()
    }

    #[test]
    fn keys_are_url_safe_and_fresh_and_telegram_accepts_them() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(telegram_accepts(a.as_bytes()));
        assert!(telegram_accepts(b"A_z-9"));
        assert!(telegram_accepts(&[b'a'; 256]));
        assert!(!telegram_accepts(&[b'a'; 257]));
        assert!(!telegram_accepts(b""));
        assert!(!telegram_accepts(b"with space"));
        assert!(!telegram_accepts(b"plus+slash/"));
        assert!(!telegram_accepts("ünï".as_bytes()));
    }

    #[test]
    fn first_reconcile_generates_then_keeps_the_key() {
        let now = at("2026-01-01T00:00:00Z");
        let (first, rotated) = next_keys(None, false, GRACE, now, None, || "k1".into());
        assert!(!rotated);
        assert_eq!(first.current, "k1");
        let data = first.to_data();
        let (second, _) = next_keys(
            KeySet::from_data(&data),
            false,
            GRACE,
            at("2026-01-02T00:00:00Z"),
            None,
            || panic!("no new key"),
        );
        assert_eq!(
            data,
            second.to_data(),
            "an unchanged channel must render identical data (no write)"
        );
    }

    #[test]
    fn rotation_keeps_the_previous_key_until_the_grace_period_ends() {
        let now = at("2026-01-01T00:00:00Z");
        let (first, _) = next_keys(None, false, GRACE, now, None, || "old".into());
        let (rotated, did) = next_keys(Some(first), true, GRACE, now, None, || "new".into());
        assert!(did);
        let data = rotated.to_data();
        assert_eq!(data["current"].0, b"new");
        assert_eq!(data["previous"].0, b"old");
        assert_eq!(data["previous-expires-at"].0, b"2026-01-01T00:15:00Z");
        // Sub-second clocks are written in whole seconds (the routes file's format).
        let (first, _) = next_keys(None, false, GRACE, now, None, || "old".into());
        let (r2, _) = next_keys(
            Some(first),
            true,
            GRACE,
            at("2026-01-01T00:00:00.75Z"),
            None,
            || "new".into(),
        );
        assert_eq!(
            r2.to_data()["previous-expires-at"].0,
            b"2026-01-01T00:15:00Z"
        );
        let (later, _) = next_keys(
            KeySet::from_data(&data),
            false,
            GRACE,
            at("2026-01-01T00:15:01Z"),
            None,
            || panic!(),
        );
        assert_eq!(
            keys(&later),
            ["new"],
            "expired previous key must be dropped"
        );
    }

    #[test]
    fn a_second_rotation_in_the_grace_period_keeps_every_key_still_in_it() {
        let t0 = at("2026-01-01T00:00:00Z");
        let (k, _) = next_keys(None, false, GRACE, t0, None, || "k1".into());
        let (k, _) = next_keys(Some(k), true, GRACE, t0, None, || "k2".into());
        let t1 = at("2026-01-01T00:05:00Z");
        let (k, _) = next_keys(Some(k), true, GRACE, t1, None, || "k3".into());
        assert_eq!(keys(&k), ["k3", "k2", "k1"]);
        let data = k.to_data();
        assert_eq!(data["previous-2"].0, b"k1");
        assert_eq!(data["previous-2-expires-at"].0, b"2026-01-01T00:15:00Z");
        let back = KeySet::from_data(&data).unwrap();
        assert_eq!(back, k);
        let accepted = |k: &KeySet, now| -> Vec<String> {
            k.accepted(now, false).into_iter().map(|w| w.key).collect()
        };
        assert_eq!(accepted(&k, t1), ["k3", "k2", "k1"]);
        // k1's grace ends first, then k2's.
        assert_eq!(accepted(&k, at("2026-01-01T00:15:00Z")), ["k3", "k2"]);
        assert_eq!(accepted(&k, at("2026-01-01T00:20:00Z")), ["k3"]);
        // Never more than MAX_PREVIOUS.
        let mut k = k;
        for i in 0..20 {
            k = next_keys(Some(k), true, GRACE, t1, None, || format!("n{i}")).0;
        }
        assert_eq!(k.previous.len(), MAX_PREVIOUS);
        assert_eq!(k.previous[0].key, "n18");
    }

    #[test]
    fn on_telegram_earlier_keys_stay_until_telegram_acknowledged_the_current_one() {
        let ch = telegram(Some("hooks.acme.example"));
        let url = "https://hooks.acme.example/webhooks/bot";
        assert_eq!(telegram_url(&ch).as_deref(), Some(url));
        let t0 = at("2026-01-01T00:00:00Z");
        let (k, _) = next_keys(None, false, GRACE, t0, Some(url), || "k1".into());
        assert!(k.held(&ch), "a first key is not registered yet");
        let k = k.acknowledged(url, t0);
        assert!(!k.held(&ch));
        assert_eq!(k.registered_at(url), Some(t0));
        // Rotated: Telegram still has k1, so k1 stays however long the grace period.
        let (k, _) = next_keys(Some(k), true, Duration::ZERO, t0, Some(url), || "k2".into());
        assert!(k.held(&ch));
        let later = at("2026-01-02T00:00:00Z");
        let (k, _) = next_keys(Some(k), false, GRACE, later, Some(url), || panic!());
        assert_eq!(keys(&k), ["k2", "k1"]);
        let routes = k.accepted(later, true);
        assert_eq!(routes.len(), 2);
        assert!(
            routes.iter().all(|w| w.expires_at.is_none()),
            "no expiry while held"
        );
        // Acknowledged a day later: k1 is kept until then, and dropped after.
        let k = k.acknowledged(url, later);
        assert!(!k.held(&ch));
        assert_eq!(k.previous[0].expires_at, later);
        let (k, _) = next_keys(
            Some(k),
            false,
            GRACE,
            at("2026-01-02T00:00:01Z"),
            Some(url),
            || panic!(),
        );
        assert_eq!(keys(&k), ["k2"]);
        // A new host means a new registration, so earlier keys are held again.
        let moved = telegram(Some("new.acme.example"));
        assert!(k.held(&moved));
        // Without a public URL nothing is registered and the grace period alone counts.
        assert!(!k.held(&telegram(None)));
    }

    #[test]
    fn the_layout_an_earlier_version_wrote_is_read() {
        let b = |s: &str| ByteString(s.as_bytes().to_vec());
        let data = BTreeMap::from([
            ("current".to_string(), b("new")),
            (
                "current-created-at".to_string(),
                b("2026-01-01T00:00:00.5Z"),
            ),
            ("previous".to_string(), b("old")),
            ("previous-expires-at".to_string(), b("2026-01-01T00:15:00Z")),
        ]);
        let k = KeySet::from_data(&data).unwrap();
        assert_eq!(keys(&k), ["new", "old"]);
        assert_eq!(k.created_at, at("2026-01-01T00:00:00Z"));
        assert!(KeySet::from_data(&BTreeMap::new()).is_none());
        let shown = format!("{k:?}");
        assert!(!shown.contains("new") && !shown.contains("old"), "{shown}");
    }
}
