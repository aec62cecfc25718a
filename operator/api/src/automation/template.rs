//! Templates of actions (the CRM body, the email subject and body): [MiniJinja](https://docs.rs/minijinja)
//! syntax over a run's context, with one contract per output.
//!
//! **JSON bodies** (`crm.bodyTemplate`): every `{{ … }}` renders as one complete JSON literal
//! — a string with its quotes and escapes, a number, `true`/`false`, an object, an array, or
//! `null` for a missing value — so a template writes `"text": {{ message.text }}`, never
//! `"text": "{{ message.text }}"`. Message text with quotes, braces or newlines therefore stays
//! one string and can never add a field; `|safe` and `{% autoescape false %}` do not change
//! that. The rendered body must parse as JSON; the operator renders each template for sample
//! runs of the rule's triggers and reports a template that does not as `Ready=False`,
//! `InvalidTemplate`.
//!
//! **Text** (email subject and body): values render as plain text, a missing one as nothing.
//! A subject's line breaks become spaces (a subject is one header line).
//!
//! Rendering is bounded: [`FUEL`] steps (loops cannot run away) and [`MAX_OUTPUT`] bytes.

use minijinja::value::Value;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::json;

use super::{Action, EventType, Trigger};

/// Instructions one rendering may execute.
pub const FUEL: u64 = 100_000;
/// The largest rendered output, in bytes.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// What a template renders to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Each value a JSON literal; the result must parse as JSON.
    Json,
    /// Plain text.
    Text,
    /// Plain text on one line (a header such as an email subject).
    Line,
}

fn environment(output: Output) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    if output == Output::Json {
        // The formatter, not auto-escaping, makes every value a JSON literal: `|safe` and
        // `{% autoescape false %}` only change escaping, which this formatter does not use.
        env.set_formatter(|out, _state, value| {
            let literal = if value.is_undefined() || value.is_none() {
                "null".to_string()
            } else {
                serde_json::to_string(value).map_err(|e| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::BadSerialization,
                        format!("a value cannot be written as JSON: {e}"),
                    )
                })?
            };
            out.write_str(&literal).map_err(minijinja::Error::from)
        });
    }
    env
}

/// Renders `template` over `context` (see [`sample_context`] for its shape).
pub fn render(
    template: &str,
    output: Output,
    context: &serde_json::Value,
) -> Result<String, String> {
    let env = environment(output);
    let rendered = env
        .render_str(template, Value::from(minijinja::value::Serde(context)))
        .map_err(|e| describe(&e))?;
    if rendered.len() > MAX_OUTPUT {
        return Err(format!(
            "renders {} bytes, more than the {MAX_OUTPUT} allowed",
            rendered.len()
        ));
    }
    match output {
        Output::Json => {
            serde_json::from_str::<serde_json::Value>(&rendered).map_err(|e| {
                format!(
                    "does not render valid JSON ({e}); values render as JSON literals, so write \"text\": {{{{ message.text }}}}, not \"text\": \"{{{{ message.text }}}}\""
                )
            })?;
            Ok(rendered)
        }
        Output::Text => Ok(rendered),
        Output::Line => Ok(rendered
            .split(['\r', '\n'])
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")),
    }
}

/// A MiniJinja error in one line, with where it happened.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

/// Sample message text for the checks: quotes, braces, a newline and right-to-left text, the
/// things that break a template that quotes values itself.
pub const SAMPLE_TEXT: &str = "He said \"hi\" {\"admin\": true}\nسلام";

/// The context of a run, as the worker builds it and templates see it:
/// ```json
/// {"tenant": "acme", "rule": "handoff-to-crm",
///  "run": {"id": 42, "idempotency_key": "…", "trigger": "event", "scheduled_for": null},
///  "event": {"id": 9, "type": "HandoffRequested", "created_at": "…", "correlation_id": "…"},
///  "conversation": {"id": "…", "channel": "web", "external_user": "…"},
///  "message": {"id": 5, "text": "…"},
///  "handoff": {"trigger": "keyword", "reason": null}}
/// ```
/// A scheduled or manual run has `run` only (no `event`, `conversation`, `message`); an event
/// without a message (`ConversationCreated`, `ConversationClosed`, a requested handoff) has no
/// `message`. This is a sample of it for `trigger` (`None`: a scheduled run).
pub fn sample_context(tenant: &str, rule: &str, event: Option<EventType>) -> serde_json::Value {
    let mut c = json!({
        "tenant": tenant,
        "rule": rule,
        "run": {"id": 1, "idempotency_key": "xin-sample-run", "trigger": "schedule",
                "scheduled_for": "2026-11-30T09:00:00+01:00"},
    });
    if let Some(t) = event {
        c["run"]["trigger"] = json!("event");
        c["run"]["scheduled_for"] = serde_json::Value::Null;
        c["event"] = json!({"id": 1, "type": t, "created_at": "2026-11-30T09:00:00Z",
                            "correlation_id": "sample"});
        c["conversation"] = json!({"id": "c0ffee", "channel": "web", "external_user": "visitor-1"});
        if matches!(t, EventType::MessageReceived | EventType::HandoffRequested) {
            c["message"] = json!({"id": 1, "text": SAMPLE_TEXT});
        }
        if t == EventType::HandoffRequested {
            c["handoff"] = json!({"trigger": "keyword", "reason": null});
        }
    }
    c
}

/// The samples a rule's templates are checked against: one per event type it fires on, or
/// one scheduled run.
pub fn samples(trigger: &Trigger) -> Vec<Option<EventType>> {
    match &trigger.event {
        Some(e) => e.types.iter().copied().map(Some).collect(),
        None => vec![None],
    }
}

/// Renders every template of `action` for each sample run of `trigger`: the first failure,
/// naming the field and the sample.
pub fn check(trigger: &Trigger, action: &Action) -> Result<(), String> {
    let mut templates: Vec<(&str, &str, Output)> = Vec::new();
    if let Some(c) = &action.crm {
        templates.push((
            "spec.action.crm.bodyTemplate",
            &c.body_template,
            Output::Json,
        ));
    }
    if let Some(e) = &action.email {
        templates.push((
            "spec.action.email.subjectTemplate",
            &e.subject_template,
            Output::Line,
        ));
        templates.push((
            "spec.action.email.bodyTemplate",
            &e.body_template,
            Output::Text,
        ));
    }
    for sample in samples(trigger) {
        let ctx = sample_context("tenant", "rule", sample);
        for (field, t, out) in &templates {
            render(t, *out, &ctx).map_err(|e| {
                let run = match sample {
                    Some(t) => format!("a sample {t:?} event"),
                    None => "a sample scheduled run".into(),
                };
                format!("{field} {e} (rendered for {run})")
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_ctx(text: &str) -> serde_json::Value {
        let mut c = sample_context("acme", "r", Some(EventType::MessageReceived));
        c["message"]["text"] = json!(text);
        c
    }

    #[test]
    fn values_render_as_json_literals_so_text_cannot_add_a_field() {
        let t = r#"{"subject": "Handoff", "id": {{ conversation.id }}, "text": {{ message.text }}, "n": {{ message.id }}}"#;
        for evil in [
            r#"", "admin": true, "x": ""#,
            "}\n{\"admin\": true",
            "{{ 7 * 7 }} {% raw %}",
            "\u{202e}\u{0000}",
        ] {
            let out = render(t, Output::Json, &event_ctx(evil)).unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let obj = v.as_object().unwrap();
            assert_eq!(obj.len(), 4, "{out}");
            assert_eq!(v["text"], json!(evil), "{out}");
            assert_eq!(v["n"], json!(1));
        }
        // `|safe` and autoescape blocks do not unlock raw output.
        let sneaky = r#"{"text": {{ message.text|safe }}, "t2": {% autoescape false %}{{ message.text }}{% endautoescape %}}"#;
        let out = render(
            sneaky,
            Output::Json,
            &event_ctx(r#"", "admin": true, "x": ""#),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2, "{out}");
    }

    #[test]
    fn missing_values_are_null_in_json_and_empty_in_text() {
        let ctx = sample_context("acme", "digest", None);
        let out = render(
            r#"{"c": {{ conversation.id }}, "r": {{ rule }}}"#,
            Output::Json,
            &ctx,
        )
        .unwrap();
        assert_eq!(out, r#"{"c": null, "r": "digest"}"#);
        assert_eq!(
            render("[{{ message.text }}]", Output::Text, &ctx).unwrap(),
            "[]"
        );
    }

    #[test]
    fn the_old_quoted_form_is_refused_with_a_hint() {
        let e = render(
            r#"{"text": "{{ message.text }}"}"#,
            Output::Json,
            &event_ctx("hi"),
        )
        .unwrap_err();
        assert!(
            e.contains("does not render valid JSON")
                && e.contains("not \"text\": \"{{ message.text }}\""),
            "{e}"
        );
    }

    #[test]
    fn subjects_stay_on_one_line_and_errors_say_where() {
        let out = render(
            "New: {{ message.text }}",
            Output::Line,
            &event_ctx("a\r\nBcc: x@evil.example"),
        )
        .unwrap();
        assert_eq!(out, "New: a Bcc: x@evil.example");
        let e = render("{{ message.text ", Output::Text, &event_ctx("x")).unwrap_err();
        assert!(e.contains("syntax error") && e.contains("line 1"), "{e}");
        let e = render(
            "{% for i in range(1000000) %}x{% endfor %}",
            Output::Text,
            &event_ctx("x"),
        )
        .unwrap_err();
        assert!(e.contains("fuel") || e.contains("range"), "{e}");
    }

    #[test]
    fn check_names_the_field_and_the_sample() {
        let trigger: Trigger = serde_json::from_value(
            json!({"event": {"types": ["ConversationCreated", "MessageReceived"]}}),
        )
        .unwrap();
        let action: Action = serde_json::from_value(json!({"crm": {"endpoint": "https://crm.example/api",
            "authSecretRef": {"name": "s", "key": "k"}, "bodyTemplate": "{\"text\": \"{{ message.text }}\"}"}})).unwrap();
        let e = check(&trigger, &action).unwrap_err();
        assert!(
            e.starts_with("spec.action.crm.bodyTemplate does not render valid JSON"),
            "{e}"
        );
        assert!(
            e.ends_with("(rendered for a sample MessageReceived event)"),
            "{e}"
        );
        let good: Action = serde_json::from_value(json!({"crm": {"endpoint": "https://crm.example/api",
            "authSecretRef": {"name": "s", "key": "k"}, "bodyTemplate": "{\"text\": {{ message.text }}}"}})).unwrap();
        check(&trigger, &good).unwrap();
    }
}
