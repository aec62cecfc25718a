//! The gateway's routes file: what the operator renders into the `xin-gateway-routes` Secret
//! (key `routes.json`, mounted at `/etc/xin/routes/`) and the gateway reads and reloads. Holds
//! secret values: it only ever lives in that Secret.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::channel::{ChannelType, WidgetTheme};

/// Key of the routes file in the routes Secret.
pub const ROUTES_KEY: &str = "routes.json";
/// Name of the routes Secret in the tenant's namespace.
pub const ROUTES_SECRET: &str = "xin-gateway-routes";
/// Where the gateway container mounts it.
pub const ROUTES_DIR: &str = "/etc/xin/routes";

/// Every channel of one tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    pub tenant: String,
    pub channels: Vec<ChannelRoute>,
}

/// One channel as the gateway serves it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRoute {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: ChannelType,
    /// Path of the webhook, `/webhooks/<channel>`.
    pub path: String,
    pub suspended: bool,
    pub max_body_bytes: i32,
    pub requests_per_second: i32,
    pub burst: i32,
    /// Accepted webhook keys: the current one first, then the previous one until it expires.
    pub keys: Vec<WebhookKey>,
    pub credentials: Credentials,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_id: Option<String>,
    /// Web channels: also accept the identity tokens of Xin before 0.2 (`hex(HMAC(secret,
    /// user_id))`, no expiry, no channel), for sites still moving to the current format.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_identity_tokens: bool,
    /// Web channels: visitors who are not signed in may chat (a session per visitor id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous_visitors: bool,
    /// Web channels: the name shown to end users (the title when the theme has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Web channels: the widget's theme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<WidgetTheme>,
}

/// A webhook key and its validity.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookKey {
    pub key: String,
    /// Until when the key is accepted (RFC 3339 in UTC, whole seconds, on the wire: for
    /// example `2026-11-23T10:00:00Z`); absent for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookKey")
            .field("key", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Provider credentials of a channel (only those its type uses are set).
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<String>,
    /// Meta: the current app secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<String>,
    /// Meta: earlier app secrets still accepted until their expiry (a rotation in progress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_app_secrets: Vec<WebhookKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// routes.json as the operator wrote it while `type` and `expiresAt` were plain strings:
    /// the typed fields read it and write it back byte for byte.
    const OLD_WIRE_FORMAT: &str = r#"{"tenant":"acme","channels":[{"name":"wa","type":"whatsapp","path":"/webhooks/wa","suspended":false,"maxBodyBytes":1048576,"requestsPerSecond":20,"burst":40,"keys":[{"key":"new-key"},{"key":"old-key","expiresAt":"2026-11-23T10:00:00Z"}],"credentials":{"appSecret":"app-secret","accessToken":"access-token"},"phoneNumberId":"106540352242922"},{"name":"site","type":"web","path":"/webhooks/site","suspended":true,"maxBodyBytes":4096,"requestsPerSecond":1,"burst":1,"keys":[{"key":"k"}],"credentials":{"identitySecret":"s"},"allowedOrigins":["https://shop.example"]}]}"#;

    #[test]
    fn routes_json_keeps_its_wire_format() {
        let routes: Routes = serde_json::from_str(OLD_WIRE_FORMAT).unwrap();
        let wa = &routes.channels[0];
        assert_eq!(wa.type_, ChannelType::Whatsapp);
        assert_eq!(routes.channels[1].type_, ChannelType::Web);
        assert_eq!(wa.keys[0].expires_at, None);
        assert_eq!(
            wa.keys[1].expires_at,
            Some(Time("2026-11-23T10:00:00Z".parse().unwrap()))
        );
        assert_eq!(
            wa.keys[1].expires_at.as_ref().unwrap().0.as_second(),
            1_795_428_000
        );
        assert_eq!(serde_json::to_string(&routes).unwrap(), OLD_WIRE_FORMAT);
    }

    #[test]
    fn expiry_reads_any_rfc3339_form_and_is_written_in_utc_whole_seconds() {
        // The operator's webhook Secret may hold a fraction (jiff's `Display`) or an offset.
        for (given, written) in [
            ("2026-11-23T10:00:00.123456789Z", "2026-11-23T10:00:00Z"),
            ("2026-11-23T11:00:00+01:00", "2026-11-23T10:00:00Z"),
        ] {
            let k: WebhookKey =
                serde_json::from_str(&format!(r#"{{"key":"k","expiresAt":"{given}"}}"#)).unwrap();
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!(r#"{{"key":"k","expiresAt":"{written}"}}"#)
            );
        }
    }

    #[test]
    fn an_unknown_channel_type_or_a_bad_expiry_is_refused() {
        let channel = |ty: &str, exp: &str| {
            OLD_WIRE_FORMAT
                .replace(r#""type":"whatsapp""#, &format!(r#""type":"{ty}""#))
                .replace("2026-11-23T10:00:00Z", exp)
        };
        assert!(
            serde_json::from_str::<Routes>(&channel("whatsapp", "2026-11-23T10:00:00Z")).is_ok()
        );
        assert!(serde_json::from_str::<Routes>(&channel("sms", "2026-11-23T10:00:00Z")).is_err());
        assert!(
            serde_json::from_str::<Routes>(&channel("WhatsApp", "2026-11-23T10:00:00Z")).is_err()
        );
        assert!(serde_json::from_str::<Routes>(&channel("whatsapp", "tomorrow")).is_err());
    }
}
