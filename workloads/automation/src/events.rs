//! Event rules: reads the orchestrator's outbox (`outbox_events`, written in the same
//! statement as the change it describes) and queues a run for every rule an event matches, in
//! one transaction per batch: the runs are queued and the events marked processed together, so
//! a worker that dies in between leaves the batch unprocessed, and the next read queues the
//! same runs (unique per rule and event) once. Replicas read disjoint batches (`SKIP LOCKED`).
//!
//! A `message_received` event's payload holds only the text's length; the text is joined from
//! `messages` (bounded by the orchestrator's 4,096 characters) and kept in the run's context.
//! An event is read once it is a second old, so a rule created just before it is in every
//! replica's watch by then, and not at all while the watch fails (until it recovers). Events older than a rule do not fire it (a new rule does not act on the backlog), nor do
//! events that arrive while it is suspended.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde_json::{Value, json};
use xin_api::automation::{AutomationRule, EventType};

use crate::Worker;
use crate::queue::{NewRun, enqueue_in};

/// An outbox event with the text of its message, if it has one.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub conversation_id: String,
    pub payload: Value,
    pub correlation_id: String,
    pub created_at: DateTime<Utc>,
    pub text: Option<String>,
}

impl Event {
    pub fn channel(&self) -> Option<&str> {
        self.payload.get("channel").and_then(Value::as_str)
    }

    /// What templates see of it (`docs/automation.md`, "Templates").
    pub fn context(&self, t: EventType) -> Value {
        let p = &self.payload;
        let mut c = json!({
            "event": {"id": self.id, "type": t, "created_at": self.created_at.to_rfc3339(),
                      "correlation_id": self.correlation_id},
            "conversation": {"id": self.conversation_id, "channel": p.get("channel"),
                             "external_user": p.get("external_user")},
        });
        if let (Some(id), Some(text)) = (p.get("message_id"), &self.text) {
            c["message"] = json!({"id": id, "text": text});
        }
        if t == EventType::HandoffRequested {
            c["handoff"] = json!({"trigger": p.get("trigger"), "reason": p.get("reason")});
        }
        c
    }
}

/// Whether `event` fires `rule`.
pub fn matches(rule: &AutomationRule, t: EventType, event: &Event) -> bool {
    let Some(trigger) = &rule.spec.trigger.event else {
        return false;
    };
    if rule.spec.suspend || !trigger.types.contains(&t) {
        return false;
    }
    // Only events the rule existed for (creation times are whole seconds).
    if let Some(c) = &rule.metadata.creation_timestamp
        && event.created_at.timestamp() < c.0.as_second()
    {
        return false;
    }
    let Some(f) = &trigger.filter else {
        return true;
    };
    if !f.channels.is_empty()
        && !event
            .channel()
            .is_some_and(|c| f.channels.iter().any(|x| x == c))
    {
        return false;
    }
    if let Some(needle) = &f.text_contains {
        let Some(text) = &event.text else {
            return false;
        };
        if !text.to_lowercase().contains(&needle.to_lowercase()) {
            return false;
        }
    }
    true
}

/// Reads one batch of events; returns how many were read.
pub async fn pump(w: &Worker) -> Result<usize, sqlx::Error> {
    // While the watch is failing, a rule created meanwhile would be missed: events wait.
    if !w.rules.watching() {
        return Ok(0);
    }
    let mut tx = w.pool.begin().await?;
    let events: Vec<Event> = sqlx::query_as(
        "WITH batch AS (
            SELECT id FROM outbox_events
             WHERE tenant = $1 AND processed_at IS NULL AND created_at <= now() - interval '1 second'
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
         )
         SELECT e.id, e.kind, e.conversation_id, e.payload, e.correlation_id, e.created_at, m.text
           FROM outbox_events e JOIN batch USING (id)
           LEFT JOIN messages m
             ON e.payload ? 'message_id' AND m.id = (e.payload->>'message_id')::bigint
          ORDER BY e.id",
    )
    .bind(&w.tenant)
    .bind(w.settings.event_batch as i64)
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let rules: Vec<_> = w
        .rules
        .all()
        .into_iter()
        .filter(|r| r.spec.trigger.event.is_some() && !r.spec.suspend)
        .collect();
    let mut runs = Vec::new();
    for e in &events {
        let Some(t) = EventType::from_kind(&e.kind) else {
            tracing::debug!(kind = %e.kind, id = e.id, "outbox event of an unknown kind ignored");
            continue;
        };
        for rule in rules.iter().filter(|r| matches(r, t, e)) {
            runs.push(NewRun {
                rule: rule.name_any(),
                rule_uid: rule.uid().unwrap_or_default(),
                dedupe_key: format!("event:{}", e.id),
                trigger: "event",
                scheduled_for: None,
                event_id: Some(e.id),
                context: e.context(t),
                correlation_id: e.correlation_id.clone(),
                run_after: Utc::now(),
            });
        }
    }
    let inserted = enqueue_in(&mut *tx, &w.tenant, &runs).await?;
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    sqlx::query("UPDATE outbox_events SET processed_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    w.metrics
        .events
        .get_or_create(&w.metrics.tenant_label())
        .inc_by(events.len() as u64);
    if !inserted.is_empty() {
        w.metrics.queued("event", inserted.len() as u64);
        w.wake.notify_one();
    }
    Ok(events.len())
}
