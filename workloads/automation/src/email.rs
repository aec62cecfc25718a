//! E-mail actions: one message over SMTP with lettre, TLS always (STARTTLS or implicit TLS).
//!
//! The relay and its credentials come from the Secret a rule's `email.smtpSecretRef` names
//! ([`SmtpSettings::from_secret`]); the caller resolves and checks the relay's address against
//! its outbound policy and hands [`send`] that address, so this module never resolves a name.
//!
//! Errors are [`EmailError::Permanent`] (retrying the same message cannot help) or
//! [`EmailError::Transient`] (a later retry may succeed); see [`EmailError`] for which is which.
//! No message, `Debug` output or error ever holds the SMTP password.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How the connection to the relay is encrypted. There is no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain TCP, then `STARTTLS` before anything else; a relay that does not offer it is
    /// refused (no fallback to plaintext). The submission port, 587, by default.
    StartTls,
    /// TLS from the first byte (RFC 8314 "implicit TLS", `smtps`). Port 465 by default.
    Implicit,
}

/// The relay, credentials and sender of a rule's e-mails, from the keys of the Secret that the
/// rule's `email.smtpSecretRef` names. `Debug` shows the password as `[redacted]`.
#[derive(Clone)]
pub struct SmtpSettings {
    /// The relay's host name (or IP literal): the name its TLS certificate is checked against.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// The SMTP AUTH user name, when the relay wants authentication (with a password).
    pub username: Option<String>,
    /// The SMTP AUTH password: never printed, never in an error.
    password: Option<String>,
    /// The `From` mailbox, e.g. `alerts@example.com` or `Xin <alerts@example.com>`.
    pub from: String,
    /// STARTTLS or implicit TLS.
    pub tls: SmtpTls,
    /// Extra trust anchors (PEM, one or more certificates) besides the system's, for a relay
    /// whose certificate a private CA issued.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from)
            .field("tls", &self.tls)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .finish()
    }
}

impl SmtpSettings {
    /// Reads the settings from a Secret's data.
    ///
    /// Keys: `host` (required), `port` (default 587, or 465 when tls=implicit), `username` and
    /// `password` (both or neither), `from` (required, an address), `tls` = `starttls`
    /// (default) | `implicit`, `ca.crt` (optional PEM: extra trust anchors for a private relay).
    /// Surrounding whitespace (a trailing newline from `kubectl create secret --from-file`) is
    /// trimmed from every key but `password`, which is taken byte for byte. Other keys are
    /// ignored. Errors name the key, never a value of `password`.
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        fn text<'a>(
            data: &'a BTreeMap<String, Vec<u8>>,
            key: &str,
        ) -> Result<Option<&'a str>, String> {
            match data.get(key) {
                None => Ok(None),
                Some(v) => std::str::from_utf8(v)
                    .map(Some)
                    .map_err(|_| format!("SMTP secret key `{key}` is not UTF-8")),
            }
        }
        fn trimmed<'a>(
            data: &'a BTreeMap<String, Vec<u8>>,
            key: &str,
        ) -> Result<Option<&'a str>, String> {
            Ok(text(data, key)?.map(str::trim))
        }

        let host = match trimmed(data, "host")? {
            None | Some("") => {
                return Err("SMTP secret has no key `host` (the relay's host name)".into());
            }
            Some(h)
                if h.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/') =>
            {
                return Err(format!("SMTP secret key `host` is not a host name: {h:?}"));
            }
            Some(h) => h.to_owned(),
        };
        let tls = match trimmed(data, "tls")?
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("starttls") => SmtpTls::StartTls,
            Some("implicit") => SmtpTls::Implicit,
            Some(other) => {
                return Err(format!(
                    "SMTP secret key `tls` must be `starttls` or `implicit`, not {other:?}"
                ));
            }
        };
        let port = match trimmed(data, "port")? {
            None | Some("") => match tls {
                SmtpTls::StartTls => 587,
                SmtpTls::Implicit => 465,
            },
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "SMTP secret key `port` is not a port number (1-65535): {p:?}"
                    ));
                }
            },
        };
        let username = trimmed(data, "username")?;
        let password = text(data, "password")?;
        let (username, password) = match (username, password) {
            (None, None) => (None, None),
            (Some(""), _) => return Err("SMTP secret key `username` is empty".into()),
            (_, Some("")) => return Err("SMTP secret key `password` is empty".into()),
            (Some(u), Some(p)) => (Some(u.to_owned()), Some(p.to_owned())),
            (Some(_), None) => {
                return Err("SMTP secret has `username` but no key `password`".into());
            }
            (None, Some(_)) => {
                return Err("SMTP secret has `password` but no key `username`".into());
            }
        };
        let from = match trimmed(data, "from")? {
            None | Some("") => {
                return Err("SMTP secret has no key `from` (the sender's address)".into());
            }
            Some(f) => f,
        };
        if let Err(e) = from.parse::<Mailbox>() {
            return Err(format!(
                "SMTP secret key `from` is not an e-mail address ({e}): {from:?}"
            ));
        }
        let ca_pem = match data.get("ca.crt") {
            None => None,
            Some(pem) => {
                check_pem(pem).map_err(|e| format!("SMTP secret key `ca.crt`: {e}"))?;
                Some(pem.clone())
            }
        };
        Ok(SmtpSettings {
            host,
            port,
            username,
            password,
            from: from.to_owned(),
            tls,
            ca_pem,
        })
    }

    /// Whether SMTP AUTH credentials are set (the password itself is not readable).
    pub fn has_credentials(&self) -> bool {
        self.password.is_some()
    }
}

/// At least one certificate, and nothing unparsable, in a PEM bundle.
fn check_pem(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
        n += 1;
    }
    if n == 0 {
        Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into())
    } else {
        Ok(())
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Email {
    /// Recipients' addresses (`a@example.com` or `Name <a@example.com>`), at least one; all go
    /// in `To`.
    pub to: Vec<String>,
    /// The subject; line breaks and other control characters become spaces (no header can be
    /// added through it). Non-ASCII text is RFC 2047-encoded.
    pub subject: String,
    /// The body, sent as `text/plain; charset=utf-8`.
    pub body: String,
    /// The `Message-ID` header, e.g. `<key@xin.automation>`: stable across retries of one
    /// message, so it is the idempotency key receivers and the relay can deduplicate on. Must be
    /// `<...@...>` of printable ASCII without spaces.
    pub message_id: String,
}

/// Why a message was not sent.
///
/// Permanent — the same message to the same relay with the same settings will fail again:
/// - a 5xx reply (e.g. 535 bad credentials, 550 mailbox unavailable, 552/554 rejected);
/// - the message itself is invalid: no recipient, a recipient or `from` that is not an
///   address, a malformed `Message-ID`, a bad `ca.crt` (refused before connecting);
/// - the relay lacks what we insist on: STARTTLS (never fallen back from), an AUTH mechanism
///   we speak (PLAIN, LOGIN), SMTPUTF8 for a non-ASCII address;
/// - the relay's TLS certificate is rejected (unknown issuer, wrong name, expired): a
///   configuration fault (`host`, `ca.crt`) or an interception that needs a person, not a retry.
///
/// Transient — a later attempt may succeed: a 4xx reply (greylisting, 421 busy, 451 local
/// error, 452 storage), a refused / reset / unreachable connection, any other TLS handshake or
/// I/O failure, an unparsable reply, and running out of the time allowed.
#[derive(thiserror::Error, Debug)]
pub enum EmailError {
    /// Retrying the same message cannot help.
    #[error("{0}")]
    Permanent(String),
    /// A later retry may succeed.
    #[error("{0}")]
    Transient(String),
}

/// Sends `email` through the relay of `settings`.
///
/// Connects to `addr` (an address the caller already checked against its outbound policy —
/// `settings.host` is never resolved here; TLS verifies the certificate against
/// `settings.host`, with the system's roots plus `settings.ca_pem`), TLS always (STARTTLS
/// required, never a plaintext fallback, or implicit TLS), authenticates when credentials are
/// given (PLAIN or LOGIN, only ever inside TLS), sends, all within `timeout` overall. One
/// connection per call, closed afterwards. See [`EmailError`] for permanent vs transient.
pub async fn send(
    settings: &SmtpSettings,
    addr: SocketAddr,
    email: &Email,
    timeout: Duration,
) -> Result<(), EmailError> {
    let message = build_message(settings, email)?;

    let mut tls = TlsParameters::builder(settings.host.clone());
    if let Some(pem) = &settings.ca_pem {
        let cert = Certificate::from_pem(pem)
            .map_err(|e| EmailError::Permanent(format!("SMTP secret key `ca.crt`: {e}")))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build().map_err(|e| {
        EmailError::Permanent(format!("SMTP TLS settings for {}: {e}", settings.host))
    })?;
    // builder_dangerous: no defaults taken (port, TLS); every one is set below. The "server" is
    // the IP literal, which lettre's connect parses without a DNS lookup.
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(addr.port())
            .tls(match settings.tls {
                SmtpTls::StartTls => Tls::Required(tls),
                SmtpTls::Implicit => Tls::Wrapper(tls),
            })
            // lettre's timeout is per connect / per command; the overall one is the tokio timeout.
            .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let transport = transport.build();

    let relay = format!("SMTP relay {} ({addr})", settings.host);
    let result = match tokio::time::timeout(timeout, transport.send(message)).await {
        Err(_) => Err(EmailError::Transient(format!(
            "{relay}: no answer within {timeout:?}"
        ))),
        Ok(Ok(_response)) => Ok(()),
        Ok(Err(e)) => Err(classify(&relay, &e, settings)),
    };
    match &result {
        Ok(()) => tracing::debug!(relay = %relay, message_id = %email.message_id, "e-mail sent"),
        Err(e) => {
            tracing::debug!(relay = %relay, message_id = %email.message_id, error = %e, "e-mail not sent")
        }
    }
    result
}

/// The RFC 5322 message: From, To, Subject, Date, Message-ID, a text/plain UTF-8 body.
fn build_message(settings: &SmtpSettings, email: &Email) -> Result<Message, EmailError> {
    let from: Mailbox = settings.from.parse().map_err(|e| {
        EmailError::Permanent(format!(
            "SMTP secret key `from` is not an e-mail address ({e}): {:?}",
            settings.from
        ))
    })?;
    if email.to.is_empty() {
        return Err(EmailError::Permanent("e-mail has no recipient".into()));
    }
    let mid = &email.message_id;
    let mid_ok = mid.len() > 4
        && mid.starts_with('<')
        && mid.ends_with('>')
        && mid[1..mid.len() - 1].contains('@')
        && mid.bytes().all(|b| b.is_ascii_graphic())
        && mid[1..mid.len() - 1]
            .bytes()
            .all(|b| b != b'<' && b != b'>');
    if !mid_ok {
        return Err(EmailError::Permanent(format!(
            "e-mail Message-ID is not <id@domain>: {mid:?}"
        )));
    }
    let mut builder = Message::builder()
        .from(from)
        .subject(one_line(&email.subject))
        .date(SystemTime::now())
        .message_id(Some(mid.clone()))
        .header(ContentType::TEXT_PLAIN);
    for to in &email.to {
        let mailbox: Mailbox = to.trim().parse().map_err(|e| {
            EmailError::Permanent(format!("e-mail recipient is not an address ({e}): {to:?}"))
        })?;
        builder = builder.to(mailbox);
    }
    builder
        .body(email.body.clone())
        .map_err(|e| EmailError::Permanent(format!("e-mail not valid: {e}")))
}

/// The subject on one line: each run of control characters (CR, LF, TAB, ...) becomes one
/// space, so nothing in it can end the header and start another.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_control() {
            if !in_run {
                out.push(' ');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Maps lettre's error to permanent / transient (the rules are on [`EmailError`]), the message
/// scrubbed of the password in case a relay echoes it back.
fn classify(
    relay: &str,
    e: &lettre::transport::smtp::Error,
    settings: &SmtpSettings,
) -> EmailError {
    if let Some(tls) = certificate_rejected(e) {
        return EmailError::Permanent(redact(
            &format!("{relay}: TLS certificate rejected: {tls}"),
            settings,
        ));
    }
    // lettre nests connection errors in connection errors: say it once.
    let msg = format!("{relay}: {e}")
        .replace("Connection error: Connection error: ", "connection error: ");
    let msg = redact(&msg, settings);
    if e.is_permanent() || e.is_client() {
        EmailError::Permanent(msg)
    } else {
        // is_transient (4xx), connection, network, timeout, other TLS errors, bad replies.
        EmailError::Transient(msg)
    }
}

/// The rustls error, when the TLS handshake failed on the relay's certificate. lettre reports
/// handshake errors as connection errors whose source is the `io::Error` tokio-rustls made from
/// a `rustls::Error`; `io::Error::source` skips the wrapped error, so look into it by hand.
fn certificate_rejected(e: &lettre::transport::smtp::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(
            tls @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) = tls
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// The text with the password — as is, in base64, and inside an AUTH PLAIN token — replaced by
/// `[redacted]`.
fn redact(text: &str, settings: &SmtpSettings) -> String {
    let Some(password) = settings.password.as_deref() else {
        return text.to_owned();
    };
    let user = settings.username.as_deref().unwrap_or("");
    let mut out = text.to_owned();
    let plain = format!("\0{user}\0{password}");
    for secret in [
        password.to_owned(),
        base64(password.as_bytes()),
        base64(plain.as_bytes()),
    ] {
        if !secret.is_empty() {
            out = out.replace(&secret, "[redacted]");
        }
    }
    out
}

/// Standard base64 with padding (for [`redact`]; not worth a dependency).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn from_secret_defaults_and_errors_name_the_key() {
        let s = SmtpSettings::from_secret(&secret(&[
            ("host", "smtp.example.com\n"),
            ("from", "a@example.com"),
        ]))
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.username.as_deref()),
            ("smtp.example.com", 587, SmtpTls::StartTls, None)
        );
        assert!(!s.has_credentials());
        let s = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("tls", "Implicit"),
        ]))
        .unwrap();
        assert_eq!((s.port, s.tls), (465, SmtpTls::Implicit));

        let e = SmtpSettings::from_secret(&secret(&[("from", "a@b.c")])).unwrap_err();
        assert!(e.contains("`host`"), "{e}");
        let e = SmtpSettings::from_secret(&secret(&[("host", "h")])).unwrap_err();
        assert!(e.contains("`from`"), "{e}");
        let e = SmtpSettings::from_secret(&secret(&[("host", "h"), ("from", "not an address")]))
            .unwrap_err();
        assert!(e.contains("`from`"), "{e}");
        let e =
            SmtpSettings::from_secret(&secret(&[("host", "h"), ("from", "a@b.c"), ("port", "0")]))
                .unwrap_err();
        assert!(e.contains("`port`"), "{e}");
        let e = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("tls", "none"),
        ]))
        .unwrap_err();
        assert!(e.contains("`tls`"), "{e}");
        let e = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("password", "s3cret-pw"),
        ]))
        .unwrap_err();
        assert!(e.contains("`username`") && !e.contains("s3cret-pw"), "{e}");
        let e = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("username", "u"),
        ]))
        .unwrap_err();
        assert!(e.contains("`password`"), "{e}");
        let e = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("ca.crt", "junk"),
        ]))
        .unwrap_err();
        assert!(e.contains("`ca.crt`"), "{e}");
        let mut bad = secret(&[("host", "h"), ("from", "a@b.c"), ("username", "u")]);
        bad.insert("password".into(), vec![0xff, 0xfe]);
        let e = SmtpSettings::from_secret(&bad).unwrap_err();
        assert!(e.contains("`password`"), "{e}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let s = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("username", "u"),
            ("password", "s3cret-pw"),
        ]))
        .unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("s3cret-pw") && d.contains("[redacted]"), "{d}");
        assert!(s.has_credentials());
    }

    #[test]
    fn subject_is_one_line_and_message_is_checked() {
        assert_eq!(one_line("a\r\nBcc: x@y.z\n\tb"), "a Bcc: x@y.z b");
        let s =
            SmtpSettings::from_secret(&secret(&[("host", "h"), ("from", "Xin <a@b.c>")])).unwrap();
        let email = |to: &[&str], mid: &str| Email {
            to: to.iter().map(|s| s.to_string()).collect(),
            subject: "s\r\nBcc: evil@x.y".into(),
            body: "b".into(),
            message_id: mid.into(),
        };
        let m = build_message(&s, &email(&["x@y.z"], "<k@xin.automation>")).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(!raw.to_ascii_lowercase().contains("\nbcc:"), "{raw}");
        assert!(raw.contains("Message-ID: <k@xin.automation>\r\n"), "{raw}");
        assert!(raw.contains("\r\nDate: "), "{raw}");
        for (to, mid) in [
            (&[][..], "<k@x>"),
            (&["x@y.z\r\nBcc: evil@x.y"][..], "<k@x>"),
            (&["not-an-address"][..], "<k@x>"),
            (&["x@y.z"][..], "k@x"),
            (&["x@y.z"][..], "<k@x>\r\nBcc: evil@x.y"),
            (&["x@y.z"][..], "<k x@y>"),
        ] {
            assert!(
                matches!(
                    build_message(&s, &email(to, mid)),
                    Err(EmailError::Permanent(_))
                ),
                "{to:?} {mid:?}"
            );
        }
    }

    #[test]
    fn redact_hides_password_and_its_base64() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"\0xin\0xin-test-smtp"), "AHhpbgB4aW4tdGVzdC1zbXRw");
        let s = SmtpSettings::from_secret(&secret(&[
            ("host", "h"),
            ("from", "a@b.c"),
            ("username", "xin"),
            ("password", "xin-test-smtp"),
        ]))
        .unwrap();
        let r = redact(
            "535 xin-test-smtp eGluLXRlc3Qtc210cA== AHhpbgB4aW4tdGVzdC1zbXRw",
            &s,
        );
        assert_eq!(r, "535 [redacted] [redacted] [redacted]");
    }
}
