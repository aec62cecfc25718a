//! `email::send` against a real SMTP server: aiosmtpd from `e2e/smtp.sh` (STARTTLS required,
//! AUTH PLAIN/LOGIN, a throwaway CA). The script is started here (a no-op when it runs already)
//! and left running; `e2e/smtp.sh stop` stops it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use xin_automation::email::{Email, EmailError, SmtpSettings, send};

mod common;
use common::smtp::{Server, server};

/// The tests share one server and its fault files: one at a time.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn settings(s: &Server, password: &str, extra: &[(&str, &str)]) -> SmtpSettings {
    let mut data: BTreeMap<String, Vec<u8>> = [
        ("host", "localhost"),
        ("port", &s.addr.port().to_string()),
        ("username", &s.user),
        ("password", password),
        ("from", "Xin Automation <alerts@xin.test>"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    data.insert("ca.crt".into(), std::fs::read(&s.ca).unwrap());
    for (k, v) in extra {
        data.insert(k.to_string(), v.as_bytes().to_vec());
    }
    SmtpSettings::from_secret(&data).unwrap()
}

/// A Message-ID unique to this run (the server keeps earlier runs' mail until stopped).
fn email(key: &str, subject: &str) -> Email {
    static RUN: OnceLock<u128> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    });
    Email {
        to: vec!["ops@xin.test".into(), "Oncall <oncall@xin.test>".into()],
        subject: subject.into(),
        body: "The rule fired.\nسلام دنیا — ünïcødé\n".into(),
        message_id: format!("<{key}.{run}@xin.automation>"),
    }
}

/// The .eml holding this Message-ID, and the envelope beside it.
fn find(s: &Server, message_id: &str) -> Option<(String, String)> {
    for entry in std::fs::read_dir(&s.maildir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let raw = std::fs::read_to_string(&path).unwrap();
            if raw.contains(&format!("Message-ID: {message_id}\r\n")) {
                let envelope = std::fs::read_to_string(path.with_extension("json")).unwrap();
                return Some((raw, envelope));
            }
        }
    }
    None
}

/// Decodes the RFC 2047 encoded-words of a header value (b and q, utf-8) — enough for a test.
/// Whitespace between two encoded words is dropped, elsewhere it is one space.
fn decode_header(value: &str) -> String {
    let mut out = String::new();
    let mut prev_encoded = false;
    for word in value.split_whitespace() {
        let encoded = word
            .strip_prefix("=?utf-8?")
            .and_then(|w| w.strip_suffix("?="));
        let joined = prev_encoded && encoded.is_some();
        if !out.is_empty() && !joined {
            out.push(' ');
        }
        match encoded {
            Some(inner) => {
                let (enc, text) = inner.split_at(2);
                let bytes = match enc {
                    "b?" => b64(text),
                    "q?" => q(text),
                    _ => panic!("encoding {enc}"),
                };
                out.push_str(&String::from_utf8(bytes).unwrap());
            }
            None => out.push_str(word),
        }
        prev_encoded = encoded.is_some();
    }
    out
}

fn b64(s: &str) -> Vec<u8> {
    const A: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = vec![];
    for c in s.chars().filter(|&c| c != '=') {
        bits = (bits << 6) | A.find(c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn q(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'=' => {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
                );
                i += 3;
            }
            b'_' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A header's value, unfolded, from a raw message.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|l| {
        l.split_once(": ")
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
    })
}

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sends_over_starttls_with_auth() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    let mail = email("sends-1", "Alert: سلام — disk 93% full");
    send(&settings(s, &s.password, &[]), s.addr, &mail, TIMEOUT)
        .await
        .unwrap();

    let (raw, envelope) = find(s, &mail.message_id).expect("the .eml for this Message-ID");
    assert!(raw.is_ascii(), "headers and body are 7-bit encoded:\n{raw}");
    assert_eq!(
        decode_header(&header(&raw, "Subject").unwrap()),
        "Alert: سلام — disk 93% full",
        "{raw}"
    );
    assert_eq!(header(&raw, "Message-ID").unwrap(), mail.message_id);
    assert_eq!(
        header(&raw, "From").unwrap(),
        "\"Xin Automation\" <alerts@xin.test>"
    );
    assert_eq!(
        header(&raw, "To").unwrap(),
        "ops@xin.test, Oncall <oncall@xin.test>"
    );
    assert!(header(&raw, "Date").is_some(), "{raw}");
    assert_eq!(
        header(&raw, "Content-Type").unwrap(),
        "text/plain; charset=utf-8"
    );
    // The body: lettre picks quoted-printable or base64 for non-ASCII text.
    let cte = header(&raw, "Content-Transfer-Encoding").unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let decoded = match cte.as_str() {
        "base64" => String::from_utf8(b64(&body.replace("\r\n", ""))).unwrap(),
        "quoted-printable" => {
            String::from_utf8(q(&body.replace("=\r\n", "").replace('_', "=5F"))).unwrap()
        }
        other => panic!("{other}"),
    };
    assert_eq!(decoded.replace("\r\n", "\n"), mail.body, "{raw}");
    assert!(
        envelope.contains("\"from\": \"alerts@xin.test\""),
        "{envelope}"
    );
    assert!(
        envelope.contains("\"to\": [\"ops@xin.test\", \"oncall@xin.test\"]"),
        "{envelope}"
    );
}

#[tokio::test]
async fn sends_over_implicit_tls() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    let cfg = settings(
        s,
        &s.password,
        &[
            ("tls", "implicit"),
            ("port", &s.tls_addr.port().to_string()),
        ],
    );
    let mail = email("implicit-ok-1", "implicit");
    send(&cfg, s.tls_addr, &mail, TIMEOUT).await.unwrap();
    let (raw, _) = find(s, &mail.message_id).unwrap();
    assert_eq!(header(&raw, "Subject").unwrap(), "implicit");
    let err = send(
        &settings(s, "bad-implicit-pw", &[("tls", "implicit")]),
        s.tls_addr,
        &mail,
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, EmailError::Permanent(m) if m.contains("535") && !m.contains("bad-implicit-pw")),
        "{err:?}"
    );
}

#[tokio::test]
async fn implicit_tls_against_a_starttls_port_fails_transiently() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    let cfg = settings(s, &s.password, &[("tls", "implicit")]);
    let err = send(&cfg, s.addr, &email("implicit-1", "x"), TIMEOUT)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, EmailError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn wrong_password_is_permanent_and_not_shown() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    let wrong = "Wr0ng-but-secret-pw";
    let mail = email("wrongpw-1", "x");
    let err = send(&settings(s, wrong, &[]), s.addr, &mail, TIMEOUT)
        .await
        .unwrap_err();
    eprintln!("{err}");
    let EmailError::Permanent(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("535"), "{msg}");
    assert!(
        !msg.contains(wrong) && !format!("{err:?}").contains(wrong),
        "{msg}"
    );
    assert!(find(s, &mail.message_id).is_none());
}

#[tokio::test]
async fn fail_next_is_transient_then_the_retry_succeeds() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    std::fs::write(s.rundir.join("fail-next"), "1").unwrap();
    let cfg = settings(s, &s.password, &[]);
    let mail = email("retry-1", "retried");
    let err = send(&cfg, s.addr, &mail, TIMEOUT).await.unwrap_err();
    eprintln!("{err}");
    let EmailError::Transient(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("451"), "{msg}");
    assert!(find(s, &mail.message_id).is_none());
    // The same message (same Message-ID) again: now accepted.
    send(&cfg, s.addr, &mail, TIMEOUT).await.unwrap();
    assert!(find(s, &mail.message_id).is_some());
}

#[tokio::test]
async fn reject_is_permanent() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    let reject = s.rundir.join("reject");
    std::fs::write(&reject, "").unwrap();
    let res = send(
        &settings(s, &s.password, &[]),
        s.addr,
        &email("reject-1", "x"),
        TIMEOUT,
    )
    .await;
    std::fs::remove_file(&reject).unwrap();
    let err = res.unwrap_err();
    assert!(
        matches!(&err, EmailError::Permanent(m) if m.contains("550")),
        "{err:?}"
    );
}

#[tokio::test]
async fn closed_port_is_transient() {
    init();
    let s = server();
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let err = send(
        &settings(s, &s.password, &[]),
        addr,
        &email("closed-1", "x"),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, EmailError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_silent_server_times_out_transiently() {
    init();
    let s = server();
    // Accepts, never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let _conn = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let t0 = std::time::Instant::now();
    let err = send(
        &settings(s, &s.password, &[]),
        addr,
        &email("silent-1", "x"),
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    eprintln!("{err}");
    assert!(matches!(err, EmailError::Transient(_)), "{err:?}");
    hold.abort();
}

#[tokio::test]
async fn untrusted_certificate_is_permanent() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    // Without ca.crt the throwaway CA is unknown: the handshake fails on the certificate.
    let mut cfg = settings(s, &s.password, &[]);
    cfg.ca_pem = None;
    let err = send(&cfg, s.addr, &email("untrusted-1", "x"), TIMEOUT)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, EmailError::Permanent(m) if m.contains("certificate")),
        "{err:?}"
    );
    // A name the certificate is not for.
    let mut cfg = settings(s, &s.password, &[]);
    cfg.host = "mail.example.com".into();
    let err = send(&cfg, s.addr, &email("untrusted-2", "x"), TIMEOUT)
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, EmailError::Permanent(m) if m.contains("certificate")),
        "{err:?}"
    );
    // The IP SAN works as the name too.
    let mut cfg = settings(s, &s.password, &[]);
    cfg.host = "127.0.0.1".into();
    send(&cfg, s.addr, &email("by-ip-1", "x"), TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test]
async fn crlf_subject_cannot_add_a_header() {
    init();
    let s = server();
    let _g = LOCK.lock().await;
    let mail = email(
        "crlf-1",
        "Hello\r\nBcc: evil@attacker.test\r\n\r\nInjected body",
    );
    send(&settings(s, &s.password, &[]), s.addr, &mail, TIMEOUT)
        .await
        .unwrap();
    let (raw, envelope) = find(s, &mail.message_id).unwrap();
    assert!(header(&raw, "Bcc").is_none(), "{raw}");
    assert_eq!(
        header(&raw, "Subject").unwrap(),
        "Hello Bcc: evil@attacker.test Injected body"
    );
    assert!(!envelope.contains("evil"), "{envelope}");
    assert!(
        !raw.split_once("\r\n\r\n").unwrap().1.contains("Injected"),
        "{raw}"
    );

    // A recipient with CR/LF is refused before connecting.
    let mut bad = email("crlf-2", "x");
    bad.to = vec!["ops@xin.test\r\nBcc: evil@attacker.test".into()];
    let err = send(&settings(s, &s.password, &[]), s.addr, &bad, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, EmailError::Permanent(_)), "{err:?}");
}

#[test]
fn missing_keys_are_named() {
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let e = SmtpSettings::from_secret(&data(&[("host", "smtp.example.com")])).unwrap_err();
    assert!(e.contains("`from`"), "{e}");
    let e = SmtpSettings::from_secret(&data(&[("from", "a@example.com")])).unwrap_err();
    assert!(e.contains("`host`"), "{e}");
}

/// A relay that does not offer STARTTLS: refused, permanently, before AUTH or MAIL is sent in
/// plaintext (no fallback).
#[tokio::test]
async fn no_starttls_is_permanent_and_nothing_is_sent_in_plaintext() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    init();
    let s = server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        let (r, mut w) = conn.into_split();
        let mut lines = BufReader::new(r).lines();
        let mut seen = vec![];
        w.write_all(b"220 plain.test ESMTP\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            seen.push(line);
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-plain.test\r\n250 AUTH PLAIN LOGIN\r\n",
                "QUIT" => b"221 bye\r\n",
                _ => b"250 ok\r\n",
            };
            if w.write_all(reply).await.is_err() || verb == "QUIT" {
                break;
            }
        }
        seen
    });
    let err = send(
        &settings(s, &s.password, &[]),
        addr,
        &email("plain-1", "x"),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(&err, EmailError::Permanent(m) if m.contains("STARTTLS")),
        "{err:?}"
    );
    let seen = fake.await.unwrap();
    assert!(
        seen.iter()
            .all(|l| l.starts_with("EHLO") || l.starts_with("QUIT")),
        "{seen:?}"
    );
}
