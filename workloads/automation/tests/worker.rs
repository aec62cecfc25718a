//! `xin-automation` as a process: rules from the API server, runs through the queue in a real
//! PostgreSQL database, actions to local stand-ins (webhook receiver, CRM) and a real SMTP
//! server; events written by the orchestrator's own statements.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use xin_e2e::workload::{Answer, StandIn};
use xin_e2e::{kubectl_ok, wait_until};

/// Recomputes a webhook's signature as a receiver would: HMAC-SHA256 of "<timestamp>.<body>"
/// with the shared key, compared in constant time (`verify_slice`).
fn verify_signature(key: &[u8], r: &xin_e2e::workload::Recorded) -> Result<(), String> {
    let ts = r.header("x-xin-timestamp").ok_or("no X-Xin-Timestamp")?;
    let sig = r
        .header("x-xin-signature-256")
        .ok_or("no X-Xin-Signature-256")?;
    let age = Utc::now().timestamp() - ts.parse::<i64>().map_err(|e| e.to_string())?;
    if !(0..300).contains(&age) {
        return Err(format!("timestamp {age} s old"));
    }
    let hex_sig = sig.strip_prefix("sha256=").ok_or("no sha256= prefix")?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(hex_sig).map_err(|e| e.to_string())?)
        .map_err(|_| "signature mismatch".to_string())
}

const SIGNING_KEY: &str = "whsec-test-signing-key";

#[tokio::test(flavor = "multi_thread")]
async fn webhook_is_signed_retried_with_one_idempotency_key_and_reported() {
    let env = Env::new("auto-hook").await;
    // The receiver fails twice, then accepts.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let hook = StandIn::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Answer::json(503, json!({"error": "busy"}))
        } else {
            Answer::json(200, json!({"ok": true}))
        }
    });
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: NS}}\nstringData: {{signingKey: {SIGNING_KEY}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: hook-headers, namespace: NS}}\nstringData: {{X-Api-Key: k-123}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: digest, namespace: NS}}\n\
         spec:\n  trigger: {{schedule: {{cron: '0 9 * * 1-5'}}}}\n  \
           action: {{webhook: {{url: '{}/digest', signingSecretRef: {{name: hooks, key: signingKey}}, headersSecretRef: {{name: hook-headers}}}}}}\n  \
           retry: {{maxAttempts: 4, backoffSeconds: 1, maxBackoffSeconds: 2}}\n",
        hook.url()
    ));
    let worker = env.worker(&[]);
    env.annotate("digest", "xin.dev/run-now", "1");
    let rule = env.wait_status("digest", "the manual run to succeed", |s| {
        last_run(s)["state"] == "Succeeded"
    });
    let s = &rule["status"];
    let seen = hook.requests();
    assert_eq!(seen.len(), 3, "two failures, then the success");
    let key = last_run(s)["idempotencyKey"].as_str().unwrap();
    for r in &seen {
        assert_eq!(
            r.header("idempotency-key"),
            Some(key),
            "one key for every attempt"
        );
        assert_eq!(
            r.header("x-api-key"),
            Some("k-123"),
            "extra headers from the Secret"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        verify_signature(SIGNING_KEY.as_bytes(), r).unwrap();
        assert!(verify_signature(b"another key", r).is_err());
    }
    let body = seen[2].json();
    assert_eq!(body["rule"], "digest");
    assert_eq!(body["tenant"], TENANT);
    assert_eq!(body["run"]["trigger"], "manual");
    assert_eq!(body["run"]["idempotency_key"], key);
    assert_eq!(last_run(s)["attempts"], 3);
    assert_eq!(last_run(s)["trigger"], "Manual");
    assert_eq!(
        (
            s["succeeded"].as_i64(),
            s["failed"].as_i64(),
            s["deadLettered"].as_i64()
        ),
        (Some(1), Some(2), Some(0))
    );
    assert_eq!(s["queueDepth"], 0);
    assert!(s["lastRunTime"].is_string());
    assert!(
        s["lastError"].is_null(),
        "the last run succeeded: {}",
        s["lastError"]
    );
    // The next weekday 09:00 in the Tenant's zone.
    let cron = xin_api::automation::schedule::parse_cron("0 9 * * 1-5").unwrap();
    let next =
        xin_api::automation::schedule::next_time(&cron, chrono_tz::Europe::Berlin, Utc::now())
            .unwrap();
    assert_eq!(
        s["nextRunTime"],
        next.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert_eq!(s["operations"][0]["annotation"], "xin.dev/run-now");
    assert_eq!(s["operations"][0]["result"], "Done");
    // The same value again is not a second run.
    assert_eq!(env.runs(&env.uid("digest")).await.len(), 1);

    // Simulate: the next three fire times, in the zone.
    env.annotate("digest", "xin.dev/simulate", "3");
    let rule = env.wait_status("digest", "the simulation", |s| {
        s["simulation"]["value"] == "3"
    });
    let sim = &rule["status"]["simulation"];
    assert_eq!(sim["timeZone"], "Europe/Berlin");
    let want: Vec<String> =
        xin_api::automation::schedule::next_times(&cron, chrono_tz::Europe::Berlin, Utc::now(), 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
    assert_eq!(sim["nextRunTimes"], json!(want));

    // Test the action: rendered, Secret values hidden, nothing sent.
    env.annotate("digest", "xin.dev/test-action", "a");
    let rule = env.wait_status("digest", "the preview", |s| s["preview"]["value"] == "a");
    let p = &rule["status"]["preview"];
    assert_eq!(p["method"], "POST");
    assert_eq!(p["target"], format!("{}/digest", hook.url()));
    let headers: Vec<&str> = p["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        headers.contains(&"X-Api-Key: <from Secret hook-headers>"),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"X-Xin-Signature-256: sha256=<HMAC with Secret hooks/signingKey>"),
        "{headers:?}"
    );
    let shown = rule["status"].to_string();
    assert!(
        !shown.contains("k-123") && !shown.contains(SIGNING_KEY),
        "no Secret value in the status"
    );
    assert_eq!(hook.requests().len(), 3, "the preview sent nothing");
    // Metrics: the attempts by kind and outcome.
    assert_eq!(
        worker.metric(
            "xin_automation_runs_total{tenant=\"acme\",action=\"webhook\",outcome=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        worker.metric(
            "xin_automation_runs_total{tenant=\"acme\",action=\"webhook\",outcome=\"failed\"}"
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn always_failing_runs_are_dead_lettered_then_retried_or_cancelled_by_annotation() {
    let env = Env::new("auto-dead").await;
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let hook = StandIn::start(move |_| {
        if h.load(Ordering::SeqCst) {
            Answer::json(200, json!({}))
        } else {
            Answer::json(500, json!({"error": "down"}))
        }
    });
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: NS}}\nstringData: {{signingKey: {SIGNING_KEY}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: notify, namespace: NS}}\n\
         spec:\n  trigger: {{event: {{types: [ConversationClosed]}}}}\n  \
           action: {{webhook: {{url: '{url}/n?token=s3cr3t', signingSecretRef: {{name: hooks, key: signingKey}}}}}}\n  \
           retry: {{maxAttempts: 2, backoffSeconds: 1, maxBackoffSeconds: 1}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: slow, namespace: NS}}\n\
         spec:\n  trigger: {{event: {{types: [ConversationClosed]}}}}\n  \
           action: {{webhook: {{url: '{url}/slow'}}}}\n  \
           retry: {{maxAttempts: 3, backoffSeconds: 3600, maxBackoffSeconds: 3600}}\n",
        url = hook.url()
    ));
    let worker = env.worker(&[]);
    env.annotate("notify", "xin.dev/run-now", "first");
    let rule = env.wait_status("notify", "the run to be dead-lettered", |s| {
        last_run(s)["state"] == "DeadLettered"
    });
    let s = &rule["status"];
    assert_eq!(
        (s["deadLettered"].as_i64(), s["failed"].as_i64()),
        (Some(1), Some(1))
    );
    let err = s["lastError"].as_str().unwrap();
    assert!(
        err.contains("500") && err.contains("attempt 2 of 2"),
        "{err}"
    );
    assert!(
        !s.to_string().contains("s3cr3t"),
        "the URL's query is not shown: {s}"
    );
    let id = last_run(s)["id"].as_i64().unwrap();

    // The receiver recovers; the dead letter is queued again and succeeds, same key.
    healthy.store(true, Ordering::SeqCst);
    env.annotate("notify", "xin.dev/retry-run", &id.to_string());
    let rule = env.wait_status("notify", "the retried run to succeed", |s| {
        last_run(s)["state"] == "Succeeded"
    });
    assert_eq!(last_run(&rule["status"])["id"], id);
    let keys: std::collections::BTreeSet<_> = hook
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/n"))
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "one idempotency key across attempts and the retry: {keys:?}"
    );
    // Retrying it again is refused: it is not dead-lettered.
    env.annotate("notify", "xin.dev/retry-run", "999999");
    let rule = env.wait_status("notify", "the refusal", |s| {
        s["operations"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["value"] == "999999"))
    });
    let op = rule["status"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["annotation"] == "xin.dev/retry-run")
        .unwrap()
        .clone();
    assert_eq!(
        (op["result"].as_str(), op["message"].as_str()),
        (Some("Refused"), Some("this rule has no run 999999"))
    );

    // A run waiting an hour for its retry is cancelled.
    healthy.store(false, Ordering::SeqCst);
    env.annotate("slow", "xin.dev/run-now", "x");
    let rule = env.wait_status("slow", "the run to wait for its retry", |s| {
        last_run(s)["state"] == "Pending" && last_run(s)["attempts"] == 1
    });
    let id = last_run(&rule["status"])["id"].as_i64().unwrap();
    wait_until("the queue-depth gauges", MINUTE, || {
        let (slow, all) = (
            worker.metric("xin_automation_queue_depth{tenant=\"acme\",rule=\"slow\"}"),
            worker.metric("xin_automation_queue_depth_all{tenant=\"acme\"}"),
        );
        if (slow, all) == (1.0, 1.0) {
            Ok(())
        } else {
            Err(format!("{slow} {all}"))
        }
    });
    env.annotate("slow", "xin.dev/cancel-run", &id.to_string());
    let rule = env.wait_status("slow", "the cancellation", |s| {
        last_run(s)["state"] == "Cancelled"
    });
    assert_eq!(rule["status"]["queueDepth"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_events_fire_matching_rules_and_message_text_stays_a_json_string() {
    let env = Env::new("auto-event").await;
    let crm = StandIn::start(|_| Answer::json(201, json!({"id": "T-1"})));
    let hook = StandIn::start(|_| Answer::json(200, json!({})));
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: crm, namespace: NS}}\nstringData: {{token: crm-bearer-token}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: refunds, namespace: NS}}\n\
         spec:\n  trigger: {{event: {{types: [MessageReceived], filter: {{channels: [web], textContains: REFUND}}}}}}\n  \
           action:\n    crm:\n      endpoint: '{crm}/api/tickets'\n      authSecretRef: {{name: crm, key: token}}\n      \
             bodyTemplate: '{{\"text\": {{{{ message.text }}}}, \"conversation\": {{{{ conversation.id }}}}, \"channel\": {{{{ conversation.channel }}}}}}'\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: handoff, namespace: NS}}\n\
         spec:\n  trigger: {{event: {{types: [HandoffRequested]}}}}\n  action: {{webhook: {{url: '{hook}/handoff'}}}}\n",
        crm = crm.url(),
        hook = hook.url()
    ));
    let _worker = env.worker(&[]);
    // The orchestrator's own statements: a conversation on `web` and one on `telegram`.
    use xin_orchestrator::db;
    let pool = &env.pool;
    let (web, _) = db::find_or_create(pool, TENANT, "web", "visitor-1", "corr-1")
        .await
        .unwrap();
    let (tg, _) = db::find_or_create(pool, TENANT, "telegram", "42", "corr-2")
        .await
        .unwrap();
    let evil = "I want a refund\", \"admin\": true, \"x\": \"} {{ 7*7 }}";
    for (conv, text, handoff) in [
        (&web.id, evil, false),
        (&web.id, "just browsing", false),
        (&tg.id, "refund please", false),
        (&web.id, "let me talk to a human", true),
    ] {
        let m = db::NewMessage {
            tenant: TENANT,
            conversation_id: conv,
            text,
            client_message_id: None,
            correlation_id: "corr-m",
            handoff,
        };
        db::add_user_message(pool, &m).await.unwrap();
    }
    let got = crm.wait_for("the CRM call", MINUTE, |r| !r.is_empty());
    let body: Value = serde_json::from_slice(&got[0].body).expect("the CRM body is JSON");
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "the text added no field: {body}"
    );
    assert_eq!(body["text"], evil);
    assert_eq!(body["conversation"], web.id.as_str());
    assert_eq!(body["channel"], "web");
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer crm-bearer-token")
    );
    let h = hook.wait_for("the handoff webhook", MINUTE, |r| !r.is_empty());
    let hb = h[0].json();
    assert_eq!(hb["event"]["type"], "HandoffRequested");
    assert_eq!(hb["handoff"]["trigger"], "keyword");
    assert_eq!(hb["message"]["text"], "let me talk to a human");
    assert_eq!(hb["conversation"]["id"], web.id.as_str());
    // Every event was read (positive evidence), and only the matching one fired the CRM rule.
    eventually("every outbox event processed", MINUTE, || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_events WHERE processed_at IS NULL")
                .fetch_one(pool)
                .await
                .map_err(|e| e.to_string())?;
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        }
    })
    .await;
    let runs = env.runs(&env.uid("refunds")).await;
    assert_eq!(
        runs.len(),
        1,
        "only the web message with the text fired: {runs:?}"
    );
    assert_eq!(crm.requests().len(), 1);
    env.wait_status("refunds", "the run in the status", |s| {
        s["succeeded"] == 1 && last_run(s)["trigger"] == "Event"
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn email_goes_over_starttls_with_the_run_key_as_message_id() {
    let env = Env::new("auto-mail").await;
    let smtp = common::smtp::server();
    let ca = std::fs::read_to_string(&smtp.ca).unwrap();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "smtp", "namespace": env.ns()},
        "stringData": {"host": "127.0.0.1", "port": smtp.addr.port().to_string(), "username": smtp.user,
                       "password": smtp.password, "from": "Xin <automation@acme.example>", "ca.crt": ca},
    });
    xin_e2e::apply(&secret.to_string());
    let mut bad = secret.clone();
    bad["metadata"]["name"] = json!("smtp-bad");
    bad["stringData"]["password"] = json!("wrong-smtp-password");
    xin_e2e::apply(&bad.to_string());
    env.apply(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {name: digest, namespace: NS}\n\
         spec:\n  trigger: {schedule: {cron: '0 8 * * *'}}\n  action:\n    email:\n      smtpSecretRef: {name: smtp}\n      \
           to: [ops@acme.example]\n      subjectTemplate: 'Digest for {{ tenant }} ({{ run.trigger }})'\n      \
           bodyTemplate: 'Rule {{ rule }}, run {{ run.id }}.'\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {name: badauth, namespace: NS}\n\
         spec:\n  trigger: {schedule: {cron: '0 8 * * *'}}\n  action:\n    email:\n      smtpSecretRef: {name: smtp-bad}\n      \
           to: [ops@acme.example]\n      subjectTemplate: 'bad'\n      bodyTemplate: 'body'\n",
    );
    let _worker = env.worker(&[]);
    env.annotate("digest", "xin.dev/run-now", "1");
    env.annotate("badauth", "xin.dev/run-now", "1");
    let rule = env.wait_status("digest", "the email run to succeed", |s| {
        last_run(s)["state"] == "Succeeded"
    });
    let key = last_run(&rule["status"])["idempotencyKey"]
        .as_str()
        .unwrap()
        .to_string();
    let message_id = format!("Message-ID: <{key}@acme.automation.xin>");
    let eml = wait_until("the message in the relay's maildir", MINUTE, || {
        for e in std::fs::read_dir(&smtp.maildir).map_err(|e| e.to_string())? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.extension().is_some_and(|x| x == "eml")
                && let Ok(t) = std::fs::read_to_string(&p)
                && t.contains(&message_id)
            {
                return Ok(t);
            }
        }
        Err("not yet".into())
    });
    assert!(eml.contains("Subject: Digest for acme (manual)"), "{eml}");
    assert!(eml.contains("To: ops@acme.example"), "{eml}");
    // A refused login is permanent: dead-lettered at once, without the password.
    let rule = env.wait_status("badauth", "the refused login to be dead-lettered", |s| {
        last_run(s)["state"] == "DeadLettered"
    });
    let s = &rule["status"];
    assert_eq!(last_run(s)["attempts"], 1, "no retry of a 535");
    assert!(
        s["lastError"].as_str().unwrap().contains("535"),
        "{}",
        s["lastError"]
    );
    assert!(!s.to_string().contains("wrong-smtp-password"));
}

/// Rules whose cursor says the worker was last there an hour ago, each `catchUp` policy, and
/// one suspended meanwhile and resumed.
#[tokio::test(flavor = "multi_thread")]
async fn missed_schedules_follow_catch_up_and_suspension_pauses_without_a_restart() {
    let env = Env::new("auto-cron").await;
    let hook = StandIn::start(|_| Answer::json(200, json!({})));
    let rule = |name: &str, policy: &str, suspend: bool| {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: {name}, namespace: NS}}\n\
             spec:\n  trigger: {{schedule: {{cron: '*/5 * * * *', timeZone: Europe/Berlin, catchUp: {policy}}}}}\n  \
               action: {{webhook: {{url: '{}/{name}'}}}}\n  suspend: {suspend}\n",
            hook.url()
        )
    };
    for (n, p, s) in [
        ("skip", "Skip", false),
        ("once", "RunOnce", false),
        ("all", "RunAll", false),
        ("paused", "RunOnce", true),
    ] {
        env.apply(&rule(n, p, s));
    }
    // The worker was last here an hour ago: 12 fire times of */5 missed.
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    for n in ["skip", "once", "all", "paused"] {
        sqlx::query("INSERT INTO automation_schedules (rule_uid, tenant, rule, schedule, cursor) VALUES ($1, $2, $3, $4, $5)")
            .bind(env.uid(n))
            .bind(TENANT)
            .bind(n)
            .bind("*/5 * * * * Europe/Berlin")
            .bind(hour_ago)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let started = Utc::now();
    let _worker = env.worker(&[
        ("AUTOMATION_CATCH_UP_LIMIT", "5"),
        ("AUTOMATION_SCHEDULE_TOLERANCE_SECONDS", "1"),
    ]);
    let cursor = |uid: String| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<Utc>>(
                "SELECT cursor FROM automation_schedules WHERE rule_uid = $1",
            )
            .bind(uid)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Positive evidence the scheduler has been over every active rule.
    for n in ["skip", "once", "all"] {
        let uid = env.uid(n);
        eventually("the cursor to move", MINUTE, || {
            let c = cursor(uid.clone());
            async move {
                if c.await >= started {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            }
        })
        .await;
    }
    let missed = |runs: &[xin_automation::queue::RunRow]| {
        runs.iter()
            .filter(|r| {
                r.scheduled_for
                    .is_some_and(|t| t < started - chrono::Duration::seconds(1))
            })
            .count()
    };
    assert_eq!(
        missed(&env.runs(&env.uid("skip")).await),
        0,
        "Skip drops missed runs"
    );
    let once = env.runs(&env.uid("once")).await;
    assert_eq!(missed(&once), 1, "RunOnce makes up with one run");
    let all = env.runs(&env.uid("all")).await;
    assert_eq!(
        missed(&all),
        5,
        "RunAll makes up each, bounded by AUTOMATION_CATCH_UP_LIMIT"
    );
    let mut times: Vec<_> = all.iter().filter_map(|r| r.scheduled_for).collect();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), all.len(), "one run per scheduled time");
    // The suspended rule was not touched meanwhile, and shows no next run.
    assert!(cursor(env.uid("paused")).await < started);
    assert!(env.runs(&env.uid("paused")).await.is_empty());
    env.wait_status("paused", "a status without a next run", |s| {
        s["queueDepth"] == 0 && s["nextRunTime"].is_null()
    });
    // Resumed without a restart: RunOnce makes up for the suspension with one run.
    kubectl_ok(&[
        "patch",
        "automationrule",
        "paused",
        "-n",
        env.ns(),
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let uid = env.uid("paused");
    let resumed = Utc::now();
    eventually("the resumed rule's catch-up run", MINUTE, || {
        let pool = env.pool.clone();
        let uid = uid.clone();
        async move {
            let runs = xin_automation::queue::runs_of(&pool, &uid)
                .await
                .map_err(|e| e.to_string())?;
            let made_up: Vec<_> = runs
                .iter()
                .filter(|r| {
                    r.scheduled_for
                        .is_some_and(|t| t < resumed - chrono::Duration::seconds(1))
                })
                .collect();
            if made_up.len() == 1 && made_up[0].state == "succeeded" {
                Ok(())
            } else {
                Err(format!("{runs:?}"))
            }
        }
    })
    .await;
    env.wait_status(
        "paused",
        "a next run and the made-up run once resumed",
        |s| s["nextRunTime"].is_string() && s["succeeded"].as_i64() >= Some(1),
    );
    // Every run that was queued was delivered exactly once.
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM automation_runs")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    eventually("every queued run delivered", MINUTE, || async {
        let n = hook.requests().len() as i64;
        if n == queued {
            Ok(())
        } else {
            Err(format!("{n} of {queued}"))
        }
    })
    .await;
    let keys: std::collections::BTreeSet<_> = hook
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len() as i64, queued, "one delivery per run");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_never_fire_a_run_twice() {
    let env = Env::new("auto-two").await;
    let hook = StandIn::start(|_| Answer::json(200, json!({})));
    env.apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: every, namespace: NS}}\n\
         spec:\n  trigger: {{schedule: {{cron: '* * * * *', catchUp: RunAll}}}}\n  action: {{webhook: {{url: '{u}/cron'}}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: created, namespace: NS}}\n\
         spec:\n  trigger: {{event: {{types: [ConversationCreated]}}}}\n  action: {{webhook: {{url: '{u}/event'}}}}\n",
        u = hook.url()
    ));
    // Both workers decide the same 30 missed minutes, and read the same outbox.
    sqlx::query("INSERT INTO automation_schedules (rule_uid, tenant, rule, schedule, cursor) VALUES ($1, $2, 'every', '* * * * * Europe/Berlin', $3)")
        .bind(env.uid("every"))
        .bind(TENANT)
        .bind(Utc::now() - chrono::Duration::minutes(30))
        .execute(&env.pool)
        .await
        .unwrap();
    for i in 0..100 {
        xin_orchestrator::db::find_or_create(&env.pool, TENANT, "web", &format!("v{i}"), "c")
            .await
            .unwrap();
    }
    let _a = env.worker(&[]);
    let _b = env.worker(&[]);
    let queued = |path: &'static str| {
        let r = hook.requests();
        let keys: Vec<String> = r
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.header("idempotency-key").unwrap().to_string())
            .collect();
        keys
    };
    eventually("100 event runs delivered", MINUTE, || async {
        let n = queued("/event").len();
        if n >= 100 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    eventually("the missed minutes delivered", MINUTE, || async {
        let n = queued("/cron").len();
        if n >= 30 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    for (path, rule) in [("/event", "created"), ("/cron", "every")] {
        // Once every run is finished (a new minute may queue one more meanwhile).
        let uid = env.uid(rule);
        let runs = eventually("every run finished", MINUTE, || async {
            let runs = env.runs(&uid).await;
            let keys = queued(path);
            if runs.iter().all(|r| r.state == "succeeded") && runs.len() == keys.len() {
                Ok(runs)
            } else {
                Err(format!("{} runs, {} deliveries", runs.len(), keys.len()))
            }
        })
        .await;
        let keys = queued(path);
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{path}: a run delivered twice");
        let run_keys: std::collections::BTreeSet<_> =
            runs.iter().map(|r| &r.idempotency_key).collect();
        assert_eq!(run_keys, unique, "{path}: each run delivered once");
        assert!(runs.iter().all(|r| r.attempts == 1));
    }
}

/// `kill -9` while the receiver holds the request: the lease runs out, another worker runs it
/// again with the same key, and the run ends succeeded once.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_run_loses_nothing_and_the_run_completes_once() {
    let env = Env::new("auto-kill").await;
    let first = Arc::new(AtomicBool::new(true));
    let f = first.clone();
    let hook = StandIn::start(move |_| {
        let mut a = Answer::json(200, json!({}));
        if f.swap(false, Ordering::SeqCst) {
            a.delay = Duration::from_secs(30); // the first delivery hangs
        }
        a
    });
    env.apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: once, namespace: NS}}\n\
         spec:\n  trigger: {{schedule: {{cron: '0 9 * * *'}}}}\n  action: {{webhook: {{url: '{}/hook'}}}}\n",
        hook.url()
    ));
    let fast = [
        ("AUTOMATION_LEASE_SECONDS", "4"),
        ("AUTOMATION_ACTION_TIMEOUT_SECONDS", "2"),
    ];
    let mut a = env.worker(&fast);
    env.annotate("once", "xin.dev/run-now", "1");
    hook.wait_for("the first delivery", MINUTE, |r| r.len() == 1);
    a.process.kill();
    let _b = env.worker(&fast);
    let rule = env.wait_status("once", "the run to succeed", |s| {
        last_run(s)["state"] == "Succeeded"
    });
    let s = &rule["status"];
    assert_eq!(s["recentRuns"].as_array().unwrap().len(), 1, "one run");
    assert_eq!(s["succeeded"], 1, "succeeded once");
    assert_eq!(last_run(s)["attempts"], 2, "the killed attempt counts");
    let seen = hook.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_rule_has_its_pending_runs_cancelled() {
    let env = Env::new("auto-del").await;
    let hook = StandIn::start(|_| Answer::json(500, json!({})));
    env.apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: gone, namespace: NS}}\n\
         spec:\n  trigger: {{schedule: {{cron: '0 9 * * *'}}}}\n  action: {{webhook: {{url: '{}/hook'}}}}\n  \
           retry: {{backoffSeconds: 3600, maxBackoffSeconds: 3600}}\n",
        hook.url()
    ));
    let _w = env.worker(&[]);
    let uid = env.uid("gone");
    env.annotate("gone", "xin.dev/run-now", "1");
    env.wait_status("gone", "a failed attempt waiting for its retry", |s| {
        last_run(s)["state"] == "Pending" && last_run(s)["attempts"] == 1
    });
    kubectl_ok(&["delete", "automationrule", "gone", "-n", env.ns()]);
    eventually("the pending run cancelled", MINUTE, || {
        let (pool, uid) = (env.pool.clone(), uid.clone());
        async move {
            let runs = xin_automation::queue::runs_of(&pool, &uid)
                .await
                .map_err(|e| e.to_string())?;
            match runs.first() {
                Some(r) if r.state == "cancelled" => Ok(r.last_error.clone()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

/// Without the platform's allowance, a receiver on loopback is a refused destination: the run
/// is dead-lettered at once with the reason, and nothing reaches the receiver; an SMTP relay
/// there is refused the same way, before connecting (the reason says so).
#[tokio::test(flavor = "multi_thread")]
async fn refused_destinations_are_reported_and_never_contacted() {
    let env = Env::new("auto-ssrf").await;
    let hook = StandIn::start(|_| Answer::json(200, json!({})));
    let smtp = common::smtp::server();
    xin_e2e::apply(
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "smtp", "namespace": env.ns()},
                "stringData": {"host": "127.0.0.1", "port": smtp.addr.port().to_string(), "from": "a@acme.example"}})
        .to_string(),
    );
    env.apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: hook, namespace: NS}}\n\
         spec:\n  trigger: {{schedule: {{cron: '0 9 * * *'}}}}\n  action: {{webhook: {{url: '{}/x'}}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: mail, namespace: NS}}\n\
         spec:\n  trigger: {{schedule: {{cron: '0 9 * * *'}}}}\n  action:\n    email: {{smtpSecretRef: {{name: smtp}}, to: [a@acme.example], subjectTemplate: 's', bodyTemplate: 'b'}}\n",
        hook.url()
    ));
    // No XIN_OUTBOUND_ALLOW: loopback is refused, as by default in a cluster.
    let _w = env.worker(&[("XIN_OUTBOUND_ALLOW", "")]);
    for rule in ["hook", "mail"] {
        env.annotate(rule, "xin.dev/run-now", "1");
        let r = env.wait_status(rule, "the refused run dead-lettered", |s| {
            last_run(s)["state"] == "DeadLettered"
        });
        let s = &r["status"];
        assert_eq!(
            last_run(s)["attempts"],
            1,
            "{rule}: a refusal is not retried"
        );
        let err = s["lastError"]
            .as_str()
            .unwrap_or_else(|| panic!("{rule}: no lastError in {s}"));
        assert!(
            err.contains("destination not allowed") && err.contains("loopback"),
            "{rule}: {err}"
        );
    }
    assert!(
        hook.requests().is_empty(),
        "the refused receiver was never contacted"
    );
}
