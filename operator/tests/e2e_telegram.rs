//! The operator completes a Telegram key rotation itself: `setWebhook` on a Bot API stand-in
//! with the Channel's public URL and the new key, the earlier keys kept until Telegram has
//! acknowledged and their grace period is over, and a user-supplied token Telegram would
//! refuse is never served. One operator for this file, pointed at the stand-in.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use common::*;
use serde_json::{Value, json};
use xin_e2e::workload::{Answer, Recorded, StandIn};

struct Telegram {
    api: StandIn,
    /// While set, `setWebhook` answers as Telegram does when it is unavailable.
    down: Arc<AtomicBool>,
}

fn telegram() -> &'static Telegram {
    static T: OnceLock<Telegram> = OnceLock::new();
    T.get_or_init(|| {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let api = StandIn::start(move |_| {
            if d.load(Ordering::SeqCst) {
                Answer::json(
                    502,
                    json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
                )
            } else {
                Answer::json(
                    200,
                    json!({"ok": true, "result": true, "description": "Webhook was set"}),
                )
            }
        });
        Telegram { api, down }
    })
}

fn operator() -> &'static OperatorProcess {
    static OP: OnceLock<OperatorProcess> = OnceLock::new();
    OP.get_or_init(|| {
        let base = telegram().api.url();
        OperatorProcess::start(
            OPERATOR,
            &[
                ("XIN_TELEGRAM_API_BASE", base.as_str()),
                ("XIN_TELEGRAM_REGISTER_DELAY_SECONDS", "1"),
            ],
        )
    })
}

/// A Telegram channel `bot` with bot token `token`, `extra` YAML under `spec:`.
fn channel(t: &TestTenant, token: &str, extra: &str) {
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tg, namespace: {ns}}}\nstringData: {{token: '{token}'}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: bot, namespace: {ns}}}\n\
         spec:\n  type: telegram\n  displayName: bot\n  telegram: {{botTokenSecretRef: {{name: tg, key: token}}}}\n{extra}",
        ns = t.ns
    ));
}

/// `setWebhook` calls for bot `token`, in order.
fn set_webhooks(token: &str, seen: &[Recorded]) -> Vec<Value> {
    seen.iter()
        .filter(|r| r.method == "POST" && r.path == format!("/bot{token}/setWebhook"))
        .map(Recorded::json)
        .collect()
}

fn routes_keys(ns: &str) -> Result<Vec<Value>, String> {
    let r: Value = serde_json::from_str(
        &secret_value(ns, "xin-gateway-routes", "routes.json").ok_or("no routes yet")?,
    )
    .map_err(|e| e.to_string())?;
    Ok(r["channels"][0]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn rotate(t: &TestTenant, value: &str) {
    kubectl_ok(&[
        "annotate",
        "--overwrite",
        "channel",
        "bot",
        "-n",
        &t.ns,
        &format!("xin.dev/rotate-webhook-key={value}"),
    ]);
}

fn new_key(ns: &str, than: &str) -> String {
    wait_until("a new current key", MINUTE, || {
        match secret_value(ns, "bot-webhook", "current") {
            Some(k) if k != than => Ok(k),
            other => Err(format!("{:?}", other.map(|_| "unchanged"))),
        }
    })
}

#[test]
fn the_operator_registers_each_new_key_and_keeps_earlier_ones_until_telegram_has_it() {
    operator();
    let tg = telegram();
    let t = TestTenant::create("tgrot", "  network: {allowedDomains: [hooks.example]}\n");
    let token = format!("4242:{}", t.name);
    let host = format!("{}.hooks.example", t.name);
    let url = format!("https://{host}/webhooks/bot");
    channel(
        &t,
        &token,
        &format!("  webhook: {{rotationGracePeriodSeconds: 2}}\n  ingress: {{host: {host}}}\n"),
    );
    ready("channel", "bot", &t.ns);
    let k1 = secret_value(&t.ns, "bot-webhook", "current").unwrap();

    // The first key is registered with the public URL, and the status says so.
    let seen = tg
        .api
        .wait_for("setWebhook with the first key", MINUTE, |s| {
            set_webhooks(&token, s)
                .iter()
                .any(|b| b["secret_token"] == k1.as_str())
        });
    let first = set_webhooks(&token, &seen);
    assert_eq!(first.last().unwrap()["url"], url.as_str());
    let ch = wait_condition(
        "channel",
        "bot",
        &t.ns,
        "TelegramWebhookRegistered",
        "True",
        MINUTE,
    );
    assert_eq!(str_at(&ch, "/status/telegramWebhook/url"), url);
    assert!(!str_at(&ch, "/status/telegramWebhook/registeredAt").is_empty());
    assert!(
        !ch["status"].to_string().contains(&k1),
        "a key leaked into status"
    );

    // Telegram is down: a rotation is not acknowledged, so k1 stays accepted past its grace
    // period — the status shows it held once that period is over.
    tg.down.store(true, Ordering::SeqCst);
    rotate(&t, "1");
    let k2 = new_key(&t.ns, &k1);
    let ch = wait_until("k1 held for Telegram past its grace period", MINUTE, || {
        let c = get_json(&["channel", "bot", "-n", &t.ns]).ok_or("gone")?;
        let held = c["status"]["previousKeys"][0]["heldForTelegram"] == true;
        let failed = condition_reason(&c, "TelegramWebhookRegistered") == "RegistrationFailed";
        if held && failed {
            Ok(c)
        } else {
            Err(c["status"].to_string())
        }
    });
    assert!(
        condition_message(&ch, "TelegramWebhookRegistered").contains("502"),
        "{}",
        condition_message(&ch, "TelegramWebhookRegistered")
    );
    assert!(
        !ch["status"].to_string().contains(&token),
        "the bot token leaked into status"
    );
    assert_eq!(
        secret_value(&t.ns, "bot-webhook", "previous").as_deref(),
        Some(k1.as_str())
    );
    let keys = wait_until("routes with both keys, neither expiring", MINUTE, || {
        let k = routes_keys(&t.ns)?;
        if k.len() == 2 {
            Ok(k)
        } else {
            Err(format!("{k:?}"))
        }
    });
    assert_eq!(keys[0]["key"], k2.as_str());
    assert_eq!(keys[1]["key"], k1.as_str());
    assert!(keys[1].get("expiresAt").is_none(), "{keys:?}");

    // A second rotation while Telegram still has k1: every key still needed stays.
    rotate(&t, "2");
    let k3 = new_key(&t.ns, &k2);
    assert_eq!(
        secret_value(&t.ns, "bot-webhook", "previous").as_deref(),
        Some(k2.as_str())
    );
    assert_eq!(
        secret_value(&t.ns, "bot-webhook", "previous-2").as_deref(),
        Some(k1.as_str())
    );

    // Telegram is back: k3 is registered, and the earlier keys go once acknowledged and past
    // their grace period.
    tg.down.store(false, Ordering::SeqCst);
    let ch = wait_condition(
        "channel",
        "bot",
        &t.ns,
        "TelegramWebhookRegistered",
        "True",
        2 * MINUTE,
    );
    let calls = set_webhooks(&token, &tg.api.requests());
    assert_eq!(calls.last().unwrap()["secret_token"], k3.as_str());
    assert_eq!(calls.last().unwrap()["url"], url.as_str());
    assert!(
        events_for(&t.ns, "bot")
            .iter()
            .any(|(reason, _)| reason == "Registered"),
        "an event records the registration"
    );
    assert!(!str_at(&ch, "/status/telegramWebhook/registeredAt").is_empty());
    wait_until("only k3 left in the Secret and the routes", MINUTE, || {
        let prev = secret_value(&t.ns, "bot-webhook", "previous");
        let keys = routes_keys(&t.ns)?;
        if prev.is_none() && keys.len() == 1 && keys[0]["key"] == k3.as_str() {
            Ok(())
        } else {
            Err(format!("previous: {}, {} keys", prev.is_some(), keys.len()))
        }
    });
}

#[test]
fn without_a_public_url_nothing_is_registered_and_the_condition_says_so() {
    operator();
    let t = TestTenant::create("tgnourl", "");
    let token = format!("4343:{}", t.name);
    channel(&t, &token, "");
    let ch = wait_condition(
        "channel",
        "bot",
        &t.ns,
        "TelegramWebhookRegistered",
        "False",
        MINUTE,
    );
    assert_eq!(
        condition_reason(&ch, "TelegramWebhookRegistered"),
        "NoPublicUrl"
    );
    assert_eq!(condition_status(&ch, "Ready"), Some("True"));
    // The pass that wrote the condition is the one that would have called Telegram.
    assert!(set_webhooks(&token, &telegram().api.requests()).is_empty());
}

#[test]
fn a_user_supplied_token_telegram_would_refuse_is_not_served() {
    operator();
    let t = TestTenant::create("tgbad", "");
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: mine, namespace: {}}}\nstringData: {{k: 'has spaces+slash/'}}\n",
        t.ns
    ));
    channel(
        &t,
        "4444:bad",
        "  webhook: {secretRef: {name: mine, key: k}}\n",
    );
    let ch = wait_until("Ready=False for the token", MINUTE, || {
        let c = get_json(&["channel", "bot", "-n", &t.ns]).ok_or("gone")?;
        match condition_reason(&c, "Ready").as_str() {
            "InvalidTelegramSecretToken" => Ok(c),
            other => Err(other.to_string()),
        }
    });
    assert_eq!(condition_status(&ch, "Ready"), Some("False"));
    let msg = condition_message(&ch, "Ready");
    assert!(msg.contains("mine") && !msg.contains("has spaces"), "{msg}");
    // Fixed: served.
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: mine, namespace: {}}}\nstringData: {{k: 'A-valid_token-1'}}\n",
        t.ns
    ));
    ready("channel", "bot", &t.ns);
}
