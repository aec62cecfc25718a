//! Where an http(s) URL goes, parsed the way browsers and the `url` crate (which the
//! workloads' HTTP client uses) parse it (the WHATWG URL standard): the userinfo before the
//! last `@` is not the host, `\` counts as `/`, tabs and newlines are dropped, percent-escapes
//! in the host are decoded, and an IPv4 address may be written in decimal, octal or hex, in
//! one to four parts (`0x7f.1`, `2130706433`, `0177.0.0.1` and `127.1` are all 127.0.0.1).
//! A host that cannot be parsed is an error, never a guess.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host of a URL: an address, or a name to resolve (lower-case, without a trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// The parts of an http(s) URL that say where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParts {
    /// `http` or `https`.
    pub scheme: &'static str,
    pub host: Host,
    /// The host as written (lower-case), without userinfo or port.
    pub host_text: String,
    pub port: Option<u16>,
    /// The path, `/` when empty; no query, no fragment.
    pub path: String,
}

/// Why a URL has no destination to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlError {
    NotHttp,
    NoHost,
    BadHost,
    BadPort,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlError::NotHttp => "not an http:// or https:// URL",
            UrlError::NoHost => "the URL has no host",
            UrlError::BadHost => "the URL's host is not a valid name or address",
            UrlError::BadPort => "the URL's port is not a number from 0 to 65535",
        })
    }
}

impl std::error::Error for UrlError {}

/// Splits an http(s) URL into scheme, host, port and path.
pub fn parse_url(input: &str) -> Result<UrlParts, UrlError> {
    // Leading and trailing controls and spaces are stripped, tabs and newlines anywhere are
    // dropped: `http://127.0.0.1\n/` goes to 127.0.0.1.
    let cleaned: String = input
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let (scheme, rest) = cleaned.split_once(':').ok_or(UrlError::NotHttp)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return Err(UrlError::NotHttp),
    };
    // Any number of slashes or backslashes may follow the scheme of an http(s) URL.
    let rest = rest.trim_start_matches(['/', '\\']);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Everything up to the last `@` is userinfo: `http://good.example@127.0.0.1/` goes to
    // 127.0.0.1.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host_text, port) = split_port(host_port)?;
    if host_text.is_empty() {
        return Err(UrlError::NoHost);
    }
    let host = parse_host(host_text)?;
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = tail[..path_end].replace('\\', "/");
    Ok(UrlParts {
        scheme,
        host,
        host_text: host_text.to_ascii_lowercase(),
        port,
        path: if path.is_empty() { "/".into() } else { path },
    })
}

fn split_port(host_port: &str) -> Result<(&str, Option<u16>), UrlError> {
    let (host, port) = if host_port.starts_with('[') {
        let close = host_port.find(']').ok_or(UrlError::BadHost)?;
        let (h, after) = host_port.split_at(close + 1);
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or(UrlError::BadHost)?)),
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            let digits = p.trim_start_matches('0');
            if digits.len() > 5 {
                return Err(UrlError::BadPort);
            }
            Some(
                digits
                    .parse::<u32>()
                    .unwrap_or(0)
                    .try_into()
                    .map_err(|_| UrlError::BadPort)?,
            )
        }
        Some(_) => return Err(UrlError::BadPort),
    };
    Ok((host, port))
}

/// Parses a URL's host as written between the userinfo and the port: `[v6]`, an IPv4
/// address in any of the forms the URL standard accepts, or a name.
pub fn parse_host(text: &str) -> Result<Host, UrlError> {
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UrlError::BadHost)?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| UrlError::BadHost);
    }
    let decoded = percent_decode(text).ok_or(UrlError::BadHost)?;
    // Full-width digits, letters and dots are what IDNA maps them to (`１２７．０．０．１` is
    // 127.0.0.1 to a browser); other non-ASCII names are left to the resolver check.
    let host: String = decoded
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3002}' | '\u{FF61}' => '.',
            c => c.to_ascii_lowercase(),
        })
        .collect::<String>()
        .to_lowercase();
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    const FORBIDDEN: &[char] = &[
        '\0', '\t', '\n', '\r', ' ', '#', '%', '/', ':', '<', '>', '?', '@', '[', '\\', ']', '^',
        '|',
    ];
    if host.contains(FORBIDDEN) || host.chars().any(char::is_control) {
        return Err(UrlError::BadHost);
    }
    if ends_in_a_number(&host) {
        return parse_ipv4(&host)
            .map(|a| Host::Ip(IpAddr::V4(a)))
            .ok_or(UrlError::BadHost);
    }
    let name = host.strip_suffix('.').unwrap_or(&host);
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(UrlError::BadHost);
    }
    Ok(Host::Name(name.to_string()))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL standard's test for a host meant as an IPv4 address: its last label is a number.
fn ends_in_a_number(host: &str) -> bool {
    let mut parts: Vec<&str> = host.split('.').collect();
    if parts.last() == Some(&"") {
        if parts.len() == 1 {
            return false;
        }
        parts.pop();
    }
    let last = parts.last().copied().unwrap_or_default();
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || ipv4_number(last).is_some()
}

/// An IPv4 address in the forms the URL standard accepts: one to four dot-separated numbers,
/// each decimal, octal (leading `0`) or hex (`0x`); the last fills the remaining bytes.
pub fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let mut parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|p| ipv4_number(p))
        .collect::<Option<Vec<u64>>>()?;
    let (last, init) = numbers.split_last()?;
    if init.iter().any(|n| *n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return None;
    }
    let mut v = *last;
    for (i, n) in init.iter().enumerate() {
        v += n << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(u32::try_from(v).ok()?))
}

/// One number of an IPv4 address; values too large for 64 bits saturate (and are refused
/// by the caller's range check).
fn ipv4_number(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(u64::from_str_radix(digits, radix).unwrap_or(u64::MAX))
}

/// Longest path kept by [`redact_url`].
const REDACTED_PATH_CHARS: usize = 100;

/// A URL fit for logs and condition messages: `scheme://host[:port]/path`, never the
/// userinfo, the query or the fragment (where credentials and tokens usually travel); the
/// path is cut after 100 characters. A URL that does not parse is shown as such, not echoed.
pub fn redact_url(input: &str) -> String {
    let Ok(p) = parse_url(input) else {
        return "(not a valid http(s) URL)".into();
    };
    let port = p.port.map(|n| format!(":{n}")).unwrap_or_default();
    let path = match p.path.char_indices().nth(REDACTED_PATH_CHARS) {
        Some((cut, _)) => format!("{}…", &p.path[..cut]),
        None => p.path,
    };
    format!("{}://{}{port}{path}", p.scheme, p.host_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }

    #[test]
    fn hosts_are_parsed_as_browsers_parse_them() {
        for (url, host) in [
            ("http://127.0.0.1/", ip("127.0.0.1")),
            ("http://0x7f.1/", ip("127.0.0.1")),
            ("http://0X7F.0.0.1/", ip("127.0.0.1")),
            ("http://2130706433/", ip("127.0.0.1")),
            ("http://0177.0.0.1/", ip("127.0.0.1")),
            ("http://0177.1/", ip("127.0.0.1")),
            ("http://127.1/", ip("127.0.0.1")),
            ("http://127.0.1/", ip("127.0.0.1")),
            ("http://127.1.0x1/", ip("127.1.0.1")),
            ("http://0x7f000001/", ip("127.0.0.1")),
            ("http://0/", ip("0.0.0.0")),
            ("http://0x/", ip("0.0.0.0")),
            ("http://127.0.0.1./", ip("127.0.0.1")),
            ("http://%31%32%37.0.0.1/", ip("127.0.0.1")),
            ("http://１２７．０．０．１/", ip("127.0.0.1")),
            (
                "http://169.254.169.254/latest/meta-data",
                ip("169.254.169.254"),
            ),
            ("http://[::1]/", ip("::1")),
            ("http://[::ffff:127.0.0.1]/", ip("::ffff:7f00:1")),
            ("http://[::127.0.0.1]:8080/", ip("::7f00:1")),
            ("http://[fd00:ec2::254]/", ip("fd00:ec2::254")),
            ("HTTPS://LLM.Example.COM:8443/v1", name("llm.example.com")),
            ("https://llm.example.com./v1", name("llm.example.com")),
            ("https://ｌｏｃａｌｈｏｓｔ/", name("localhost")),
            ("http://1.2.3.4.nip.io/", name("1.2.3.4.nip.io")),
            ("http://1.0x7g/", name("1.0x7g")),
            // Userinfo is not the host, whichever way it is dressed up.
            ("http://good.example@127.0.0.1/", ip("127.0.0.1")),
            ("http://good.example:443@127.0.0.1/", ip("127.0.0.1")),
            ("http://a@good.example@127.0.0.1/", ip("127.0.0.1")),
            ("http://127.0.0.1#@good.example/", ip("127.0.0.1")),
            ("http://127.0.0.1?@good.example/", ip("127.0.0.1")),
            ("http://127.0.0.1\\@good.example/", ip("127.0.0.1")),
            ("http:\\\\127.0.0.1\\x", ip("127.0.0.1")),
            ("http:127.0.0.1/", ip("127.0.0.1")),
            ("http:///127.0.0.1/", ip("127.0.0.1")),
            (" http://127.0.0.1/ ", ip("127.0.0.1")),
            ("http://12\t7.0.0.1/", ip("127.0.0.1")),
        ] {
            assert_eq!(parse_url(url).map(|p| p.host), Ok(host), "{url}");
        }
    }

    #[test]
    fn what_is_not_a_destination_is_an_error() {
        for (url, err) in [
            ("ftp://127.0.0.1/", UrlError::NotHttp),
            ("file:///etc/passwd", UrlError::NotHttp),
            ("gopher://x", UrlError::NotHttp),
            ("127.0.0.1", UrlError::NotHttp),
            ("http://", UrlError::NoHost),
            ("http://user@/", UrlError::NoHost),
            ("http://:80/", UrlError::NoHost),
            ("http://256.0.0.1/", UrlError::BadHost),
            ("http://1.2.3.4.5/", UrlError::BadHost),
            ("http://09.0.0.1/", UrlError::BadHost),
            ("http://0x7g.1/", UrlError::BadHost),
            ("http://4294967296/", UrlError::BadHost),
            ("http://99999999999999999999999/", UrlError::BadHost),
            ("http://[::1/", UrlError::BadHost),
            ("http://[fe80::1%25eth0]/", UrlError::BadHost),
            ("http://[::1]x/", UrlError::BadHost),
            ("http://a..b/", UrlError::BadHost),
            ("http://a b/", UrlError::BadHost),
            ("http://%zz/", UrlError::BadHost),
            ("http://%25/", UrlError::BadHost),
            ("http://h:65536/", UrlError::BadPort),
            ("http://h:8x/", UrlError::BadPort),
            ("http://h:1:2/", UrlError::BadPort),
        ] {
            assert_eq!(parse_url(url).map(|p| p.host), Err(err), "{url}");
        }
    }

    #[test]
    fn ports_and_paths_are_kept_and_queries_are_not() {
        let p = parse_url("https://u:p@H.example:0443/a/b?token=x#f").unwrap();
        assert_eq!(
            (p.scheme, p.host_text.as_str(), p.port, p.path.as_str()),
            ("https", "h.example", Some(443), "/a/b")
        );
        assert_eq!(parse_url("http://h").unwrap().path, "/");
        assert_eq!(parse_url("http://h:/x").unwrap().port, None);
    }

    #[test]
    fn redacted_urls_carry_no_userinfo_query_or_fragment() {
        for (url, shown) in [
            (
                "https://user:s3cret@llm.example.com:8443/v1/chat?key=s3cret#frag",
                "https://llm.example.com:8443/v1/chat",
            ),
            ("http://good.example@127.0.0.1/", "http://127.0.0.1/"),
            ("http://127.0.0.1#@good.example/", "http://127.0.0.1/"),
            ("HTTP://[::1]:80", "http://[::1]:80/"),
            ("not a url s3cret", "(not a valid http(s) URL)"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let long = format!("https://h.example/{}", "p".repeat(500));
        let r = redact_url(&long);
        assert!(r.ends_with('…') && r.chars().count() < 140, "{r}");
    }
}
