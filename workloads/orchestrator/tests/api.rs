//! The conversation API over real HTTP against a real PostgreSQL: signatures, conversations,
//! idempotent creation under concurrency, close and handoff events, correlation ids, and
//! malformed input. Answers here are extractive (no LLM configured).

mod common;

use common::*;
use serde_json::json;
use xin_runtime::signing::now;

#[tokio::test]
async fn only_correctly_signed_requests_are_served() {
    let h = start(&database().await, config("acme")).await;
    let body = br#"{"channel":"web","external_user":"u1"}"#;
    let path = "/v1/conversations";

    let ok = h
        .raw(
            "POST",
            path,
            &signed_headers(KEY, now(), "POST", path, body),
            body,
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);

    let missing = h.raw("POST", path, &[], body).await;
    assert_json_error(&missing, 401, "missing_signature");
    let only_ts = h
        .raw(
            "POST",
            path,
            &[("X-Xin-Timestamp".into(), now().to_string())],
            body,
        )
        .await;
    assert_json_error(&only_ts, 401, "missing_signature");

    let wrong_key = h
        .raw(
            "POST",
            path,
            &signed_headers(b"another-tenant-key", now(), "POST", path, body),
            body,
        )
        .await;
    assert_json_error(&wrong_key, 401, "invalid_signature");

    let stale = now() - 301;
    let expired = h
        .raw(
            "POST",
            path,
            &signed_headers(KEY, stale, "POST", path, body),
            body,
        )
        .await;
    assert_json_error(&expired, 401, "signature_expired");
    let future = h
        .raw(
            "POST",
            path,
            &signed_headers(KEY, now() + 400, "POST", path, body),
            body,
        )
        .await;
    assert_json_error(&future, 401, "signature_expired");

    let tampered = br#"{"channel":"web","external_user":"u2"}"#;
    let r = h
        .raw(
            "POST",
            path,
            &signed_headers(KEY, now(), "POST", path, body),
            tampered,
        )
        .await;
    assert_json_error(&r, 401, "invalid_signature");

    // The signature binds the path and the method too.
    let c = ok.json()["id"].as_str().unwrap().to_string();
    let other_path = format!("/v1/conversations/{c}");
    let r = h
        .raw(
            "GET",
            &other_path,
            &signed_headers(KEY, now(), "GET", path, b""),
            b"",
        )
        .await;
    assert_json_error(&r, 401, "invalid_signature");
    let r = h
        .raw(
            "GET",
            &other_path,
            &signed_headers(KEY, now(), "POST", &other_path, b""),
            b"",
        )
        .await;
    assert_json_error(&r, 401, "invalid_signature");
    let r = h
        .raw(
            "GET",
            &other_path,
            &[
                ("X-Xin-Timestamp".into(), "soon".into()),
                ("X-Xin-Signature".into(), "sha256=00".into()),
            ],
            b"",
        )
        .await;
    assert_json_error(&r, 401, "malformed_signature");

    // A refused request changed nothing, and the key never appears in an answer.
    let convs: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(convs, 1);
    assert!(!wrong_key.body.contains("tenant-signing-key"));

    // Probes are not signed.
    assert_eq!(h.raw("GET", "/health", &[], b"").await.status, 200);
    let ready = h.raw("GET", "/ready", &[], b"").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready"));
}

#[tokio::test]
async fn a_user_has_one_open_conversation_created_once_even_concurrently() {
    let h = start(&database().await, config("acme")).await;
    let create = |user: &str| {
        h.post(
            "/v1/conversations",
            json!({"channel": "web", "external_user": user}),
        )
    };
    let first = create("alice").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let c = first.json();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        (
            c["channel"].as_str(),
            c["external_user"].as_str(),
            c["status"].as_str()
        ),
        (Some("web"), Some("alice"), Some("open"))
    );
    let created_at = c["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 27 && created_at.ends_with('Z') && created_at.as_bytes()[10] == b'T',
        "{created_at}"
    );

    let again = create("alice").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], id.as_str());
    // Another channel or user is another conversation.
    let other = h
        .post(
            "/v1/conversations",
            json!({"channel": "telegram", "external_user": "alice"}),
        )
        .await;
    assert_eq!(other.status, 201);
    assert_ne!(other.json()["id"], id.as_str());

    let read = h.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["id"], id.as_str());
    assert_eq!(read.json()["messages"], json!([]));

    // Messages come back oldest first, each answer after its question.
    let r = h
        .say(
            &id,
            json!({"text": "first question", "client_message_id": "m1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.say(&id, json!({"text": "second question"})).await;
    let read = h.get(&format!("/v1/conversations/{id}")).await.json();
    let msgs = read["messages"].as_array().unwrap();
    let roles: Vec<_> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(msgs[0]["text"], "first question");
    assert_eq!(msgs[0]["client_message_id"], "m1");
    assert_eq!(msgs[0]["answer_path"], json!(null));
    assert_eq!(msgs[1]["answer_path"], "extractive");
    assert_eq!(msgs[1]["reply_to"], msgs[0]["id"]);
    assert!(msgs[2]["client_message_id"].is_null());

    let created: Vec<_> = h
        .outbox()
        .await
        .into_iter()
        .filter(|e| e.0 == "conversation_created")
        .collect();
    assert_eq!(created.len(), 2, "one event per created conversation");
    assert_eq!(created[0].1, id);
    assert_eq!(
        created[0].2,
        json!({"channel": "web", "external_user": "alice"})
    );

    // Twenty concurrent creates for a new user: one conversation, one event, everyone gets it.
    let replies = futures::future::join_all((0..20).map(|_| create("bob"))).await;
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| {
            assert!(r.status == 200 || r.status == 201, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "concurrent creates must agree: {ids:?}");
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1);
    let bobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversations WHERE external_user = 'bob'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(bobs, 1);
    let events = h
        .outbox()
        .await
        .into_iter()
        .filter(|e| e.0 == "conversation_created" && e.2["external_user"] == "bob")
        .count();
    assert_eq!(events, 1);

    let unknown = h
        .get("/v1/conversations/0123456789abcdef0123456789abcdef")
        .await;
    assert_json_error(&unknown, 404, "conversation_not_found");
    assert_json_error(
        &h.get("/v1/conversations/%27%3B%20drop").await,
        404,
        "conversation_not_found",
    );
}

#[tokio::test]
async fn a_closed_conversation_takes_no_messages_and_handoffs_are_events() {
    let h = start(&database().await, config("acme")).await;
    let id = h.conversation("carol").await;

    let r = h
        .say(&id, json!({"text": "I want to talk to a HUMAN, please"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h
        .say(
            &id,
            json!({"text": "humanity and agents are words, not requests"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let handoffs: Vec<_> = h
        .outbox()
        .await
        .into_iter()
        .filter(|e| e.0 == "handoff_requested")
        .collect();
    assert_eq!(
        handoffs.len(),
        1,
        "only the whole word asks for a person: {handoffs:?}"
    );
    assert_eq!(handoffs[0].2["trigger"], "keyword");

    let r = h
        .post(
            &format!("/v1/conversations/{id}/handoff"),
            json!({"reason": "angry customer"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // An empty body is fine too.
    let r = h
        .signed("POST", &format!("/v1/conversations/{id}/handoff"), b"", &[])
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let handoffs: Vec<_> = h
        .outbox()
        .await
        .into_iter()
        .filter(|e| e.0 == "handoff_requested")
        .collect();
    assert_eq!(handoffs.len(), 3);
    assert_eq!(handoffs[1].2["reason"], "angry customer");
    assert_eq!(handoffs[1].2["trigger"], "request");
    // No automation worker reads them here: the outbox gauges show every event waiting.
    let waiting = h.outbox().await.len();
    h.orchestrator
        .metrics
        .refresh_outbox(&h.pool, "acme")
        .await
        .unwrap();
    let text = h.metrics.encode();
    assert!(
        text.contains(&format!("orchestrator_outbox_pending {waiting}\n")),
        "{waiting} events: {text}"
    );
    let oldest = text
        .lines()
        .find_map(|l| l.strip_prefix("orchestrator_outbox_oldest_pending_age_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(oldest > 0.0 && oldest < 600.0, "{oldest}");

    let before_close = h
        .say(
            &id,
            json!({"text": "last question", "client_message_id": "c-1"}),
        )
        .await;
    assert_eq!(before_close.status, 200, "{}", before_close.body);
    let close = h
        .signed("POST", &format!("/v1/conversations/{id}/close"), b"", &[])
        .await;
    assert_eq!(close.status, 200, "{}", close.body);
    assert_eq!(close.json()["status"], "closed");
    assert!(
        close.json()["closed_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let again = h
        .signed("POST", &format!("/v1/conversations/{id}/close"), b"{}", &[])
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["closed_at"], close.json()["closed_at"]);
    let closed_events = h
        .outbox()
        .await
        .into_iter()
        .filter(|e| e.0 == "conversation_closed")
        .count();
    assert_eq!(closed_events, 1, "closing twice is one event");

    let before = h.outbox().await.len();
    assert_json_error(
        &h.say(&id, json!({"text": "hello?"})).await,
        409,
        "conversation_closed",
    );
    assert_json_error(
        &h.say(&id, json!({"text": "hello?", "client_message_id": "c-2"}))
            .await,
        409,
        "conversation_closed",
    );
    // A retry of a message answered before the close still gets its answer.
    let retry = h
        .say(
            &id,
            json!({"text": "last question", "client_message_id": "c-1"}),
        )
        .await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["replayed"], true);
    assert_eq!(
        retry.json()["answer"]["id"],
        before_close.json()["answer"]["id"]
    );
    assert_json_error(
        &h.post(&format!("/v1/conversations/{id}/handoff"), json!({}))
            .await,
        409,
        "conversation_closed",
    );
    assert_eq!(
        h.outbox().await.len(),
        before,
        "a refused message leaves no event"
    );
    let msgs: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(msgs, 6);

    // The user's next create is a new conversation.
    let next = h
        .post(
            "/v1/conversations",
            json!({"channel": "web", "external_user": "carol"}),
        )
        .await;
    assert_eq!(next.status, 201);
    assert_ne!(next.json()["id"], id.as_str());
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_json_error(
        &h.signed(
            "POST",
            &format!("/v1/conversations/{unknown}/close"),
            b"",
            &[],
        )
        .await,
        404,
        "conversation_not_found",
    );
    assert_json_error(
        &h.say(unknown, json!({"text": "hi"})).await,
        404,
        "conversation_not_found",
    );
}

#[tokio::test]
async fn the_correlation_id_is_echoed_and_stored_with_messages_and_events() {
    let h = start(&database().await, config("acme")).await;
    let body = json!({"channel": "web", "external_user": "dave"}).to_string();
    let r = h
        .signed(
            "POST",
            "/v1/conversations",
            body.as_bytes(),
            &[("X-Request-ID", "abc-123")],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{id}/messages");
    let body = json!({"text": "where is my order?"}).to_string();
    let r = h
        .signed(
            "POST",
            &path,
            body.as_bytes(),
            &[("X-Request-ID", "abc-123")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));

    let ids: Vec<(String, String)> =
        sqlx::query_as("SELECT role, correlation_id FROM messages ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        ids,
        [
            ("user".into(), "abc-123".into()),
            ("assistant".into(), "abc-123".into())
        ]
    );
    let events = h.outbox().await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.3 == "abc-123"), "{events:?}");
    assert_eq!(events[1].0, "message_received");
    let p = &events[1].2;
    assert_eq!(
        (
            p["channel"].as_str(),
            p["external_user"].as_str(),
            p["text_length"].as_u64()
        ),
        (Some("web"), Some("dave"), Some(18))
    );
    assert!(
        p.get("text").is_none(),
        "the text itself is not in the event"
    );

    // Without one an id is generated, echoed and stored; errors carry it too.
    let r = h.say(&id, json!({"text": "again"})).await;
    let generated = r.header("x-request-id").unwrap();
    assert_eq!(generated.len(), 32);
    let stored: String =
        sqlx::query_scalar("SELECT correlation_id FROM messages ORDER BY id DESC LIMIT 1")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(stored, generated);
    let bad = h
        .raw(
            "POST",
            &path,
            &[("X-Request-ID".into(), "err-1".into())],
            b"{}",
        )
        .await;
    assert_eq!(bad.json()["correlation_id"], "err-1");
}

#[tokio::test]
async fn malformed_input_is_a_400_and_never_a_5xx() {
    let h = start(&database().await, config("acme")).await;
    let id = h.conversation("erin").await;
    let msg = format!("/v1/conversations/{id}/messages");
    let send = |path: String, body: Vec<u8>| {
        let h = &h;
        async move { h.signed("POST", &path, &body, &[]).await }
    };
    for body in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"{\"text\": 5}",
        b"{\"txt\": \"hi\"}",
        b"\xff\xfe",
        b"{\"text\": \"hi\", \"tags\": \"x\"}",
    ] {
        let r = send(msg.clone(), body.to_vec()).await;
        assert_json_error(&r, 400, "malformed_json");
    }
    for body in [
        json!({"text": ""}),
        json!({"text": "   \n"}),
        json!({"text": "x".repeat(4097)}),
        json!({"text": "hi", "client_message_id": ""}),
        json!({"text": "hi", "client_message_id": "c".repeat(129)}),
        json!({"text": "a\u{0}b"}),
        json!({"text": "hi", "client_message_id": "c\u{0}"}),
        json!({"text": "hi", "tags": (0..17).map(|i| i.to_string()).collect::<Vec<_>>()}),
    ] {
        let r = send(msg.clone(), body.to_string().into_bytes()).await;
        assert_json_error(&r, 400, "invalid_request");
    }
    // 4096 characters of Persian (8 KiB of UTF-8) are fine.
    let r = send(
        msg.clone(),
        json!({"text": "س".repeat(4096)}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for body in [
        json!({"channel": "", "external_user": "x"}),
        json!({"channel": "web", "external_user": "x\u{0}"}),
        json!({"channel": "web", "external_user": "u".repeat(257)}),
    ] {
        let r = send("/v1/conversations".into(), body.to_string().into_bytes()).await;
        assert_json_error(&r, 400, "invalid_request");
    }
    assert_json_error(
        &send("/v1/conversations".into(), b"{\"channel\":1}".to_vec()).await,
        400,
        "malformed_json",
    );
    assert_json_error(
        &send(
            format!("/v1/conversations/{id}/handoff"),
            b"{\"reason\": [".to_vec(),
        )
        .await,
        400,
        "malformed_json",
    );
    let huge = vec![b' '; 70 * 1024];
    assert_json_error(&send(msg.clone(), huge).await, 413, "payload_too_large");
    assert_json_error(
        &h.raw("GET", "/nowhere", &[], b"").await,
        404,
        "route_not_found",
    );
    assert_json_error(
        &h.raw("DELETE", "/v1/conversations", &[], b"").await,
        405,
        "method_not_allowed",
    );
    // Nothing of that reached the database.
    let msgs: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(msgs, 2);
}
