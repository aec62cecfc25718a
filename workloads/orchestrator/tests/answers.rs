//! Answers through a local OpenAI-compatible stand-in: the LLM path with the retrieved chunks
//! in the prompt, idempotent retries, the fallback model on a timeout, the extractive answer
//! when both fail or nothing listens, and the metrics and stored paths of each.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use xin_orchestrator::config::LlmConfig;

fn with_llm(
    tenant: &str,
    endpoint: &str,
    fallback: Option<&str>,
    timeout: Duration,
) -> xin_orchestrator::Config {
    let mut c = config(tenant);
    c.llm = Some(LlmConfig {
        endpoint: endpoint.to_string(),
        model: "primary".into(),
        fallback_model: fallback.map(str::to_string),
        timeout,
        api_key: Some("sk-test-secret".into()),
    });
    c
}

async fn seed_faq(h: &Harness) {
    seed(
        &h.pool,
        Seed::new(
            "faq-passwords",
            "Resetting your password",
            "To reset your password open Settings and choose Security. Enter your email address. \
             We send a reset link that is valid for one hour. Old links stop working.",
        ),
    )
    .await;
    seed(
        &h.pool,
        Seed::new(
            "faq-shipping",
            "Shipping times",
            "Orders ship within two business days from our warehouse.",
        ),
    )
    .await;
}

#[tokio::test]
async fn the_llm_answers_with_the_retrieved_chunks_and_a_retry_does_not_ask_it_again() {
    let llm = StandIn::start().await;
    llm.set(
        "primary",
        Behaviour::Answer("Open Settings, then Security.".into()),
    );
    let h = start(
        &database().await,
        with_llm("acme", &llm.url, Some("backup"), Duration::from_secs(5)),
    )
    .await;
    seed_faq(&h).await;
    let id = h.conversation("alice").await;
    h.say(&id, json!({"text": "hello there"})).await;

    let body = json!({"text": "How do I reset my password?", "client_message_id": "wa:123"});
    let r = h.say(&id, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["answer"]["path"], "llm");
    assert_eq!(j["answer"]["text"], "Open Settings, then Security.");
    assert_eq!(j["message"]["text"], "How do I reset my password?");
    assert_eq!(j["message"]["client_message_id"], "wa:123");
    assert_eq!(j["replayed"], false);
    let sources = j["answer"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["document_id"], "faq-passwords", "{sources:?}");
    assert!(
        sources.iter().all(|s| s["document_id"] != "faq-shipping"),
        "{sources:?}"
    );
    assert!(sources[0]["score"].as_f64().unwrap() > 0.2);

    // The stand-in got the chunk as context, the earlier turns, the question, and the key.
    let reqs = llm.requests();
    let last = reqs.last().unwrap();
    assert_eq!(last["model"], "primary");
    let msgs = last["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    let system = msgs[0]["content"].as_str().unwrap();
    assert!(
        system.contains("To reset your password open Settings"),
        "{system}"
    );
    assert!(
        !system.contains("warehouse"),
        "an unrelated chunk is not context: {system}"
    );
    assert_eq!(msgs[1], json!({"role": "user", "content": "hello there"}));
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(
        msgs.last().unwrap(),
        &json!({"role": "user", "content": "How do I reset my password?"})
    );
    let calls = llm.requests_for("primary");
    assert_eq!(calls, 2);

    // The gateway retries after a crash: same answer, no new LLM call, no new rows or events.
    let events = h.outbox().await.len();
    let again = h.say(&id, body.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let a = again.json();
    assert_eq!(a["replayed"], true);
    assert_eq!(a["answer"]["id"], j["answer"]["id"]);
    assert_eq!(a["answer"]["text"], j["answer"]["text"]);
    assert_eq!(a["answer"]["path"], "llm");
    assert_eq!(a["message"]["id"], j["message"]["id"]);
    assert_eq!(
        llm.requests_for("primary"),
        calls,
        "the LLM is not asked again"
    );
    assert_eq!(h.outbox().await.len(), events);
    // Even concurrently.
    let replies = futures::future::join_all((0..5).map(|_| h.say(&id, body.clone()))).await;
    assert!(
        replies
            .iter()
            .all(|r| r.json()["answer"]["id"] == j["answer"]["id"])
    );
    assert_eq!(llm.requests_for("primary"), calls);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE client_message_id = 'wa:123' OR reply_to = $1",
    )
    .bind(j["message"]["id"].as_i64().unwrap())
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(stored, 2);
    // The first attempt stored the question and stopped before answering: the retry answers.
    sqlx::query(
        "INSERT INTO messages (tenant, conversation_id, role, text, client_message_id, correlation_id)
         VALUES ('acme', $1, 'user', 'reset password please', 'wa:124', 'crashed')",
    )
    .bind(&id)
    .execute(&h.pool)
    .await
    .unwrap();
    let resumed = h
        .say(
            &id,
            json!({"text": "reset password please", "client_message_id": "wa:124"}),
        )
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.json()["replayed"], false);
    assert_eq!(resumed.json()["answer"]["path"], "llm");
    assert_eq!(llm.requests_for("primary"), calls + 1);
    assert_eq!(
        h.metric_value("orchestrator_answers_total{path=\"llm\"}"),
        Some(3.0)
    );
    assert!(
        h.metrics
            .encode()
            .contains("orchestrator_llm_request_seconds_count{model=\"primary\",outcome=\"ok\"} 3"),
        "{}",
        h.metrics.encode()
    );
    assert!(!h.metrics.encode().contains("sk-test-secret"));
}

#[tokio::test]
async fn a_slow_model_falls_back_and_when_both_fail_the_answer_is_extractive() {
    let llm = StandIn::start().await;
    llm.set(
        "primary",
        Behaviour::Slow(Duration::from_millis(1500), "too late".into()),
    );
    llm.set(
        "backup",
        Behaviour::Answer("the backup model's answer".into()),
    );
    let h = start(
        &database().await,
        with_llm("acme", &llm.url, Some("backup"), Duration::from_millis(300)),
    )
    .await;
    seed_faq(&h).await;
    let id = h.conversation("bob").await;

    // The primary answers after its delay, beyond the timeout: a "fallback" path proves the
    // timeout applied (without it the primary's answer would be used, path "llm").
    let r = h
        .say(&id, json!({"text": "How do I reset my password?"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["answer"]["path"], "fallback");
    assert_eq!(r.json()["answer"]["text"], "the backup model's answer");
    assert_eq!(
        (llm.requests_for("primary"), llm.requests_for("backup")),
        (1, 1)
    );

    // Both fail (an error status, an unparsable body): extractive from the best chunk.
    llm.set("primary", Behaviour::Fail(503));
    llm.set("backup", Behaviour::Garbage);
    let r = h.say(&id, json!({"text": "reset password link"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let a = &r.json()["answer"];
    assert_eq!(a["path"], "extractive");
    assert_eq!(
        a["text"],
        "To reset your password open Settings and choose Security. Enter your email address. We send a reset link that is valid for one hour."
    );
    assert_eq!(a["sources"][0]["document_id"], "faq-passwords");

    // Nothing to draw from: the fixed polite answer.
    let r = h.say(&id, json!({"text": "zzyzx qwxy"})).await;
    assert_eq!(r.json()["answer"]["path"], "extractive");
    assert_eq!(r.json()["answer"]["text"], xin_orchestrator::llm::NO_ANSWER);
    assert_eq!(r.json()["answer"]["sources"], json!([]));

    let paths: Vec<Option<String>> =
        sqlx::query_scalar("SELECT answer_path FROM messages WHERE role = 'assistant' ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        paths,
        [
            Some("fallback".into()),
            Some("extractive".into()),
            Some("extractive".into())
        ]
    );
    let m = h.metrics.encode();
    assert_eq!(
        h.metric_value("orchestrator_answers_total{path=\"fallback\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        h.metric_value("orchestrator_answers_total{path=\"extractive\"}"),
        Some(2.0),
        "{m}"
    );
    for series in [
        "orchestrator_llm_request_seconds_count{model=\"primary\",outcome=\"timeout\"} 1",
        "orchestrator_llm_request_seconds_count{model=\"primary\",outcome=\"http_5xx\"} 2",
        "orchestrator_llm_request_seconds_count{model=\"backup\",outcome=\"ok\"} 1",
        "orchestrator_llm_request_seconds_count{model=\"backup\",outcome=\"unparsable\"} 2",
        "orchestrator_retrieval_seconds_count 3",
    ] {
        assert!(m.contains(series), "{series} missing from\n{m}");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_or_none_at_all_answers_extractively() {
    let db = database().await;
    let down = start(
        &db,
        with_llm(
            "acme",
            &closed_port_url(),
            Some("backup"),
            Duration::from_secs(2),
        ),
    )
    .await;
    seed_faq(&down).await;
    let id = down.conversation("carol").await;
    let r = down.say(&id, json!({"text": "When do orders ship?"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["answer"]["path"], "extractive");
    assert_eq!(
        r.json()["answer"]["text"],
        "Orders ship within two business days from our warehouse."
    );
    let m = down.metrics.encode();
    assert!(
        m.contains(
            "orchestrator_llm_request_seconds_count{model=\"primary\",outcome=\"connect_error\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "orchestrator_llm_request_seconds_count{model=\"backup\",outcome=\"connect_error\"} 1"
        ),
        "{m}"
    );

    // Without LLM_ENDPOINT: always extractive, nothing is called.
    let none = start(&db, config("acme")).await;
    let r = none.say(&id, json!({"text": "When do orders ship?"})).await;
    assert_eq!(r.json()["answer"]["path"], "extractive");
    assert_eq!(
        none.metric_value("orchestrator_answers_total{path=\"extractive\"}"),
        Some(1.0)
    );
    assert!(
        !none
            .metrics
            .encode()
            .contains("orchestrator_llm_request_seconds_count")
    );
}

#[tokio::test]
async fn an_llm_on_loopback_is_refused_without_the_allow_list_and_the_refusal_is_counted() {
    let llm = StandIn::start().await;
    let mut c = with_llm("acme", &llm.url, Some("backup"), Duration::from_secs(2));
    // The default policy, as without XIN_OUTBOUND_ALLOW: loopback is refused.
    c.outbound = xin_orchestrator::Config::new("acme", KEY).outbound;
    let h = start(&database().await, c).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    xin_runtime::serve_metrics(([127, 0, 0, 1], port).into(), h.metrics.clone(), "the test")
        .await
        .unwrap();
    seed_faq(&h).await;
    let id = h.conversation("dave").await;
    let r = h.say(&id, json!({"text": "When do orders ship?"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["answer"]["path"], "extractive");
    assert_eq!(
        r.json()["answer"]["text"],
        "Orders ship within two business days from our warehouse."
    );
    assert!(
        llm.requests().is_empty(),
        "a refused endpoint is never called"
    );
    let m = scrape(&h.client, &format!("127.0.0.1:{port}")).await;
    for series in [
        // Both the model and the fallback were refused.
        "xin_outbound_refused_total{reason=\"loopback\"} 2",
        "orchestrator_llm_request_seconds_count{model=\"primary\",outcome=\"destination_not_allowed\"} 1",
        "orchestrator_llm_request_seconds_count{model=\"backup\",outcome=\"destination_not_allowed\"} 1",
        "orchestrator_answers_total{path=\"extractive\"} 1",
    ] {
        assert!(m.contains(series), "{series} missing from\n{m}");
    }
    assert!(!m.contains("sk-test-secret"));
}

#[tokio::test]
async fn one_call_finds_or_creates_the_conversation_stores_and_answers_with_history() {
    let stand_in = StandIn::start().await;
    let h = start(
        &database().await,
        with_llm("acme", &stand_in.url, None, Duration::from_secs(10)),
    )
    .await;
    let post = |user: &str, text: &str, cmid: &str| {
        h.post(
            "/v1/messages",
            json!({"channel": "web", "external_user": user, "text": text, "client_message_id": cmid}),
        )
    };
    let first = post("carol", "first question", "c1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let f = first.json();
    let conv = f["conversation"]["id"].as_str().unwrap().to_string();
    assert_eq!(conv.len(), 32);
    assert_eq!(f["conversation"]["status"], "open");
    assert_eq!(f["conversation_created"], true);
    assert_eq!(f["message"]["text"], "first question");
    assert_eq!(f["answer"]["text"], "answer from primary");
    assert_eq!(f["replayed"], false);

    // The next message goes to the same conversation, and the LLM sees the earlier turns.
    let second = post("carol", "second question", "c2").await;
    assert_eq!(second.status, 200, "{}", second.body);
    let s = second.json();
    assert_eq!(s["conversation"]["id"], conv.as_str());
    assert_eq!(s["conversation_created"], false);
    let asked = stand_in.requests();
    assert_eq!(asked.len(), 2);
    let turns: Vec<String> = asked[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect();
    let (q, a) = (
        turns.iter().position(|t| t == "first question"),
        turns.iter().position(|t| t == "answer from primary"),
    );
    assert!(q.is_some() && a > q, "history in order: {turns:?}");
    assert!(
        turns.last().unwrap().contains("second question"),
        "{turns:?}"
    );

    // A retry is answered from storage: same answer, no LLM call.
    let again = post("carol", "first question", "c1").await;
    assert_eq!(again.status, 200, "{}", again.body);
    let g = again.json();
    assert_eq!(
        (
            g["replayed"].clone(),
            g["answer"]["id"].clone(),
            g["conversation"]["id"].clone()
        ),
        (json!(true), f["answer"]["id"].clone(), json!(conv))
    );
    assert_eq!(stand_in.requests().len(), 2);

    // Twenty concurrent first messages of a new user: one conversation, one event.
    let replies = futures::future::join_all(
        (0..20).map(|i| post("dave", &format!("question {i}"), &format!("d{i}"))),
    )
    .await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["conversation"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.json()["conversation_created"] == true)
            .count(),
        1
    );
    let (users, answers): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE m.role = 'user'), count(*) FILTER (WHERE m.role = 'assistant')
         FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.external_user = 'dave'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((users, answers), (20, 20));
    let outbox = h.outbox().await;
    let count = |kind: &str, user: &str| {
        outbox
            .iter()
            .filter(|e| e.0 == kind && e.2["external_user"] == user)
            .count()
    };
    assert_eq!(
        (
            count("conversation_created", "carol"),
            count("message_received", "carol")
        ),
        (1, 2)
    );
    assert_eq!(
        (
            count("conversation_created", "dave"),
            count("message_received", "dave")
        ),
        (1, 20)
    );

    // After a close, the user's next message starts a new conversation.
    let closed = h
        .post(&format!("/v1/conversations/{conv}/close"), json!({}))
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    let after = post("carol", "third question", "c3").await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.json()["conversation_created"], true);
    assert_ne!(after.json()["conversation"]["id"], conv.as_str());

    // Bad input is a 400 with the JSON error body.
    assert_json_error(
        &h.post("/v1/messages", json!({"channel": "web", "text": "x"}))
            .await,
        400,
        "malformed_json",
    );
    assert_json_error(
        &h.post(
            "/v1/messages",
            json!({"channel": "web", "external_user": "erin", "text": "  "}),
        )
        .await,
        400,
        "invalid_request",
    );
}
