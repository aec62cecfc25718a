//! A secret setting (a URL with a password, a key): parsed like a string, shown by `Debug` as
//! `<redacted>`, so a `?config` in a log line or a panic message cannot leak it. Shared by the
//! operator's and the workloads' settings.

/// A secret string; the value is `.0` (or [`Redacted::expose`]).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted(pub String);

impl Redacted {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Redacted(s.to_string()))
    }
}

impl From<&str> for Redacted {
    fn from(s: &str) -> Self {
        Redacted(s.to_string())
    }
}

impl From<String> for Redacted {
    fn from(s: String) -> Self {
        Redacted(s)
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let r: Redacted = "postgres://u:pw@db/x".parse().unwrap();
        assert_eq!(format!("{r:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(r.clone())), "Some(<redacted>)");
        assert_eq!(r.expose(), "postgres://u:pw@db/x");
    }
}
