//! The gateway's routes file: what the operator renders into the `xin-gateway-routes` Secret
//! (key `routes.json`, mounted at `/etc/xin/routes/`) and the gateway reads and reloads. Holds
//! secret values: it only ever lives in that Secret.

use serde::{Deserialize, Serialize};

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
    pub type_: String,
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
}

/// A webhook key and its validity.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookKey {
    pub key: String,
    /// RFC 3339; absent for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<String>,
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
