//! The web widget as an end user meets it: a page on a local origin embeds the snippet the
//! operator renders, in a real headless Chromium (Debian's, driven over WebDriver), against
//! the real gateway and orchestrator running with the configuration the operator rendered
//! (see `xin_e2e::local`), answering from acme's example knowledge (examples/acme,
//! ingested by the real worker). Everything is done with the keyboard, as a user without a
//! mouse would; what the page shows is read from its DOM and computed styles.
//!
//! Screenshots of the English and Persian widget are kept in `target/e2e-artifacts/`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use xin_e2e::browser::fantoccini::Client;
use xin_e2e::browser::fantoccini::actions::{InputSource, KeyAction, KeyActions};
use xin_e2e::browser::{Driver, Page, Pages, widget_page};
use xin_e2e::local::{Overrides, gateway_env, orchestrator_env, rendered_env, write_routes};
use xin_e2e::workload::{Workload, free_port};

const TAB: char = '\u{E004}';
const ENTER: char = '\u{E007}';
const SHIFT: char = '\u{E008}';
const ESCAPE: char = '\u{E00C}';

/// The example knowledge of acme, into the test's namespace.
fn acme_knowledge(ns: &str) -> String {
    let dir = xin_e2e::operator::repo_root().join("examples/acme/05-knowledge.yaml");
    let yaml = std::fs::read_to_string(&dir).unwrap();
    format!(
        "{}\n---\n",
        yaml.replace("namespace: xin-acme", &format!("namespace: {ns}"))
    )
}

/// Presses each key of `keys` in turn (WebDriver key actions: real key events, sent to
/// whatever has the focus).
async fn press(c: &Client, keys: &[char]) {
    let mut a = KeyActions::new("keyboard".into());
    for &k in keys {
        a = a
            .then(KeyAction::Down { value: k })
            .then(KeyAction::Up { value: k });
    }
    c.perform_actions(a).await.unwrap();
}

async fn type_text(c: &Client, text: &str) {
    press(c, &text.chars().collect::<Vec<_>>()).await;
}

/// Shift+Tab.
async fn back_tab(c: &Client) {
    let a = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: SHIFT })
        .then(KeyAction::Down { value: TAB })
        .then(KeyAction::Up { value: TAB })
        .then(KeyAction::Up { value: SHIFT });
    c.perform_actions(a).await.unwrap();
}

/// What the widget shows, read from its shadow DOM and computed styles.
const VIEW: &str = r#"
const host = document.querySelector('[data-xin-widget]');
if (!host) return null;
const r = host.shadowRoot, q = s => r.querySelector(s);
const panel = q('.panel'), banner = q('.banner'), input = q('textarea'), send = q('.send');
const launcher = q('.launcher'), root = q('.root');
const rect = e => { const b = e.getBoundingClientRect(); return {left: b.left, right: b.right, width: b.width}; };
const a = r.activeElement;
return {
  connection: host.dataset.connection || null,
  retries: Number(host.dataset.retries || 0),
  open: !panel.hidden,
  title: q('#xin-title').textContent,
  banner: banner.hidden ? null : banner.textContent,
  bannerError: banner.classList.contains('error'),
  inputDisabled: input.disabled,
  placeholder: input.placeholder,
  sendText: send.textContent,
  focus: a ? (a.id || a.className) : null,
  launcher: {expanded: launcher.getAttribute('aria-expanded'), label: launcher.getAttribute('aria-label'),
             background: getComputedStyle(launcher).backgroundColor, rect: rect(launcher)},
  panel: {role: panel.getAttribute('role'), labelledby: panel.getAttribute('aria-labelledby'),
          lang: panel.getAttribute('lang'), direction: getComputedStyle(panel).direction, rect: rect(panel)},
  log: {role: q('.log').getAttribute('role'), live: q('.log').getAttribute('aria-live')},
  messages: Array.from(r.querySelectorAll('.msg')).map(m => {
    const t = m.querySelector('.text');
    const st = getComputedStyle(t);
    return {cls: m.className, text: t.textContent, direction: st.direction, display: st.display, rect: rect(m)};
  }),
  visitor: Object.keys(localStorage).filter(k => k.startsWith('xin-visitor:')).map(k => localStorage.getItem(k))[0] || null,
  viewport: window.innerWidth,
};
"#;

async fn view(c: &Client) -> Value {
    c.execute(VIEW, vec![]).await.unwrap()
}

/// Waits (at most `timeout`) until `check` accepts what the widget shows; the last view on
/// timeout.
async fn wait_view(
    c: &Client,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = view(c).await;
        if !v.is_null() && check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}; the widget shows: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn texts(v: &Value, class: &str) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["cls"].as_str().unwrap().split(' ').any(|c| c == class))
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

fn answered(v: &Value, needle: &str) -> bool {
    texts(v, "bot").iter().any(|t| t.contains(needle))
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = xin_e2e::operator::repo_root().join("target/e2e-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// Opens the widget from the page with the keyboard: Tab to the launcher, Enter.
async fn open_with_keyboard(c: &Client) -> Value {
    wait_view(c, "the widget on the page", Duration::from_secs(20), |_| {
        true
    })
    .await;
    press(c, &[TAB]).await;
    let v = view(c).await;
    assert_eq!(v["focus"], "launcher", "Tab reaches the launcher: {v:#}");
    assert_eq!(v["launcher"]["expanded"], "false");
    press(c, &[ENTER]).await;
    wait_view(
        c,
        "the panel open, the input focused",
        Duration::from_secs(10),
        |v| v["open"] == true && v["focus"] == "xin-input",
    )
    .await
}

/// The gateway's `gateway_refused_requests_total` for `reason`.
fn refused(metrics: &str, reason: &str) -> f64 {
    xin_e2e::http_get(metrics, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("gateway_refused_requests_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_widget_answers_in_a_real_browser() {
    let driver = Driver::start();
    let _operator = OperatorProcess::start(OPERATOR, &[]);
    let gw_port = free_port();
    let gateway = format!("http://127.0.0.1:{gw_port}");
    let snippet = xin_api::widget::snippet(&gateway, "web");
    // The site's pages, on an origin of their own: English, Persian, and one under a strict
    // Content-Security-Policy (no inline script or style at all, Trusted Types required).
    let strict = format!(
        "default-src 'none'; script-src {gateway}; connect-src {gateway}; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'"
    );
    let site = Pages::serve(
        "127.0.0.1:0",
        "127.0.0.1",
        vec![
            Page {
                path: "/en".into(),
                html: widget_page("en", "Acme shop", "Welcome to our shop.", &snippet),
                csp: None,
            },
            Page {
                path: "/fa".into(),
                html: widget_page(
                    "fa",
                    "فروشگاه اکمه",
                    "به فروشگاه ما خوش آمدید.",
                    &snippet.replace(
                        " async>",
                        " data-locale=\"fa\" data-title=\"راهنمای اکمه\" \
                         data-welcome=\"سلام! دربارهٔ ارسال، مرجوعی یا ساعات پشتیبانی بپرسید.\" async>",
                    ),
                ),
                csp: None,
            },
            Page {
                path: "/csp".into(),
                html: widget_page("en", "Strict shop", "Under a strict CSP.", &snippet),
                csp: Some(strict),
            },
        ],
    )
    .unwrap();
    let elsewhere = Pages::serve(
        "127.0.0.1:0",
        "127.0.0.1",
        vec![Page {
            path: "/".into(),
            html: widget_page("en", "Not allowed", "Another site.", &snippet),
            csp: None,
        }],
    )
    .unwrap();

    // The tenant: acme's example knowledge, and a web channel for the site's origin.
    let t = TestTenant::create_with_objects(
        "widget",
        "  network: {allowedDomains: [widget.example]}\n",
        |ns| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: site, namespace: {ns}}}\nstringData: {{identity: site-secret}}\n---\n{}",
                acme_knowledge(ns)
            )
        },
    );
    let ns = t.ns.clone();
    let host = format!("{}.widget.example", t.name);
    apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec:\n  type: web\n  displayName: Acme help widget\n  web:\n    allowedOrigins: ['{}']\n    \
         identitySecretRef: {{name: site, key: identity}}\n    anonymousVisitors: true\n    \
         theme: {{primaryColor: '#0b7a75', title: Acme help, welcomeMessage: 'Hi! Ask about shipping, returns or our support hours.', locale: en}}\n  \
         ingress: {{host: {host}}}\n",
        site.origin
    ));
    ready("tenant", &t.name, "");
    let channel = ready("channel", "web", &ns);
    // The status gives the snippet to paste, for the public host.
    assert_eq!(
        str_at(&channel, "/status/widget/snippet"),
        xin_api::widget::snippet(&format!("https://{host}"), "web")
    );
    assert_eq!(
        str_at(&channel, "/status/widget/integrity"),
        xin_api::widget::integrity()
    );
    // The Ingress routes the widget's endpoints and its script to the gateway.
    let ingress = wait_until("the gateway's Ingress", MINUTE, || {
        get_json(&["ingress", "xin-gateway", "-n", &ns]).ok_or("no Ingress yet".to_string())
    });
    let paths: Vec<String> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["pathType"].as_str().unwrap(),
                p["path"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "Exact /webhooks/web".to_string(),
        "Prefix /widget/web/".to_string(),
        format!("Exact {}", xin_api::widget::script_path()),
    ] {
        assert!(paths.contains(&want), "{want} in {paths:?}");
    }
    ingest(&ns, "faq-2026-11");

    // The gateway and orchestrator as the operator rendered them (no LLM: answers are the
    // best matching passage of the knowledge).
    let dir = std::env::temp_dir().join(format!("xin-widget-{}", t.name));
    let o = Overrides {
        gateway_port: gw_port,
        ..Overrides::local(write_routes(&ns, &dir).unwrap())
    };
    let orch_addr = format!("127.0.0.1:{}", o.orchestrator_port);
    let gw_addr = format!("127.0.0.1:{gw_port}");
    let gw_metrics = format!("127.0.0.1:{}", o.gateway_metrics_port);
    let mut orch = Workload::start(
        "xin-orchestrator",
        "widget-orchestrator",
        &orchestrator_env(&ns, &o).unwrap(),
    );
    orch.wait_ready(&orch_addr, "/ready");
    let gw_env = gateway_env(&ns, &o).unwrap();
    let mut gw = Workload::start("xin-gateway", "widget-gateway", &gw_env);
    gw.wait_ready(&gw_addr, "/ready");
    let db = rendered_env(&ns, "xin-orchestrator")
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v)
        .unwrap();
    let pool = xin_store::connect(&db, 1).await.unwrap();
    let inbox = |sender: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT text FROM gateway_inbox WHERE channel = 'web' AND sender = $1 ORDER BY id",
            )
            .bind(sender)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };

    // 1. English, an anonymous visitor, keyboard only.
    let c = driver.session("en").await;
    c.goto(&format!("{}/en", site.origin)).await.unwrap();
    let v = open_with_keyboard(&c).await;
    assert_eq!(v["title"], "Acme help", "the theme's title");
    assert_eq!(
        texts(&v, "bot"),
        ["Hi! Ask about shipping, returns or our support hours."]
    );
    assert_eq!(v["launcher"]["expanded"], "true");
    assert_eq!(v["panel"]["role"], "dialog");
    assert_eq!(v["panel"]["labelledby"], "xin-title");
    assert_eq!(v["log"]["role"], "log");
    assert_eq!(v["log"]["live"], "polite");
    assert_eq!(v["panel"]["direction"], "ltr");
    assert_eq!(
        v["launcher"]["background"], "rgb(11, 122, 117)",
        "the theme's colour"
    );
    // Tab reaches the send button, Shift+Tab goes back to the input.
    press(&c, &[TAB]).await;
    assert_eq!(view(&c).await["focus"], "send");
    back_tab(&c).await;
    assert_eq!(view(&c).await["focus"], "xin-input");
    type_text(&c, "How long do I have to return an item?").await;
    press(&c, &[TAB, ENTER]).await; // the send button, pressed from the keyboard
    let v = wait_view(&c, "the answer from the knowledge", MINUTE, |v| {
        answered(v, "30 days")
    })
    .await;
    assert_eq!(texts(&v, "me"), ["How long do I have to return an item?"]);
    let visitor = v["visitor"]
        .as_str()
        .expect("a visitor id kept by the browser")
        .to_string();
    assert_eq!(
        inbox(format!("anon:{visitor}")).await,
        ["How long do I have to return an item?"],
        "stored once, under the visitor's own id"
    );
    screenshot(&c, "widget-en.png").await;
    // Escape closes the panel and gives the focus back to the launcher.
    press(&c, &[ESCAPE]).await;
    let v = view(&c).await;
    assert_eq!(
        (v["open"].clone(), v["focus"].clone()),
        (json!(false), json!("launcher"))
    );

    // 2. Offline: the gateway goes away, two messages are typed meanwhile; once it is back
    //    both are delivered once, in order, and answered.
    press(&c, &[ENTER]).await;
    wait_view(&c, "the panel open again", Duration::from_secs(10), |v| {
        v["open"] == true && v["focus"] == "xin-input"
    })
    .await;
    gw.kill();
    let v = wait_view(&c, "the offline banner", MINUTE, |v| {
        v["connection"] == "offline"
    })
    .await;
    assert!(
        v["banner"]
            .as_str()
            .unwrap()
            .starts_with("You are offline."),
        "{v:#}"
    );
    let (q1, q2) = (
        "When do your human agents answer?",
        "How long does international delivery take?",
    );
    type_text(&c, q1).await;
    press(&c, &[ENTER]).await;
    type_text(&c, q2).await;
    press(&c, &[ENTER]).await;
    let v = wait_view(&c, "both messages waiting", Duration::from_secs(10), |v| {
        v["banner"]
            .as_str()
            .is_some_and(|b| b.contains("2 message"))
    })
    .await;
    assert_eq!(texts(&v, "me")[1..], [q1, q2]);
    // Positive evidence of a resend attempt while the gateway is down (the widget counts it).
    wait_view(&c, "a resend attempted while offline", MINUTE, |v| {
        v["retries"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(
        inbox(format!("anon:{visitor}")).await.len(),
        1,
        "nothing stored while down"
    );
    let mut gw = Workload::start("xin-gateway", "widget-gateway-again", &gw_env);
    gw.wait_ready(&gw_addr, "/ready");
    let v = wait_view(&c, "both answered after reconnecting", 2 * MINUTE, |v| {
        answered(v, "Monday to Friday") && answered(v, "5–10 days") && v["banner"].is_null()
    })
    .await;
    assert_eq!(v["connection"], "online");
    assert_eq!(
        inbox(format!("anon:{visitor}")).await,
        ["How long do I have to return an item?", q1, q2],
        "delivered once each, in the order typed"
    );
    c.close().await.unwrap();

    // 3. Persian: right to left, with an English question inside it.
    let c = driver.session("fa").await;
    c.goto(&format!("{}/fa", site.origin)).await.unwrap();
    let v = open_with_keyboard(&c).await;
    assert_eq!(v["panel"]["lang"], "fa");
    assert_eq!(v["title"], "راهنمای اکمه", "data-title overrides the theme");
    assert_eq!(
        texts(&v, "bot"),
        ["سلام! دربارهٔ ارسال، مرجوعی یا ساعات پشتیبانی بپرسید."]
    );
    assert_eq!(v["panel"]["direction"], "rtl");
    assert_eq!(v["placeholder"], "پیام شما");
    assert_eq!(v["sendText"], "ارسال");
    assert_eq!(v["launcher"]["label"], "بستن گفتگو");
    // On the left of the page, as right-to-left pages expect.
    let viewport = v["viewport"].as_f64().unwrap();
    assert!(
        v["launcher"]["rect"]["left"].as_f64().unwrap() < viewport / 2.0,
        "{v:#}"
    );
    type_text(&c, "How long does shipping take in Germany?").await;
    press(&c, &[ENTER]).await;
    let v = wait_view(&c, "the answer in the Persian widget", MINUTE, |v| {
        answered(v, "Germany")
    })
    .await;
    let mine = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["cls"].as_str().unwrap().contains("me"))
        .unwrap()
        .clone();
    // The English sentence is a paragraph in its own direction inside the right-to-left
    // panel (a block of its own: an inline one would take the panel's base direction and
    // move its question mark to the left)…
    assert_eq!(
        (mine["direction"].as_str(), mine["display"].as_str()),
        (Some("ltr"), Some("block"))
    );
    // …and the visitor's bubble sits at the panel's end, the left in Persian.
    let panel = &v["panel"]["rect"];
    let gap_left = mine["rect"]["left"].as_f64().unwrap() - panel["left"].as_f64().unwrap();
    let gap_right = panel["right"].as_f64().unwrap() - mine["rect"]["right"].as_f64().unwrap();
    assert!(
        gap_left < gap_right,
        "the visitor's bubble on the left: {v:#}"
    );
    screenshot(&c, "widget-fa.png").await;
    c.close().await.unwrap();

    // 4. A strict Content-Security-Policy: still styled, still answering.
    let c = driver.session("en").await;
    c.goto(&format!("{}/csp", site.origin)).await.unwrap();
    let v = open_with_keyboard(&c).await;
    assert_eq!(v["launcher"]["background"], "rgb(11, 122, 117)");
    type_text(&c, "What are your support hours?").await;
    press(&c, &[ENTER]).await;
    wait_view(&c, "the answer under a strict CSP", MINUTE, |v| {
        answered(v, "09:00")
    })
    .await;
    c.close().await.unwrap();

    // 5. Another origin: refused, and the widget says so instead of looking offline.
    let before = refused(&gw_metrics, "origin_not_allowed");
    let c = driver.session("en").await;
    c.goto(&format!("{}/", elsewhere.origin)).await.unwrap();
    wait_view(
        &c,
        "the widget on the page",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    press(&c, &[TAB, ENTER]).await;
    let v = wait_view(&c, "the refusal", Duration::from_secs(30), |v| {
        v["open"] == true && !v["banner"].is_null()
    })
    .await;
    assert_eq!(v["banner"], "This chat is not available on this site.");
    assert_eq!(v["bannerError"], true);
    assert_eq!(v["inputDisabled"], true);
    assert_eq!(v["focus"], "close", "the focus stays in the dialog");
    assert!(texts(&v, "me").is_empty());
    assert!(refused(&gw_metrics, "origin_not_allowed") > before);
    c.close().await.unwrap();

    assert!(gw.terminate() && orch.terminate());
    let _ = std::fs::remove_dir_all(&dir);
}
