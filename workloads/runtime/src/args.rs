//! Value parsers for the settings every workload takes from its environment (`clap`'s
//! `value_parser`): each error names the variable and the value's shape, never a secret.

use std::time::Duration;

/// A value that is not blank.
pub fn non_empty(var: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s| {
        if s.trim().is_empty() {
            Err(format!("{var} must not be empty"))
        } else {
            Ok(s.to_string())
        }
    }
}

/// A whole number from 1 to `max`.
pub fn positive(var: &'static str, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| match s.trim().parse::<usize>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "{var} must be a whole number from 1 to {max}, got {s:?}"
        )),
    }
}

/// Seconds above 0 and at most an hour (fractions allowed).
pub fn seconds(var: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{var} must be a number of seconds above 0 and at most 3600 (e.g. 10 or 0.5), got {s:?}"
        )),
    }
}

/// A base `http://` or `https://` URL, without query, fragment or credentials (a trailing
/// slash dropped).
pub fn http_url(var: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |s| {
        let s = s.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(s).map_err(|e| format!("{var} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{var} must be an http:// or https:// URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{var} must be a base URL without query or fragment"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{var} must not carry credentials (use the API key variable)"
            ));
        }
        Ok(s.to_string())
    }
}
