//! What a Tenant becomes: namespace, quota, limits, identities, signing Secret and the
//! orchestrator (its NetworkPolicies: [`super::network`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
    Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use xin_api::tenant::{Plan, Tenant};

pub use super::workload::*;
use super::*;
use crate::component::{Component, HTTP_PORT};

pub const SIGNING_SECRET: &str = "xin-tenant-signing";
pub const SIGNING_KEY: &str = "key";
pub const TENANT_UID_ANNOTATION: &str = "xin.dev/tenant-uid";
/// The runtime URL of a platform-managed database (key `url`).
pub const DATABASE_SECRET: &str = "xin-database";
pub const DATABASE_URL_KEY: &str = "url";
/// On the database Secret: the value of the rotation annotation it was made for.
pub const DATABASE_ROTATION_HANDLED: &str = "xin.dev/rotation-handled";

/// The tenant's namespace. Not owned by the Tenant (its deletion policy decides its fate).
pub fn build_namespace(tenant: &Tenant, ns: &str) -> Namespace {
    let mut labels = labels(&tenant.name_any(), "tenant");
    labels.insert(
        "pod-security.kubernetes.io/enforce".into(),
        "restricted".into(),
    );
    Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                TENANT_UID_ANNOTATION.into(),
                tenant.uid().unwrap_or_default(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Quota values of a plan: (cpu, memory, pods, secrets).
fn plan_quota(plan: Plan) -> (&'static str, &'static str, &'static str, &'static str) {
    match plan {
        Plan::Starter => ("4", "8Gi", "20", "50"),
        Plan::Growth => ("16", "32Gi", "60", "200"),
        Plan::Enterprise => ("64", "128Gi", "200", "1000"),
    }
}

pub fn build_resource_quota(tenant: &Tenant, ns: &str) -> ResourceQuota {
    let (cpu, memory, pods, secrets) = plan_quota(tenant.spec.plan);
    let q = |s: &str| Quantity(s.into());
    ResourceQuota {
        metadata: meta(tenant, "xin-quota", ns, &tenant.name_any(), "tenant"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([
                ("limits.cpu".into(), q(cpu)),
                ("limits.memory".into(), q(memory)),
                ("pods".into(), q(pods)),
                ("secrets".into(), q(secrets)),
            ])),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

pub fn build_limit_range(tenant: &Tenant, ns: &str) -> LimitRange {
    let (def_cpu, def_mem, max_cpu, max_mem) = match tenant.spec.plan {
        Plan::Starter => ("500m", "512Mi", "2", "4Gi"),
        Plan::Growth => ("1", "1Gi", "4", "8Gi"),
        Plan::Enterprise => ("2", "2Gi", "16", "32Gi"),
    };
    let q = |s: &str| Quantity(s.into());
    LimitRange {
        metadata: meta(tenant, "xin-limits", ns, &tenant.name_any(), "tenant"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(BTreeMap::from([
                    ("cpu".into(), q(def_cpu)),
                    ("memory".into(), q(def_mem)),
                ])),
                default_request: Some(BTreeMap::from([
                    ("cpu".into(), q("100m")),
                    ("memory".into(), q("128Mi")),
                ])),
                max: Some(BTreeMap::from([
                    ("cpu".into(), q(max_cpu)),
                    ("memory".into(), q(max_mem)),
                ])),
                ..LimitRangeItem::default()
            }],
        }),
    }
}

pub fn build_service_account(tenant: &Tenant, ns: &str, component: Component) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(
            tenant,
            &component.workload_name(),
            ns,
            &tenant.name_any(),
            component.as_str(),
        ),
        // Only the workers that talk to the API server mount a token.
        automount_service_account_token: Some(component.talks_to_api()),
        ..ServiceAccount::default()
    }
}

/// Least privilege: the component's rights ([`Component::role_rules`]); `None` for a component
/// that never talks to the API server. The automation worker may also `get` exactly the Secrets
/// its rules name (`rule_secrets`), by name: not the namespace's others (database credentials,
/// channel tokens).
pub fn build_role(
    tenant: &Tenant,
    ns: &str,
    component: Component,
    rule_secrets: &[String],
) -> Option<Role> {
    let mut rules = component.role_rules();
    if component == Component::Automation && !rule_secrets.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(rule_secrets.to_vec()),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        });
    }
    (!rules.is_empty()).then(|| Role {
        metadata: meta(
            tenant,
            &component.workload_name(),
            ns,
            &tenant.name_any(),
            component.as_str(),
        ),
        rules: Some(rules),
    })
}

/// Binds the component's Role to its ServiceAccount; `None` when it has no Role.
pub fn build_role_binding(tenant: &Tenant, ns: &str, component: Component) -> Option<RoleBinding> {
    build_role(tenant, ns, component, &[])?;
    let name = component.workload_name();
    Some(RoleBinding {
        metadata: meta(tenant, &name, ns, &tenant.name_any(), component.as_str()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(ns.into()),
            ..Subject::default()
        }]),
    })
}

/// The tenant signing Secret; `key` is the existing value when there is one (never rotated
/// by a reconcile), or a fresh random key.
pub fn build_signing_secret(tenant: &Tenant, ns: &str, key: &[u8]) -> Secret {
    Secret {
        metadata: meta(tenant, SIGNING_SECRET, ns, &tenant.name_any(), "tenant"),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SIGNING_KEY.into(),
            ByteString(key.to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Where the workloads read `DATABASE_URL`: the team's own Secret, or the one the operator
/// writes for a platform-managed database.
pub fn database_url_ref(tenant: &Tenant) -> xin_api::SecretKeyRef {
    tenant
        .spec
        .database
        .url_secret_ref
        .clone()
        .unwrap_or_else(|| xin_api::SecretKeyRef {
            name: DATABASE_SECRET.into(),
            key: DATABASE_URL_KEY.into(),
        })
}

/// `DATABASE_URL` from [`database_url_ref`].
pub fn database_url_env(tenant: &Tenant) -> k8s_openapi::api::core::v1::EnvVar {
    let r = database_url_ref(tenant);
    env_secret("DATABASE_URL", &r.name, &r.key)
}

/// The runtime URL of a platform-managed database, and the rotation request it answers.
pub fn build_database_secret(
    tenant: &Tenant,
    ns: &str,
    url: &str,
    rotation_handled: Option<&str>,
) -> Secret {
    let mut metadata = meta(tenant, DATABASE_SECRET, ns, &tenant.name_any(), "tenant");
    if let Some(h) = rotation_handled {
        metadata
            .annotations
            .get_or_insert_default()
            .insert(DATABASE_ROTATION_HANDLED.into(), h.into());
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            DATABASE_URL_KEY.into(),
            ByteString(url.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The orchestrator's environment (names as in docs/operator.md).
pub fn orchestrator_env(
    tenant: &Tenant,
    ns: &str,
    config: &Config,
) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let s = &tenant.spec;
    let mut out = vec![
        env("XIN_TENANT", tenant.name_any()),
        env("XIN_NAMESPACE", ns),
        env("TENANT_TIME_ZONE", s.time_zone.clone()),
        env("ORCHESTRATOR_HTTP_PORT", HTTP_PORT.to_string()),
        env("ORCHESTRATOR_METRICS_HOST", "0.0.0.0"),
        env(
            "ORCHESTRATOR_METRICS_PORT",
            Component::Orchestrator.metrics_port().to_string(),
        ),
        database_url_env(tenant),
        env_secret("TENANT_SIGNING_KEY", SIGNING_SECRET, SIGNING_KEY),
        env(
            "RETRIEVAL_HYBRID_WEIGHT",
            s.retrieval.hybrid_weight.to_string(),
        ),
        env("RETRIEVAL_MIN_SCORE", s.retrieval.min_score.to_string()),
        env(
            "RETRIEVAL_MAX_DOCUMENTS",
            s.retrieval.max_documents.to_string(),
        ),
        env(
            "RETRIEVAL_CONTEXT_BUDGET_TOKENS",
            s.retrieval.context_budget_tokens.to_string(),
        ),
    ];
    if let Some(llm) = &s.llm {
        out.push(env("LLM_ENDPOINT", llm.endpoint.clone()));
        out.push(env("LLM_MODEL", llm.model.clone()));
        if let Some(f) = &llm.fallback_model {
            out.push(env("LLM_FALLBACK_MODEL", f.clone()));
        }
        out.push(env("LLM_TIMEOUT_SECONDS", llm.timeout_seconds.to_string()));
        if let Some(k) = &llm.api_key_secret_ref {
            out.push(env_secret("LLM_API_KEY", &k.name, &k.key));
        }
    }
    out.extend(embedding_env(tenant));
    if s.embeddings.is_some() {
        out.push(env("RETRIEVAL_INDEX_DIR", INDEX_DIR));
    }
    out.extend(otel_env(config));
    out.extend(outbound_env(config));
    out
}

/// Where the orchestrator saves its embedding index: an `emptyDir`, so a restarted container
/// restores the index instead of reading every embedding again.
pub const INDEX_DIR: &str = "/var/lib/xin/index";
/// The `emptyDir`'s limit: the saved index is about 0.6 GB at a million 384-d chunks and is
/// written beside the previous one before replacing it.
pub const INDEX_VOLUME_LIMIT: &str = "4Gi";

/// The orchestrator's index volume and its mount, when the Tenant has embeddings.
pub fn orchestrator_index_volume(
    tenant: &Tenant,
) -> Option<(
    k8s_openapi::api::core::v1::Volume,
    k8s_openapi::api::core::v1::VolumeMount,
)> {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume, VolumeMount};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    tenant.spec.embeddings.as_ref()?;
    Some((
        Volume {
            name: "index".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(INDEX_VOLUME_LIMIT.into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "index".into(),
            mount_path: INDEX_DIR.into(),
            ..VolumeMount::default()
        },
    ))
}

/// `EMBEDDING_*` from the Tenant's embeddings (the orchestrator's and the ingestion Job's:
/// questions and chunks must be embedded by the same model).
pub fn embedding_env(tenant: &Tenant) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let Some(e) = &tenant.spec.embeddings else {
        return vec![];
    };
    let mut out = vec![
        env("EMBEDDING_ENDPOINT", e.endpoint.clone()),
        env("EMBEDDING_MODEL", e.model.clone()),
    ];
    if let Some(d) = e.dimensions {
        out.push(env("EMBEDDING_DIMENSIONS", d.to_string()));
    }
    if let Some(k) = &e.api_key_secret_ref {
        out.push(env_secret("EMBEDDING_API_KEY", &k.name, &k.key));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use xin_api::tenant::*;

    pub fn tenant(name: &str) -> Tenant {
        let mut t = Tenant::new(
            name,
            serde_json::from_value(serde_json::json!({
                "displayName": "Acme",
                "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            }))
            .unwrap(),
        );
        t.metadata.uid = Some("uid-1".into());
        t
    }

    #[test]
    fn spec_defaults_are_applied() {
        let t = tenant("acme");
        assert_eq!(t.spec.time_zone, "UTC");
        assert_eq!(t.spec.plan, Plan::Starter);
        assert_eq!(t.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(t.spec.orchestrator.min_replicas, 1);
        assert_eq!(t.spec.retrieval.max_documents, 5);
    }

    #[test]
    fn quota_follows_the_plan() {
        let mut t = tenant("acme");
        let hard = |t: &Tenant| {
            build_resource_quota(t, "xin-acme")
                .spec
                .unwrap()
                .hard
                .unwrap()
        };
        assert_eq!(hard(&t)["pods"].0, "20");
        t.spec.plan = Plan::Enterprise;
        assert_eq!(hard(&t)["pods"].0, "200");
        assert_eq!(hard(&t)["limits.memory"].0, "128Gi");
    }

    #[test]
    fn children_are_owned_and_labelled() {
        let t = tenant("acme");
        let q = build_resource_quota(&t, "xin-acme");
        let owner = &q.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Tenant", "uid-1", Some(true))
        );
        assert_eq!(q.metadata.labels.as_ref().unwrap()[TENANT_LABEL], "acme");
        // The namespace is not owned: deletionPolicy decides whether it goes.
        let ns = build_namespace(&t, "xin-acme");
        assert!(ns.metadata.owner_references.is_none());
        assert_eq!(
            ns.metadata.annotations.unwrap()[TENANT_UID_ANNOTATION],
            "uid-1"
        );
    }

    #[test]
    fn only_workers_get_api_access() {
        let t = tenant("acme");
        let auto = build_role(&t, "xin-acme", Component::Automation, &["hooks".into()])
            .unwrap()
            .rules
            .unwrap();
        // Secrets: `get` by name only, the ones the rules reference.
        assert!(
            auto.iter()
                .any(|r| r.resources.as_ref().unwrap() == &["secrets"]
                    && r.verbs == ["get"]
                    && r.resource_names.as_deref() == Some(&["hooks".to_string()][..]))
        );
        let no_refs = build_role(&t, "xin-acme", Component::Automation, &[]).unwrap();
        assert!(
            !no_refs
                .rules
                .unwrap()
                .iter()
                .any(|r| r.resources.as_ref().unwrap() == &["secrets"])
        );
        assert!(auto.iter().any(
            |r| r.resources.as_ref().unwrap() == &["automationrules/status"]
                && r.verbs == ["patch"]
        ));
        assert!(build_role(&t, "xin-acme", Component::Gateway, &["x".into()]).is_none());
        assert!(build_role_binding(&t, "xin-acme", Component::Orchestrator).is_none());
        assert!(auto.iter().all(|r| {
            !r.verbs
                .iter()
                .any(|v| v == "delete" || v == "create" || v == "update")
        }));
        assert_eq!(
            build_service_account(&t, "xin-acme", Component::Orchestrator)
                .automount_service_account_token,
            Some(false)
        );
        assert_eq!(
            build_service_account(&t, "xin-acme", Component::Automation)
                .automount_service_account_token,
            Some(true)
        );
    }

    #[test]
    fn orchestrator_env_references_secrets_not_values() {
        let mut t = tenant("acme");
        t.spec.llm = Some(LlmSpec {
            endpoint: "http://llm.example".into(),
            model: "m".into(),
            fallback_model: Some("f".into()),
            timeout_seconds: 5,
            api_key_secret_ref: Some(xin_api::SecretKeyRef {
                name: "llm".into(),
                key: "apiKey".into(),
            }),
        });
        let env = orchestrator_env(&t, "xin-acme", &Config::for_tests());
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("LLM_FALLBACK_MODEL").value.as_deref(), Some("f"));
        let key = get("LLM_API_KEY");
        assert!(key.value.is_none());
        assert_eq!(
            key.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "llm"
        );
        assert!(get("DATABASE_URL").value.is_none());
    }

    #[test]
    fn with_embeddings_the_orchestrator_saves_its_index_on_an_empty_dir() {
        let mut t = tenant("acme");
        let cfg = Config::for_tests();
        let has_dir = |t: &Tenant| {
            orchestrator_env(t, "xin-acme", &cfg)
                .iter()
                .any(|e| e.name == "RETRIEVAL_INDEX_DIR" && e.value.as_deref() == Some(INDEX_DIR))
        };
        assert!(orchestrator_index_volume(&t).is_none());
        assert!(!has_dir(&t), "no embeddings, no index, no volume");
        t.spec.embeddings = Some(xin_api::tenant::EmbeddingSpec {
            endpoint: "http://embed.example".into(),
            model: "m".into(),
            dimensions: None,
            api_key_secret_ref: None,
        });
        let (volume, mount) = orchestrator_index_volume(&t).unwrap();
        assert!(has_dir(&t));
        assert_eq!(
            (volume.name.as_str(), mount.name.as_str()),
            ("index", "index")
        );
        assert_eq!(mount.mount_path, INDEX_DIR);
        let dir = volume.empty_dir.unwrap();
        assert_eq!(dir.size_limit.unwrap().0, INDEX_VOLUME_LIMIT);
        assert_eq!(dir.medium, None, "on the node's disk, not in memory");
    }

    #[test]
    fn otel_headers_come_from_the_tenants_own_secret_never_a_copy() {
        let mut cfg = Config::for_tests();
        cfg.otel_exporter_endpoint = Some("http://otel:4318".into());
        cfg.otel_tenant_headers_secret = Some("otel-credentials".into());
        let env = orchestrator_env(&tenant("acme"), "xin-acme", &cfg);
        let h = env
            .iter()
            .find(|e| e.name == "OTEL_EXPORTER_HEADERS")
            .unwrap();
        assert!(h.value.is_none(), "headers must not be a plain value");
        assert_eq!(
            h.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "otel-credentials"
        );
        let r = h
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((r.key.as_str(), r.optional), (OTEL_HEADERS_KEY, Some(true)));
        assert_eq!(
            env.iter()
                .find(|e| e.name == "OTEL_EXPORTER_ENDPOINT")
                .unwrap()
                .value
                .as_deref(),
            Some("http://otel:4318")
        );
        // Without a Secret name, endpoint only.
        cfg.otel_tenant_headers_secret = None;
        let env = orchestrator_env(&tenant("acme"), "xin-acme", &cfg);
        assert!(!env.iter().any(|e| e.name == "OTEL_EXPORTER_HEADERS"));
    }

    #[test]
    fn suspended_deployment_has_zero_replicas_and_active_one_leaves_replicas_to_the_hpa() {
        let t = tenant("acme");
        let parts = |replicas| WorkloadParts {
            component: Component::Orchestrator,
            image: "img".into(),
            env: vec![],
            resources: None,
            config_hash: "h".into(),
            volumes: vec![],
            mounts: vec![],
            replicas,
            probe_path: Some("/ready"),
        };
        let cfg = Config::for_tests();
        let active = build_workload_deployment(&t, "xin-acme", &cfg, parts(None));
        assert_eq!(active.spec.replicas, None);
        let json = serde_json::to_value(&active).unwrap();
        assert!(
            json["spec"].get("replicas").is_none(),
            "replicas must be absent from the applied object"
        );
        let suspended = build_workload_deployment(&t, "xin-acme", &cfg, parts(Some(0)));
        assert_eq!(suspended.spec.replicas, Some(0));
    }
}
