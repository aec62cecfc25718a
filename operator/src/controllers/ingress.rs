//! Which Ingress a Channel may have: its host must be one the platform allows the Tenant (the
//! Tenant's `spec.network.allowedDomains`, or the operator's `XIN_INGRESS_ALLOWED_HOSTS`
//! patterns) and not another Tenant's, and its annotations must be on the operator's allowlist.
//! A Channel that fails is `Ready=False` and gets no Ingress rule.

use kube::ResourceExt;
use xin_api::channel::Channel;
use xin_api::tenant::Tenant;

use crate::config::Config;
use crate::error::ValidateError;

/// Whether `host` is `domain` or a subdomain of it.
fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
}

/// Whether `host` matches `pattern` for `tenant` (`{tenant}` replaced; a leading `*.` is one
/// or more labels).
fn matches(pattern: &str, tenant: &str, host: &str) -> bool {
    let pattern = pattern.trim().replace("{tenant}", tenant);
    match pattern.strip_prefix("*.") {
        Some(domain) => within(host, domain) && host != domain,
        None => !pattern.is_empty() && host == pattern,
    }
}

/// Whether annotation `key` is on `allowlist` (exact keys, or `prefix/*`).
fn annotation_allowed(allowlist: &[String], key: &str) -> bool {
    allowlist
        .iter()
        .map(|a| a.trim())
        .any(|a| match a.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => key.starts_with(prefix),
            _ => a == key,
        })
}

/// The Channel's Ingress, checked. `others`: every other Channel in the cluster (a host another
/// Tenant's Channel had first is refused).
pub fn check<'a>(
    ch: &Channel,
    tenant: &Tenant,
    config: &Config,
    others: impl IntoIterator<Item = &'a Channel>,
) -> Result<(), ValidateError> {
    let Some(ing) = &ch.spec.ingress else {
        return Ok(());
    };
    let host = ing.host.as_str();
    let name = tenant.name_any();
    let domains = &tenant.spec.network.allowed_domains;
    let allowed = domains.iter().any(|d| within(host, d))
        || config
            .ingress_allowed_hosts
            .iter()
            .any(|p| matches(p, &name, host));
    if !allowed {
        return Err(ValidateError::HostNotAllowed {
            host: host.into(),
            tenant: name,
        });
    }
    let ns = ch.namespace();
    let first = |c: &Channel| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.namespace(),
            c.name_any(),
        )
    };
    if others.into_iter().any(|o| {
        o.namespace() != ns
            && o.metadata.deletion_timestamp.is_none()
            && o.spec.ingress.as_ref().is_some_and(|i| i.host == host)
            && first(o) < first(ch)
    }) {
        return Err(ValidateError::HostTaken { host: host.into() });
    }
    if let Some(key) = ing
        .annotations
        .keys()
        .find(|k| !annotation_allowed(&config.ingress_annotation_allowlist, k))
    {
        return Err(ValidateError::IngressAnnotationNotAllowed { key: key.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn channel(ns: &str, host: &str, annotations: serde_json::Value, created: &str) -> Channel {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": "bot", "namespace": ns, "creationTimestamp": created},
            "spec": {"type": "telegram", "displayName": "bot",
                     "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}},
                     "ingress": {"host": host, "annotations": annotations}}}))
        .unwrap()
    }

    fn tenant(name: &str, domains: &[&str]) -> Tenant {
        let mut t = crate::builders::tenant::tests::tenant(name);
        t.spec.network.allowed_domains = domains.iter().map(|d| d.to_string()).collect();
        t
    }

    const T0: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_host_needs_the_tenants_domain_or_the_platforms_pattern() {
        let config = Config::for_tests();
        let acme = tenant("acme", &["acme.example"]);
        let ok = |host: &str, t: &Tenant, c: &Config| {
            check(
                &channel("xin-acme", host, serde_json::json!({}), T0),
                t,
                c,
                [],
            )
            .is_ok()
        };
        assert!(ok("acme.example", &acme, &config));
        assert!(ok("hooks.acme.example", &acme, &config));
        assert!(!ok("evilacme.example", &acme, &config));
        assert!(!ok("hooks.globex.example", &acme, &config));
        assert!(!ok("acme.example.evil.test", &acme, &config));
        // Nothing allowed without a domain or a pattern.
        let bare = tenant("acme", &[]);
        assert!(!ok("hooks.acme.example", &bare, &config));
        let patterns = Config::parse_from([
            "xin-operator",
            "--ingress-allowed-hosts={tenant}.hooks.example.com,*.{tenant}.chat.example.com",
        ]);
        assert!(ok("acme.hooks.example.com", &bare, &patterns));
        assert!(ok("eu.acme.chat.example.com", &bare, &patterns));
        assert!(!ok("acme.chat.example.com", &bare, &patterns));
        assert!(!ok("globex.hooks.example.com", &bare, &patterns));
        assert!(!ok("x.acme.hooks.example.com", &bare, &patterns));
        let err = check(
            &channel(
                "xin-acme",
                "hooks.globex.example",
                serde_json::json!({}),
                T0,
            ),
            &acme,
            &config,
            [],
        )
        .unwrap_err();
        assert!(err.to_string().contains("hooks.globex.example"), "{err}");
    }

    #[test]
    fn a_host_another_tenant_had_first_is_refused() {
        let config = Config::for_tests();
        let both = tenant("acme", &["shared.example"]);
        let first = channel(
            "xin-globex",
            "hooks.shared.example",
            serde_json::json!({}),
            T0,
        );
        let later = channel(
            "xin-acme",
            "hooks.shared.example",
            serde_json::json!({}),
            "2026-01-02T00:00:00Z",
        );
        let err = check(&later, &both, &config, [&first]).unwrap_err();
        assert!(matches!(err, ValidateError::HostTaken { .. }), "{err}");
        assert!(check(&first, &both, &config, [&later]).is_ok());
        // The same tenant's channels share a host (each has its own path).
        let sibling = channel(
            "xin-acme",
            "hooks.shared.example",
            serde_json::json!({}),
            T0,
        );
        assert!(check(&later, &both, &config, [&sibling]).is_ok());
    }

    #[test]
    fn only_allowlisted_annotations_reach_the_ingress() {
        let config = Config::for_tests();
        let acme = tenant("acme", &["acme.example"]);
        let with = |a: serde_json::Value| {
            check(
                &channel("xin-acme", "hooks.acme.example", a, T0),
                &acme,
                &config,
                [],
            )
        };
        assert!(with(serde_json::json!({"cert-manager.io/cluster-issuer": "le"})).is_ok());
        let err = with(serde_json::json!({
            "cert-manager.io/cluster-issuer": "le",
            "nginx.ingress.kubernetes.io/configuration-snippet": "return 200;"
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.ingress.annotations: \"nginx.ingress.kubernetes.io/configuration-snippet\" is not an annotation the platform allows on Ingresses (XIN_INGRESS_ANNOTATION_ALLOWLIST)"
        );
        assert!(!annotation_allowed(
            &["cert-manager.io/*".into()],
            "cert-manager.io.evil/x"
        ));
        assert!(annotation_allowed(
            &["a.example/key".into()],
            "a.example/key"
        ));
        assert!(!annotation_allowed(
            &["a.example/key".into()],
            "a.example/key2"
        ));
    }
}
