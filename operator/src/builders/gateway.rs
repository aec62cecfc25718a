//! The tenant's gateway: exists while at least one Channel does and serves all of them from the
//! rendered routes Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::ResourceExt;
use xin_api::channel::Channel;
use xin_api::routes::{ROUTES_DIR, ROUTES_KEY, ROUTES_SECRET, Routes};
use xin_api::tenant::Tenant;

use super::tenant::{SIGNING_KEY, SIGNING_SECRET};
use super::workload::{WorkloadParts, build_workload_deployment};
use super::*;
use crate::component::{Component, HTTP_PORT};

/// Path of a channel's webhook on its tenant's gateway.
pub fn webhook_path(channel_name: &str) -> String {
    format!("/webhooks/{channel_name}")
}

/// The routes Secret. `routes` is serialised deterministically (channels sorted by name), so
/// an unchanged set of channels renders identical bytes and causes no write.
pub fn build_routes_secret(
    tenant: &Tenant,
    ns: &str,
    routes: &Routes,
) -> Result<Secret, serde_json::Error> {
    let mut routes = routes.clone();
    routes.channels.sort_by(|a, b| a.name.cmp(&b.name));
    let body = serde_json::to_vec_pretty(&routes)?;
    Ok(Secret {
        metadata: meta(
            tenant,
            ROUTES_SECRET,
            ns,
            &tenant.name_any(),
            Component::Gateway.as_str(),
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(ROUTES_KEY.into(), ByteString(body))])),
        ..Secret::default()
    })
}

pub fn build_gateway_deployment(
    tenant: &Tenant,
    ns: &str,
    config: &Config,
    config_hash: String,
) -> Deployment {
    let mut env = vec![
        env("XIN_TENANT", tenant.name_any()),
        env("GATEWAY_HTTP_PORT", HTTP_PORT.to_string()),
        env("GATEWAY_ROUTES_FILE", format!("{ROUTES_DIR}/{ROUTES_KEY}")),
        env("GATEWAY_METRICS_HOST", "0.0.0.0"),
        env(
            "GATEWAY_METRICS_PORT",
            Component::Gateway.metrics_port().to_string(),
        ),
        env(
            "ORCHESTRATOR_URL",
            format!(
                "http://{}.{ns}.svc:{HTTP_PORT}",
                Component::Orchestrator.workload_name()
            ),
        ),
        crate::builders::tenant::database_url_env(tenant),
        env_secret("TENANT_SIGNING_KEY", SIGNING_SECRET, SIGNING_KEY),
    ];
    env.extend(otel_env(config));
    build_workload_deployment(
        tenant,
        ns,
        config,
        WorkloadParts {
            component: Component::Gateway,
            image: config.gateway_image.clone(),
            env,
            resources: None,
            config_hash,
            volumes: vec![Volume {
                name: "routes".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(ROUTES_SECRET.into()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            }],
            mounts: vec![VolumeMount {
                name: "routes".into(),
                mount_path: ROUTES_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }],
            replicas: tenant.spec.suspend.then_some(0),
            probe_path: Some("/ready"),
        },
    )
}

/// One Ingress for the channels that ask for one; `None` when none does.
pub fn build_gateway_ingress(tenant: &Tenant, ns: &str, channels: &[&Channel]) -> Option<Ingress> {
    let mut with_ingress: Vec<&Channel> = channels
        .iter()
        .copied()
        .filter(|c| c.spec.ingress.is_some())
        .collect();
    if with_ingress.is_empty() {
        return None;
    }
    with_ingress.sort_by_key(|c| c.name_any());
    let mut annotations = BTreeMap::new();
    let mut class_name = None;
    let mut rules: Vec<IngressRule> = Vec::new();
    let mut tls: Vec<IngressTLS> = Vec::new();
    for ch in with_ingress {
        let ing = ch.spec.ingress.as_ref().expect("filtered above");
        annotations.extend(ing.annotations.clone());
        class_name = class_name.or(ing.class_name.clone());
        let path = HTTPIngressPath {
            path: Some(webhook_path(&ch.name_any())),
            path_type: "Exact".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: Component::Gateway.workload_name(),
                    port: Some(ServiceBackendPort {
                        name: Some("http".into()),
                        ..ServiceBackendPort::default()
                    }),
                }),
                ..IngressBackend::default()
            },
        };
        match rules
            .iter_mut()
            .find(|r| r.host.as_deref() == Some(&ing.host))
        {
            Some(rule) => rule
                .http
                .as_mut()
                .expect("built with http")
                .paths
                .push(path),
            None => rules.push(IngressRule {
                host: Some(ing.host.clone()),
                http: Some(HTTPIngressRuleValue { paths: vec![path] }),
            }),
        }
        if let Some(secret) = &ing.tls_secret_name {
            match tls
                .iter_mut()
                .find(|t| t.secret_name.as_deref() == Some(secret))
            {
                // Two hosts sharing one certificate Secret: both belong in its entry.
                Some(t) => {
                    let hosts = t.hosts.get_or_insert_with(Vec::new);
                    if !hosts.contains(&ing.host) {
                        hosts.push(ing.host.clone());
                    }
                }
                None => tls.push(IngressTLS {
                    hosts: Some(vec![ing.host.clone()]),
                    secret_name: Some(secret.clone()),
                }),
            }
        }
    }
    let mut metadata = meta(
        tenant,
        &Component::Gateway.workload_name(),
        ns,
        &tenant.name_any(),
        Component::Gateway.as_str(),
    );
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: class_name,
            rules: Some(rules),
            tls: (!tls.is_empty()).then_some(tls),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::builders::tenant::tests::tenant;
    use xin_api::routes::{ChannelRoute, Credentials, WebhookKey};

    pub fn route(name: &str) -> ChannelRoute {
        ChannelRoute {
            name: name.into(),
            type_: xin_api::ChannelType::Telegram,
            path: webhook_path(name),
            suspended: false,
            max_body_bytes: 1 << 20,
            requests_per_second: 20,
            burst: 40,
            keys: vec![WebhookKey {
                key: "k".into(),
                expires_at: None,
            }],
            credentials: Credentials {
                bot_token: Some("t".into()),
                ..Credentials::default()
            },
            allowed_origins: vec![],
            phone_number_id: None,
            page_id: None,
            legacy_identity_tokens: false,
        }
    }

    #[test]
    fn routes_render_identically_whatever_the_channel_order() {
        let t = tenant("acme");
        let a = Routes {
            tenant: "acme".into(),
            channels: vec![route("b"), route("a")],
        };
        let b = Routes {
            tenant: "acme".into(),
            channels: vec![route("a"), route("b")],
        };
        assert_eq!(
            build_routes_secret(&t, "xin-acme", &a).unwrap(),
            build_routes_secret(&t, "xin-acme", &b).unwrap()
        );
    }

    #[test]
    fn gateway_mounts_the_routes_and_is_configured_by_environment() {
        let t = tenant("acme");
        let d = build_gateway_deployment(&t, "xin-acme", &Config::for_tests(), "abc".into());
        let pod = d.spec.template;
        assert_eq!(
            pod.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION],
            "abc"
        );
        let spec = pod.spec.unwrap();
        let c = &spec.containers[0];
        let env = c.env.as_ref().unwrap();
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(get("GATEWAY_METRICS_PORT").as_deref(), Some("9102"));
        assert_eq!(get("GATEWAY_METRICS_HOST").as_deref(), Some("0.0.0.0"));
        assert_eq!(
            get("GATEWAY_ROUTES_FILE").as_deref(),
            Some("/etc/xin/routes/routes.json")
        );
        assert_eq!(
            get("ORCHESTRATOR_URL").as_deref(),
            Some("http://xin-orchestrator.xin-acme.svc:8080")
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, ROUTES_DIR);
        assert_eq!(
            spec.volumes.unwrap()[0]
                .secret
                .as_ref()
                .unwrap()
                .secret_name
                .as_deref(),
            Some(ROUTES_SECRET)
        );
    }
}
