//! Running one attempt of a run: the rule's action — a signed webhook, a CRM call, an email —
//! with the run's context, through the shared outbound client (tenant URLs and SMTP hosts are
//! checked against the destination policy, after DNS too; a refused one is never contacted).
//! Also [`Actions::preview`]: the same request rendered for a sample event, sent nowhere.
//!
//! Every attempt of a run carries the run's idempotency key: the `Idempotency-Key` header of
//! HTTP actions, the `Message-ID` of an email.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use xin_api::automation::template::{self, Output};
use xin_api::automation::{AutomationRule, check_header};
use xin_runtime::outbound::{Outbound, OutboundError};

use crate::email::{self, Email, EmailError, SmtpSettings};
use crate::queue::Claimed;
use crate::secrets::Secrets;

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A later attempt may succeed (a 5xx, a timeout, a refused connection, any non-2xx).
    Retryable(String),
    /// No attempt can succeed until the rule, a Secret or the platform's policy changes (a
    /// template that does not render, a refused destination, a 5xx SMTP reply): dead-lettered
    /// at once.
    Permanent(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable(m) | Failure::Permanent(m) => m,
        }
    }
}

/// The action kinds (metric labels).
pub fn kind(rule: &AutomationRule) -> &'static str {
    let a = &rule.spec.action;
    if a.webhook.is_some() {
        "webhook"
    } else if a.crm.is_some() {
        "crm"
    } else {
        "email"
    }
}

/// The header that carries a webhook's signature, and the one with its timestamp.
pub const SIGNATURE_HEADER: &str = "X-Xin-Signature-256";
pub const TIMESTAMP_HEADER: &str = "X-Xin-Timestamp";

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`: what a receiver recomputes with the
/// shared key and compares in constant time (rejecting old timestamps to stop replays).
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What templates and webhook bodies see: the stored context plus the run itself.
pub fn context(tenant: &str, run: &Claimed) -> Value {
    let mut c = match &run.context {
        Value::Object(_) => run.context.clone(),
        _ => json!({}),
    };
    c["tenant"] = json!(tenant);
    c["rule"] = json!(run.rule);
    c["run"] = json!({
        "id": run.id,
        "idempotency_key": run.idempotency_key,
        "trigger": run.trigger,
        "scheduled_for": run.scheduled_for.map(|t| t.to_rfc3339()),
    });
    c
}

/// A request about to be sent (or shown).
struct Prepared {
    url: String,
    /// Headers; the third part, when present, is what a preview shows instead of the value
    /// (it came from a Secret).
    headers: Vec<(String, String, Option<String>)>,
    body: Vec<u8>,
}

#[derive(Clone)]
pub struct Actions {
    pub tenant: String,
    pub outbound: Outbound,
    pub secrets: Secrets,
    pub timeout: Duration,
}

impl Actions {
    /// One attempt of `run` of `rule`.
    pub async fn run(&self, rule: &AutomationRule, run: &Claimed) -> Result<(), Failure> {
        let ctx = context(&self.tenant, run);
        let now = chrono::Utc::now().timestamp();
        if let Some(e) = &rule.spec.action.email {
            return self.email(e, &ctx, &run.idempotency_key).await;
        }
        let p = self
            .prepare(rule, &ctx, &run.idempotency_key, &run.correlation_id, now)
            .await?;
        let mut req = self
            .outbound
            .post(&p.url)
            .timeout(self.timeout)
            .body(p.body);
        for (k, v, _) in &p.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match self.outbound.send(req).await {
            Ok(resp) if resp.status.is_success() => Ok(()),
            Ok(resp) => Err(Failure::Retryable(format!(
                "{} answered {}",
                xin_api::destination::redact_url(&p.url),
                resp.status
            ))),
            Err(e @ OutboundError::DestinationNotAllowed { .. }) => {
                Err(Failure::Permanent(e.to_string()))
            }
            Err(e) => Err(Failure::Retryable(format!(
                "{}: {e}",
                xin_api::destination::redact_url(&p.url)
            ))),
        }
    }

    /// The HTTP request of a webhook or CRM action.
    async fn prepare(
        &self,
        rule: &AutomationRule,
        ctx: &Value,
        key: &str,
        correlation_id: &str,
        now: i64,
    ) -> Result<Prepared, Failure> {
        let a = &rule.spec.action;
        let mut headers: Vec<(String, String, Option<String>)> = vec![
            ("Content-Type".into(), "application/json".into(), None),
            ("Idempotency-Key".into(), key.to_string(), None),
            ("X-Correlation-Id".into(), correlation_id.to_string(), None),
        ];
        let secret_err = |e: String| Failure::Retryable(e);
        if let Some(w) = &a.webhook {
            let body = serde_json::to_vec(ctx).map_err(|e| Failure::Permanent(e.to_string()))?;
            if let Some(r) = &w.headers_secret_ref {
                let data = self.secrets.get(&r.name).await.map_err(secret_err)?;
                for (k, v) in data.iter() {
                    check_header(k, v)
                        .map_err(|e| Failure::Permanent(format!("Secret {}: {e}", r.name)))?;
                    let v = String::from_utf8(v.clone()).map_err(|_| {
                        Failure::Permanent(format!(
                            "Secret {}: the value of header {k} is not UTF-8 text",
                            r.name
                        ))
                    })?;
                    headers.push((k.clone(), v, Some(format!("<from Secret {}>", r.name))));
                }
            }
            if let Some(s) = &w.signing_secret_ref {
                let key = self
                    .secrets
                    .key(&s.name, &s.key)
                    .await
                    .map_err(secret_err)?;
                headers.push((TIMESTAMP_HEADER.into(), now.to_string(), None));
                headers.push((
                    SIGNATURE_HEADER.into(),
                    signature(key.as_bytes(), now, &body),
                    Some(format!("sha256=<HMAC with Secret {}/{}>", s.name, s.key)),
                ));
            }
            return Ok(Prepared {
                url: w.url.clone(),
                headers,
                body,
            });
        }
        let Some(c) = &a.crm else {
            return Err(Failure::Permanent("the rule has no HTTP action".into()));
        };
        let body = template::render(&c.body_template, Output::Json, ctx)
            .map_err(|e| Failure::Permanent(format!("spec.action.crm.bodyTemplate {e}")))?;
        let token = self
            .secrets
            .key(&c.auth_secret_ref.name, &c.auth_secret_ref.key)
            .await
            .map_err(secret_err)?;
        headers.push((
            "Authorization".into(),
            format!("Bearer {token}"),
            Some(format!(
                "Bearer <from Secret {}/{}>",
                c.auth_secret_ref.name, c.auth_secret_ref.key
            )),
        ));
        Ok(Prepared {
            url: c.endpoint.clone(),
            headers,
            body: body.into_bytes(),
        })
    }

    async fn smtp(&self, e: &xin_api::automation::EmailAction) -> Result<SmtpSettings, Failure> {
        let data = self
            .secrets
            .get(&e.smtp_secret_ref.name)
            .await
            .map_err(Failure::Retryable)?;
        SmtpSettings::from_secret(&data)
            .map_err(|m| Failure::Permanent(format!("Secret {}: {m}", e.smtp_secret_ref.name)))
    }

    fn render_email(
        e: &xin_api::automation::EmailAction,
        ctx: &Value,
        key: &str,
        tenant: &str,
    ) -> Result<Email, Failure> {
        let subject = template::render(&e.subject_template, Output::Line, ctx)
            .map_err(|m| Failure::Permanent(format!("spec.action.email.subjectTemplate {m}")))?;
        let body = template::render(&e.body_template, Output::Text, ctx)
            .map_err(|m| Failure::Permanent(format!("spec.action.email.bodyTemplate {m}")))?;
        Ok(Email {
            to: e.to.clone(),
            subject,
            body,
            message_id: format!("<{key}@{tenant}.automation.xin>"),
        })
    }

    async fn email(
        &self,
        e: &xin_api::automation::EmailAction,
        ctx: &Value,
        key: &str,
    ) -> Result<(), Failure> {
        let settings = self.smtp(e).await?;
        let message = Self::render_email(e, ctx, key, &self.tenant)?;
        let what = format!("smtp://{}:{}", settings.host, settings.port);
        let addrs = self
            .outbound
            .resolve_checked(&settings.host, &what)
            .await
            .map_err(|err| match err {
                OutboundError::DestinationNotAllowed { .. } => Failure::Permanent(err.to_string()),
                other => Failure::Retryable(other.to_string()),
            })?;
        let mut last = Failure::Retryable(format!("{what}: no address"));
        for ip in addrs {
            match email::send(
                &settings,
                SocketAddr::new(ip, settings.port),
                &message,
                self.timeout,
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(EmailError::Permanent(m)) => {
                    return Err(Failure::Permanent(format!("{what}: {m}")));
                }
                Err(EmailError::Transient(m)) => last = Failure::Retryable(format!("{what}: {m}")),
            }
        }
        Err(last)
    }

    /// The request `rule`'s action would send for a sample run of its trigger, with Secret
    /// values hidden; nothing is sent. The Secrets are read (a missing one is reported).
    pub async fn preview(
        &self,
        rule: &AutomationRule,
        value: &str,
    ) -> Result<xin_api::automation::ActionPreview, String> {
        let sample = template::samples(&rule.spec.trigger)[0];
        let name = rule.metadata.name.clone().unwrap_or_default();
        let mut ctx = template::sample_context(&self.tenant, &name, sample);
        ctx["run"]["idempotency_key"] = json!("xin-preview");
        let sample_name = match sample {
            Some(t) => format!("a sample {} event", t.kind()),
            None => "a sample scheduled run".into(),
        };
        if let Some(e) = &rule.spec.action.email {
            let settings = self.smtp(e).await.map_err(|f| f.message().to_string())?;
            let m = Self::render_email(e, &ctx, "xin-preview", &self.tenant)
                .map_err(|f| f.message().to_string())?;
            return Ok(xin_api::automation::ActionPreview {
                value: value.to_string(),
                method: "SMTP".into(),
                target: format!("smtp://{}:{}", settings.host, settings.port),
                headers: vec![
                    format!("From: {}", settings.from),
                    format!("To: {}", m.to.join(", ")),
                    format!("Message-ID: {}", m.message_id),
                ],
                body: format!("{}\n\n{}", m.subject, m.body),
                sample: sample_name,
            });
        }
        let p = self
            .prepare(
                rule,
                &ctx,
                "xin-preview",
                "preview",
                chrono::Utc::now().timestamp(),
            )
            .await
            .map_err(|f| f.message().to_string())?;
        Ok(xin_api::automation::ActionPreview {
            value: value.to_string(),
            method: "POST".into(),
            target: xin_api::destination::redact_url(&p.url),
            headers: p
                .headers
                .iter()
                .map(|(k, v, hidden)| format!("{k}: {}", hidden.as_deref().unwrap_or(v)))
                .collect(),
            body: String::from_utf8_lossy(&p.body).into_owned(),
            sample: sample_name,
        })
    }
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed: `backoff × 2^(n-1)`
/// capped at `max`, then "equal jitter" (half fixed, half random) so retries of many runs
/// that failed together spread out.
pub fn backoff(attempt: i32, backoff_seconds: i32, max_seconds: i32) -> Duration {
    let exp = (attempt.max(1) - 1).min(30) as u32;
    let base = (backoff_seconds.max(1) as u64).saturating_mul(1u64 << exp);
    let capped = base.min(max_seconds.max(1) as u64) as f64;
    let jitter: f64 = rand::random();
    Duration::from_secs_f64(capped / 2.0 + capped / 2.0 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        for _ in 0..100 {
            let d = backoff(1, 10, 600).as_secs_f64();
            assert!((5.0..=10.0).contains(&d), "{d}");
            let d = backoff(3, 10, 600).as_secs_f64();
            assert!((20.0..=40.0).contains(&d), "{d}");
            let d = backoff(20, 10, 600).as_secs_f64();
            assert!((300.0..=600.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Recomputed independently of `signature`, as a receiver would.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature(b"k", 1_700_000_000, br#"{"a":1}"#), want);
        assert_ne!(signature(b"k", 1_700_000_001, br#"{"a":1}"#), want);
    }
}
