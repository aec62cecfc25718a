//! `Channel`: one messaging channel of a tenant, served by the tenant's gateway.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{DNS1123_SUBDOMAIN, SecretKeyRef, impl_has_conditions};

/// Annotation that requests a new webhook key: set it to any new value (for example a
/// timestamp). The previous key stays valid for `webhook.rotationGracePeriodSeconds` (on a
/// Telegram channel with a public URL, also until Telegram has acknowledged the new key).
pub const ROTATE_ANNOTATION: &str = "xin.dev/rotate-webhook-key";

/// A messaging channel (web widget, Telegram bot, WhatsApp number or Instagram account) in a
/// tenant's namespace. Xin keeps its webhook key in a Secret and routes it through the
/// tenant's gateway.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "xin.dev",
    version = "v1alpha1",
    kind = "Channel",
    namespaced,
    status = "ChannelStatus",
    shortname = "xch",
    category = "xin",
    derive = "PartialEq",
    doc = "A messaging channel of a tenant, served by the tenant's gateway.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Webhook path", type_ = "string", json_path = ".status.webhookPath"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 245").message("metadata.name: a Channel's name must be at most 245 characters (its webhook Secret is <name>-webhook)"),
    validation = Rule::new("self.spec.type != 'telegram' || has(self.spec.telegram)").message("spec.telegram is required when spec.type is telegram"),
    validation = Rule::new("self.spec.type != 'web' || has(self.spec.web)").message("spec.web is required when spec.type is web"),
    validation = Rule::new("self.spec.type != 'whatsapp' || (has(self.spec.meta) && has(self.spec.meta.phoneNumberId))").message("spec.meta with phoneNumberId is required when spec.type is whatsapp"),
    validation = Rule::new("self.spec.type != 'instagram' || (has(self.spec.meta) && has(self.spec.meta.pageId))").message("spec.meta with pageId is required when spec.type is instagram"),
    validation = Rule::new("(self.spec.type in ['whatsapp', 'instagram']) || !has(self.spec.meta)").message("spec.meta is only valid for whatsapp and instagram channels"),
    validation = Rule::new("self.spec.type == 'telegram' || !has(self.spec.telegram)").message("spec.telegram is only valid for telegram channels"),
    validation = Rule::new("self.spec.type == 'web' || !has(self.spec.web)").message("spec.web is only valid for web channels")
)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    /// Provider of the channel. Immutable: create a new Channel to change it.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.type is immutable"))]
    pub type_: ChannelType,
    /// Name shown to end users.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Brand the channel speaks for (used in prompts and replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub brand: Option<String>,
    /// Telegram bot credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramSpec>,
    /// WhatsApp Cloud API / Instagram Messaging credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<MetaSpec>,
    /// Web widget settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebSpec>,
    /// The webhook key and its rotation.
    #[serde(default)]
    pub webhook: WebhookSpec,
    /// Per-channel rate limit, counted by each gateway replica on its own: the gateway scales
    /// to at most 5 replicas, so a channel may be served up to 5 times this rate in total.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    /// Largest request body the gateway accepts (413 above it).
    #[serde(default = "default_max_body")]
    #[schemars(range(min = 1024, max = 16777216))]
    pub max_body_bytes: i32,
    /// Expose the webhook through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Stop accepting messages on this channel (the gateway answers 503) without deleting it.
    #[serde(default)]
    pub suspend: bool,
}

fn default_max_body() -> i32 {
    1024 * 1024
}

/// Messaging providers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    Web,
    Telegram,
    Whatsapp,
    Instagram,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Web => "web",
            ChannelType::Telegram => "telegram",
            ChannelType::Whatsapp => "whatsapp",
            ChannelType::Instagram => "instagram",
        }
    }
}

/// Telegram bot settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramSpec {
    /// Secret key holding the bot token from @BotFather.
    pub bot_token_secret_ref: SecretKeyRef,
}

/// Meta (WhatsApp Cloud API, Instagram Messaging) settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaSpec {
    /// Secret key holding the app secret that signs webhooks (`X-Hub-Signature-256`).
    pub app_secret_ref: SecretKeyRef,
    /// Earlier app secrets still accepted until their expiry, while Meta moves to the new
    /// one (after "Reset app secret", Meta may sign with the old secret for a while).
    /// Expired entries are ignored and may be deleted, with their Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub previous_app_secrets: Vec<ExpiringSecretKeyRef>,
    /// Secret key holding the access token used to send replies.
    pub access_token_secret_ref: SecretKeyRef,
    /// Secret key holding the verify token of the subscription handshake; the webhook key is
    /// used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token_secret_ref: Option<SecretKeyRef>,
    /// WhatsApp phone-number id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[0-9]+$"))]
    pub phone_number_id: Option<String>,
    /// Instagram (Facebook page) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[0-9]+$"))]
    pub page_id: Option<String>,
}

/// Web widget settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSpec {
    /// Origins (scheme://host[:port]) allowed to call the widget endpoints (CORS).
    #[schemars(
        length(min = 1, max = 32),
        inner(
            length(max = 253),
            pattern(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")
        )
    )]
    pub allowed_origins: Vec<String>,
    /// Secret key with which the site signs end-user identity tokens (HMAC-SHA256).
    pub identity_secret_ref: SecretKeyRef,
    /// Also accept identity tokens in the format before expiry and channel binding
    /// (`hex(HMAC(secret, user_id))`), while the site moves to the current one. Such a token
    /// never expires: turn this off as soon as the site is updated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_legacy_identity_tokens: bool,
    /// Let visitors who are not signed in chat: the widget keeps a random visitor id in the
    /// browser and the gateway binds a session to it, with limits per visitor and per client
    /// address. Off: only users the site identifies (identity tokens) can chat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous_visitors: bool,
    /// How the widget looks and greets; the snippet's `data-*` attributes override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<WidgetTheme>,
}

/// The widget's look and greeting, served to the widget by the gateway
/// (`GET /widget/<channel>/config`), so a change needs no new snippet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetTheme {
    /// Colour of the launcher, the header and the visitor's bubbles, `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^#[0-9A-Fa-f]{6}$"))]
    pub primary_color: Option<String>,
    /// Title of the chat panel (the channel's `displayName` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub title: Option<String>,
    /// First message shown in an empty conversation (a localised default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 500))]
    pub welcome_message: Option<String>,
    /// Language of the widget's own texts when the page does not set `data-locale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<WidgetLocale>,
}

/// Languages of the widget's own texts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WidgetLocale {
    /// English, left to right.
    #[serde(rename = "en")]
    En,
    /// Persian, right to left.
    #[serde(rename = "fa")]
    Fa,
}

/// A Secret key that is accepted until a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringSecretKeyRef {
    /// The Secret key.
    pub secret_ref: SecretKeyRef,
    /// Until when it is accepted (RFC 3339).
    pub expires_at: Time,
}

/// The channel's webhook key: generated by Xin unless a Secret is referenced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Use this Secret key instead of a generated one (rotation is then up to you).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// After a rotation, how long the previous key is still accepted (on a Telegram channel with
    /// an Ingress host, at least until Telegram has acknowledged the new key).
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0, max = 604800))]
    pub rotation_grace_period_seconds: i64,
}

fn default_grace() -> i64 {
    15 * 60
}

impl Default for WebhookSpec {
    fn default() -> Self {
        WebhookSpec {
            secret_ref: None,
            rotation_grace_period_seconds: default_grace(),
        }
    }
}

/// Token-bucket rate limit of one gateway replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.burst >= self.requestsPerSecond").message("rateLimit.burst must be at least rateLimit.requestsPerSecond"))]
pub struct RateLimitSpec {
    /// Sustained requests per second, per gateway replica.
    #[serde(default = "default_rps")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: i32,
    /// Requests allowed in a burst, per gateway replica.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: i32,
}

fn default_rps() -> i32 {
    20
}
fn default_burst() -> i32 {
    40
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        RateLimitSpec {
            requests_per_second: default_rps(),
            burst: default_burst(),
        }
    }
}

/// Ingress in front of the gateway for this channel's webhook path.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Public host name.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$")
    )]
    pub host: String,
    /// IngressClass to use; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub class_name: Option<String>,
    /// Secret with the TLS certificate (cert-manager fills it when its annotations are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN))]
    pub tls_secret_name: Option<String>,
    /// Annotations copied onto the Ingress (for example `cert-manager.io/cluster-issuer`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))").message("annotation keys must be Kubernetes qualified names, such as cert-manager.io/cluster-issuer"))]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a Channel. Never holds a secret value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `CredentialsResolved`, and on Telegram channels
    /// `TelegramWebhookRegistered`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Path of the webhook on the tenant's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// Public URL of the webhook when an Ingress host is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Name of the Secret holding the webhook key (never the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_name: Option<String>,
    /// When the current key was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<Time>,
    /// End of the most recent previous key's grace period (absent when there is none); on
    /// Telegram it is kept past that until Telegram acknowledges the new key (`previousKeys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key_expires_at: Option<Time>,
    /// Every earlier key still accepted, newest first (never the value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<PreviousKeyStatus>,
    /// The last value of the rotation annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,
    /// Telegram channels whose key Xin generates and that have a public URL: what Telegram
    /// has acknowledged (`setWebhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_webhook: Option<TelegramWebhookStatus>,
    /// Web channels with an Ingress host, once Ready: how a site embeds the widget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widget: Option<WidgetStatus>,
}

/// How a site embeds the widget of a web channel.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    /// The widget's script on the gateway, named by its content hash (cached for a year).
    pub script_url: String,
    /// Its Subresource Integrity value (`sha384-…`).
    pub integrity: String,
    /// The channel's widget endpoints (`data-channel-url`).
    pub channel_url: String,
    /// The `<script>` tag to paste into the site's pages.
    pub snippet: String,
}

/// An earlier webhook key that is still accepted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviousKeyStatus {
    /// End of its grace period.
    pub expires_at: Time,
    /// Kept past that until Telegram acknowledges the current key (it may sign with this one
    /// until then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_for_telegram: bool,
}

/// The webhook registration with Telegram.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramWebhookStatus {
    /// The URL Telegram delivers to.
    pub url: String,
    /// When Telegram acknowledged the current key at this URL (absent until it has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Time>,
}

impl_has_conditions!(ChannelStatus);
