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
use xin_api::channel::{Channel, ChannelType};
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
    if !config.gateway_trusted_proxies.0.is_empty() {
        env.push(super::env(
            "GATEWAY_TRUSTED_PROXIES",
            config.gateway_trusted_proxies.to_string(),
        ));
    }
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
        let to_gateway = |path: String, path_type: &str| HTTPIngressPath {
            path: Some(path),
            path_type: path_type.into(),
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
        let mut paths = vec![to_gateway(webhook_path(&ch.name_any()), "Exact")];
        if ch.spec.type_ == ChannelType::Web {
            // The widget's endpoints (`/widget/<channel>/…`) and its script.
            paths.push(to_gateway(
                format!("{}/", xin_api::widget::channel_path(&ch.name_any())),
                "Prefix",
            ));
            paths.push(to_gateway(
                xin_api::widget::script_path().to_string(),
                "Exact",
            ));
        }
        let rule = match rules
            .iter_mut()
            .position(|r| r.host.as_deref() == Some(&ing.host))
        {
            Some(i) => &mut rules[i],
            None => {
                rules.push(IngressRule {
                    host: Some(ing.host.clone()),
                    http: Some(HTTPIngressRuleValue { paths: vec![] }),
                });
                rules.last_mut().expect("just pushed")
            }
        };
        let existing = &mut rule.http.as_mut().expect("built with http").paths;
        for p in paths {
            // Two web channels on one host share the script's path.
            if !existing.iter().any(|e| e.path == p.path) {
                existing.push(p);
            }
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
            anonymous_visitors: false,
            display_name: None,
            theme: None,
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

    fn channel(name: &str, spec: serde_json::Value) -> Channel {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "xin.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": name, "namespace": "xin-acme"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn the_ingress_routes_a_web_channels_widget_endpoints_and_script() {
        let web = |name: &str| {
            channel(
                name,
                serde_json::json!({"type": "web", "displayName": name,
                    "web": {"allowedOrigins": ["https://shop.example"], "identitySecretRef": {"name": "s", "key": "k"}},
                    "ingress": {"host": "chat.acme.example"}}),
            )
        };
        let tg = channel(
            "tg",
            serde_json::json!({"type": "telegram", "displayName": "tg",
                "telegram": {"botTokenSecretRef": {"name": "s", "key": "k"}},
                "ingress": {"host": "chat.acme.example"}}),
        );
        let (a, b) = (web("site"), web("shop"));
        let ing = build_gateway_ingress(&tenant("acme"), "xin-acme", &[&a, &b, &tg]).unwrap();
        let rules = ing.spec.unwrap().rules.unwrap();
        assert_eq!(rules.len(), 1, "one host");
        let paths: Vec<(String, String)> = rules[0]
            .http
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .map(|p| (p.path.clone().unwrap(), p.path_type.clone()))
            .collect();
        let script = xin_api::widget::script_path().to_string();
        let want: Vec<(String, String)> = [
            ("/webhooks/shop", "Exact"),
            ("/widget/shop/", "Prefix"),
            (script.as_str(), "Exact"),
            ("/webhooks/site", "Exact"),
            ("/widget/site/", "Prefix"),
            ("/webhooks/tg", "Exact"),
        ]
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
        assert_eq!(
            paths, want,
            "the script once per host; no widget paths for Telegram"
        );
    }

    #[test]
    fn trusted_proxies_reach_the_gateway_only_when_set() {
        let get = |config: &Config| {
            build_gateway_deployment(&tenant("acme"), "xin-acme", config, "h".into())
                .spec
                .template
                .spec
                .unwrap()
                .containers[0]
                .env
                .clone()
                .unwrap()
                .into_iter()
                .find(|e| e.name == "GATEWAY_TRUSTED_PROXIES")
                .and_then(|e| e.value)
        };
        assert_eq!(get(&Config::for_tests()), None);
        let config = <Config as clap::Parser>::parse_from([
            "xin-operator",
            "--gateway-trusted-proxies",
            "10.0.0.0/8,192.168.1.5/32",
        ]);
        assert_eq!(get(&config).as_deref(), Some("10.0.0.0/8,192.168.1.5/32"));
    }
}
