//! Pure builders: validated input in, Kubernetes objects out. No client, no I/O, so every
//! builder is unit-tested by comparing objects.

pub mod automation;
pub mod gateway;
pub mod ingestion;
pub mod network;
pub mod tenant;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "xin-operator";
/// Label on every object the operator creates; watches and pruning select on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "xin-operator");
pub const TENANT_LABEL: &str = "xin.dev/tenant";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const CONFIG_HASH_ANNOTATION: &str = "xin.dev/config-hash";

/// Labels of an object of `component` belonging to `tenant`.
pub fn labels(tenant: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.into(), MANAGED_BY.1.into()),
        ("app.kubernetes.io/name".into(), "xin".into()),
        (COMPONENT_LABEL.into(), component.into()),
        (TENANT_LABEL.into(), tenant.into()),
    ])
}

/// Pod selector labels of a workload (a stable subset of [`labels`]).
pub fn selector(tenant: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT_LABEL.into(), component.into()),
        (TENANT_LABEL.into(), tenant.into()),
    ])
}

/// A controller owner reference to `owner`.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    owner
        .controller_owner_ref(&())
        .expect("owners come from the API server and have a name and uid")
}

/// Metadata for a child named `name` in `namespace`, owned by `owner`.
pub fn meta<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    namespace: &str,
    tenant: &str,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(tenant, component)),
        owner_references: Some(vec![owner_ref(owner)]),
        ..ObjectMeta::default()
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Observability settings every workload gets.
pub fn otel_env(config: &Config) -> Vec<EnvVar> {
    let mut out = Vec::new();
    if let Some(endpoint) = &config.otel_exporter_endpoint {
        out.push(env("OTEL_EXPORTER_ENDPOINT", endpoint.clone()));
    }
    if let Some(secret) = &config.otel_tenant_headers_secret {
        // Per-tenant credentials the platform keeps in the tenant's namespace (never a copy of
        // the platform's own): optional, so a tenant without them still starts.
        let mut e = env_secret("OTEL_EXPORTER_HEADERS", secret, OTEL_HEADERS_KEY);
        if let Some(r) = e
            .value_from
            .as_mut()
            .and_then(|v| v.secret_key_ref.as_mut())
        {
            r.optional = Some(true);
        }
        out.push(e);
    }
    out
}

/// Where the workloads' calls to tenant-supplied URLs may go: the operator's own lists. The
/// service range is always rendered, the lists only when set.
pub fn outbound_env(config: &Config) -> Vec<EnvVar> {
    let mut out = vec![env("XIN_SERVICE_CIDR", config.service_cidr.to_string())];
    if !config.outbound_allow.is_empty() {
        out.push(env("XIN_OUTBOUND_ALLOW", config.outbound_allow.to_string()));
    }
    if !config.outbound_deny.is_empty() {
        out.push(env("XIN_OUTBOUND_DENY", config.outbound_deny.to_string()));
    }
    out
}

/// The key of the per-tenant OTLP headers Secret (`XIN_OTEL_TENANT_HEADERS_SECRET`).
pub const OTEL_HEADERS_KEY: &str = "headers";

/// Hex SHA-256 over `parts`, each length-prefixed so that parts cannot run together.
/// Used for the pod-template hash annotation; a digest never reveals a secret value.
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_parts_separates_parts() {
        assert_ne!(
            hash_parts([b"ab".as_slice(), b"c"]),
            hash_parts([b"a".as_slice(), b"bc"])
        );
        assert_eq!(hash_parts([b"x".as_slice()]), hash_parts([b"x".as_slice()]));
        assert_eq!(hash_parts([b"x".as_slice()]).len(), 64);
    }

    #[test]
    fn outbound_settings_are_rendered_as_the_workloads_read_them() {
        let get = |env: &[EnvVar], n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        let env = outbound_env(&Config::for_tests());
        assert_eq!(
            get(&env, "XIN_SERVICE_CIDR").as_deref(),
            Some("10.96.0.0/12")
        );
        assert_eq!(env.len(), 1, "no lists unless set: {env:?}");
        let cfg = <Config as clap::Parser>::parse_from([
            "xin-operator",
            "--outbound-allow",
            " 10.20.0.0/16, LLM.corp.example ",
            "--outbound-deny",
            "10.20.9.0/24",
            "--service-cidr",
            "10.100.0.0/16,fd00:10:96::/108",
        ]);
        let env = outbound_env(&cfg);
        assert_eq!(
            get(&env, "XIN_OUTBOUND_ALLOW").as_deref(),
            Some("10.20.0.0/16,llm.corp.example")
        );
        assert_eq!(
            get(&env, "XIN_OUTBOUND_DENY").as_deref(),
            Some("10.20.9.0/24")
        );
        assert_eq!(
            get(&env, "XIN_SERVICE_CIDR").as_deref(),
            Some("10.100.0.0/16,fd00:10:96::/108")
        );
        for bad in [
            ["--outbound-allow", "10.0.0.0/33"],
            ["--outbound-deny", "http://x"],
            ["--service-cidr", ""],
        ] {
            let mut argv = vec!["xin-operator"];
            argv.extend(bad);
            assert!(
                <Config as clap::Parser>::try_parse_from(argv).is_err(),
                "{bad:?}"
            );
        }
    }
}
