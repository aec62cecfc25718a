//! Answers through an OpenAI-compatible `POST {LLM_ENDPOINT}/v1/chat/completions`: the model,
//! then on a timeout, connection error, refused destination, error status or unparsable
//! answer the fallback model, then an extractive answer from the best retrieved chunk.
//! Without an endpoint every answer is extractive. The endpoint is the tenant's: it is called
//! through the outbound client ([`xin_runtime::outbound`]), which refuses internal
//! destinations. The API key is sent as a bearer token and never logged.

use std::time::Instant;

use serde_json::{Value, json};
use xin_runtime::outbound::{Limits, Outbound, OutboundError};

use crate::config::LlmConfig;
use crate::metrics::OrchestratorMetrics;
use crate::retrieval::Chunk;

/// Largest LLM or embedding response body read.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The answer when nothing was retrieved and no model answered.
pub const NO_ANSWER: &str = "I don't have an answer to that yet; a person will follow up.";
/// Sentences and characters of an extractive answer.
pub const EXTRACT_SENTENCES: usize = 3;
pub const EXTRACT_CHARS: usize = 600;

/// How an answer was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerPath {
    Llm,
    Fallback,
    Extractive,
}

impl AnswerPath {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerPath::Llm => "llm",
            AnswerPath::Fallback => "fallback",
            AnswerPath::Extractive => "extractive",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub path: AnswerPath,
    /// Why the answer degraded from the first model, when it did.
    pub reason: Option<String>,
}

/// Why one completion failed; `outcome` is the metric label.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub outcome: &'static str,
    pub detail: String,
}

#[derive(Clone)]
pub struct Llm {
    http: Outbound,
    config: Option<LlmConfig>,
    url: String,
    metrics: OrchestratorMetrics,
}

/// One message of the conversation so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

impl Llm {
    pub fn new(config: Option<LlmConfig>, http: Outbound, metrics: OrchestratorMetrics) -> Self {
        let url = config
            .as_ref()
            .map(|c| format!("{}/v1/chat/completions", c.endpoint))
            .unwrap_or_default();
        let http = http.with_limits(Limits {
            timeout: config
                .as_ref()
                .map_or(Limits::default().timeout, |c| c.timeout),
            max_response_bytes: MAX_RESPONSE_BYTES,
            ..Limits::default()
        });
        Llm {
            http,
            config,
            url,
            metrics,
        }
    }

    /// Answers `question` with `chunks` as context; never fails (the last resort is extractive).
    pub async fn answer(
        &self,
        tenant: &str,
        question: &str,
        history: &[Turn],
        chunks: &[Chunk],
    ) -> Answer {
        let Some(cfg) = &self.config else {
            return Answer {
                text: extractive(chunks),
                path: AnswerPath::Extractive,
                reason: Some("no LLM endpoint configured".into()),
            };
        };
        let messages = prompt(tenant, question, history, chunks);
        let first = match self.complete(cfg, &cfg.model, &messages).await {
            Ok(text) => {
                return Answer {
                    text,
                    path: AnswerPath::Llm,
                    reason: None,
                };
            }
            Err(f) => format!("model {}: {} ({})", cfg.model, f.outcome, f.detail),
        };
        let Some(fallback) = &cfg.fallback_model else {
            return Answer {
                text: extractive(chunks),
                path: AnswerPath::Extractive,
                reason: Some(format!("{first}; no fallback model")),
            };
        };
        match self.complete(cfg, fallback, &messages).await {
            Ok(text) => Answer {
                text,
                path: AnswerPath::Fallback,
                reason: Some(first),
            },
            Err(f) => Answer {
                text: extractive(chunks),
                path: AnswerPath::Extractive,
                reason: Some(format!(
                    "{first}; fallback {fallback}: {} ({})",
                    f.outcome, f.detail
                )),
            },
        }
    }

    async fn complete(
        &self,
        cfg: &LlmConfig,
        model: &str,
        messages: &[Value],
    ) -> Result<String, Failure> {
        let start = Instant::now();
        let result = self.request(cfg, model, messages).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(f) => f.outcome,
        };
        self.metrics.observe_llm(model, outcome, start.elapsed());
        result
    }

    async fn request(
        &self,
        cfg: &LlmConfig,
        model: &str,
        messages: &[Value],
    ) -> Result<String, Failure> {
        let body = json!({"model": model, "messages": messages, "temperature": 0.2, "max_tokens": MAX_ANSWER_TOKENS});
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(k) = &cfg.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = self.http.send(req).await.map_err(|e| failure(&e))?;
        let status = resp.status;
        if !status.is_success() {
            return Err(Failure {
                outcome: if status.is_server_error() {
                    "http_5xx"
                } else {
                    "http_4xx"
                },
                detail: format!("answered {status}"),
            });
        }
        parse_completion(&resp.body).map_err(|detail| Failure {
            outcome: "unparsable",
            detail,
        })
    }
}

fn failure(e: &OutboundError) -> Failure {
    let outcome = match e {
        OutboundError::Timeout => "timeout",
        OutboundError::Connect(_) => "connect_error",
        OutboundError::DestinationNotAllowed { .. } => "destination_not_allowed",
        _ => "error",
    };
    Failure {
        outcome,
        detail: e.to_string(),
    }
}

/// Asked of the LLM for one answer (`max_tokens`).
pub const MAX_ANSWER_TOKENS: u32 = 1024;
/// An answer is cut to this many characters whatever the LLM sends: it is stored, sent back
/// as history, and must fit the channels' limits.
pub const MAX_ANSWER_CHARS: usize = 4000;

/// `choices[0].message.content`, non-empty, at most [`MAX_ANSWER_CHARS`] characters.
pub fn parse_completion(body: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let text = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or("no choices[0].message.content")?;
    if text.is_empty() {
        return Err("empty content".into());
    }
    Ok(match text.char_indices().nth(MAX_ANSWER_CHARS) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    })
}

/// The chat messages: a system prompt holding the retrieved chunks as numbered context, the
/// recent conversation, then the question.
pub fn prompt(tenant: &str, question: &str, history: &[Turn], chunks: &[Chunk]) -> Vec<Value> {
    let mut system = format!(
        "You are the customer-support assistant of {tenant}. Answer the customer's last message \
         using only the numbered context below. If the context does not contain the answer, say \
         so briefly and that a person will follow up. Reply in the customer's language, \
         concisely.\n\nContext:\n"
    );
    if chunks.is_empty() {
        system.push_str("(none)\n");
    }
    for (i, c) in chunks.iter().enumerate() {
        system.push_str(&format!(
            "[{}] {} ({}#{})\n{}\n\n",
            i + 1,
            c.title,
            c.document_id,
            c.chunk_index,
            c.text.trim()
        ));
    }
    let mut out = vec![json!({"role": "system", "content": system})];
    for t in history {
        out.push(json!({"role": t.role, "content": t.text}));
    }
    out.push(json!({"role": "user", "content": question}));
    out
}

/// The best chunk cut to a few sentences, or [`NO_ANSWER`].
pub fn extractive(chunks: &[Chunk]) -> String {
    chunks
        .first()
        .map(|c| first_sentences(&c.text, EXTRACT_SENTENCES, EXTRACT_CHARS))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| NO_ANSWER.to_string())
}

/// The first `sentences` sentences of `text` (whitespace collapsed), at most `max_chars`
/// characters, cut at a word boundary with an ellipsis when longer.
pub fn first_sentences(text: &str, sentences: usize, max_chars: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = String::new();
    let mut count = 0;
    for w in words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
        if w.ends_with(['.', '!', '?', '؟', '۔', '。', '！', '？']) {
            count += 1;
            if count == sentences {
                break;
            }
        }
    }
    if out.chars().count() <= max_chars {
        return out;
    }
    let cut: String = out.chars().take(max_chars).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > 0 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end_matches([',', ';', ':', ' ']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> Chunk {
        Chunk {
            id: 1,
            document_id: "faq".into(),
            chunk_index: 2,
            title: "Passwords".into(),
            text: text.into(),
            token_count: 10,
            score: 1.0,
            lexical: 1.0,
            vector: 0.0,
        }
    }

    #[test]
    fn the_prompt_carries_context_history_and_question() {
        let m = prompt(
            "acme",
            "how?",
            &[Turn {
                role: "assistant".into(),
                text: "hi".into(),
            }],
            &[chunk("Open settings.")],
        );
        assert_eq!(m.len(), 3);
        let sys = m[0]["content"].as_str().unwrap();
        assert!(
            sys.contains("[1] Passwords (faq#2)\nOpen settings."),
            "{sys}"
        );
        assert_eq!(m[1], json!({"role": "assistant", "content": "hi"}));
        assert_eq!(m[2], json!({"role": "user", "content": "how?"}));
        assert!(
            prompt("acme", "q", &[], &[])[0]["content"]
                .as_str()
                .unwrap()
                .contains("(none)")
        );
    }

    #[test]
    fn completions_are_parsed_strictly() {
        assert_eq!(
            parse_completion(
                br#"{"choices":[{"message":{"role":"assistant","content":" Hi. "}}]}"#
            ),
            Ok("Hi.".into())
        );
        assert!(parse_completion(b"<html>").is_err());
        assert!(parse_completion(br#"{"choices":[]}"#).is_err());
        assert!(parse_completion(br#"{"choices":[{"message":{"content":"  "}}]}"#).is_err());
        assert!(parse_completion(br#"{"choices":[{"message":{"content":5}}]}"#).is_err());
    }

    #[test]
    fn extractive_answers_are_a_few_sentences_of_the_best_chunk() {
        assert_eq!(extractive(&[]), NO_ANSWER);
        assert_eq!(extractive(&[chunk("  ")]), NO_ANSWER);
        assert_eq!(
            extractive(&[chunk("One.  Two!\nThree? Four. Five.")]),
            "One. Two! Three?"
        );
        assert_eq!(
            extractive(&[chunk(
                "رمز عبور را از تنظیمات تغییر دهید. سپس خارج شوید؟ بعد. آخر."
            )]),
            "رمز عبور را از تنظیمات تغییر دهید. سپس خارج شوید؟ بعد."
        );
        let long = "word ".repeat(300);
        let e = first_sentences(&long, 3, 50);
        assert!(e.ends_with('…') && e.chars().count() <= 51, "{e}");
        assert!(!e.contains("wor…"), "cut at a word boundary: {e}");
    }
}
