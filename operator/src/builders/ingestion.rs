//! What an IngestionJob becomes: one `batch/v1` Job running the ingestion worker. The Job is
//! never changed after creation (the IngestionJob's spec is immutable).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use xin_api::ingestion::IngestionJob;
use xin_api::tenant::Tenant;

use super::workload::restricted_security;
use super::*;
use crate::component::Component;

/// Where the headers Secret of a URL source is mounted (one file per header).
pub const HEADERS_DIR: &str = "/var/run/xin/ingest-headers";

/// `INGEST_SPEC` is rendered up to this size; a larger spec is read from the API server.
pub const MAX_SPEC_ENV_BYTES: usize = 32 << 10;

/// Name of the Job of an IngestionJob: `ingest-<name>`, shortened with a hash when that would
/// exceed 63 characters (Job names become pod label values).
pub fn job_name(ij_name: &str) -> String {
    let name = format!("ingest-{ij_name}");
    if name.len() <= 63 {
        return name;
    }
    let h = hash_parts([ij_name.as_bytes()]);
    format!("{}-{}", &name[..52].trim_end_matches('-'), &h[..10])
}

pub fn build_ingestion_job(
    ij: &IngestionJob,
    tenant: &Tenant,
    config: &Config,
) -> Result<Job, serde_json::Error> {
    let ns = ij.namespace().unwrap_or_default();
    let t = tenant.name_any();
    let spec = serde_json::to_string(&ij.spec)?;
    let mut env = vec![
        env("XIN_TENANT", t.clone()),
        env("XIN_NAMESPACE", ns.clone()),
        env("INGEST_JOB_NAME", ij.name_any()),
        // The worker reports to this IngestionJob only, not to one re-created with its name.
        env("INGEST_JOB_UID", ij.uid().unwrap_or_default()),
        env("INGEST_METRICS_HOST", "0.0.0.0"),
        env(
            "INGEST_METRICS_PORT",
            Component::Ingestion.metrics_port().to_string(),
        ),
        crate::builders::tenant::database_url_env(tenant),
    ];
    // A process refuses an environment string over 128 KiB; a large spec (a thousand long URLs)
    // is read by the worker from its IngestionJob instead.
    if spec.len() <= MAX_SPEC_ENV_BYTES {
        env.insert(4, self::env("INGEST_SPEC", spec));
    }
    // Chunks are embedded with the model the orchestrator embeds questions with.
    env.extend(crate::builders::tenant::embedding_env(tenant));
    let mut volumes = vec![];
    let mut mounts = vec![];
    if let Some(s3) = &ij.spec.source.s3 {
        let secret = &s3.credentials_secret_ref.name;
        env.push(env_secret("INGEST_S3_ACCESS_KEY_ID", secret, "accessKeyId"));
        env.push(env_secret(
            "INGEST_S3_SECRET_ACCESS_KEY",
            secret,
            "secretAccessKey",
        ));
    }
    if let Some(r) = ij
        .spec
        .source
        .url
        .as_ref()
        .and_then(|u| u.headers_secret_ref.as_ref())
    {
        // Header names are not variable names: one file per key, read at start.
        volumes.push(Volume {
            name: "headers".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "headers".into(),
            mount_path: HEADERS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        env.push(self::env("INGEST_HEADERS_DIR", HEADERS_DIR));
    }
    env.extend(otel_env(config));
    env.extend(outbound_env(config));
    let (mut pod_sec, container_sec) = restricted_security();
    if !volumes.is_empty() {
        // The headers Secret's files are group-readable by the pod's group (the worker's uid
        // is not root, the files' owner).
        pod_sec.fs_group = pod_sec.run_as_user;
    }
    let c = Component::Ingestion;
    // Like every workload's pod template, the Job's carries a digest of its configuration.
    let env_json = serde_json::to_vec(&env)?;
    let config_hash = hash_parts([env_json.as_slice()]);
    let mut pod_labels = c.labels(&t);
    // Label values are at most 63 characters: the shortened Job name, not the object's name.
    pod_labels.insert("xin.dev/ingestion-job".into(), job_name(&ij.name_any()));
    Ok(Job {
        metadata: ObjectMeta {
            labels: Some(pod_labels.clone()),
            ..meta(ij, &job_name(&ij.name_any()), &ns, &t, c.as_str())
        },
        spec: Some(JobSpec {
            backoff_limit: Some(ij.spec.backoff_limit),
            ttl_seconds_after_finished: ij.spec.ttl_seconds_after_finished,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.into(),
                        config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(c.workload_name()),
                    security_context: Some(pod_sec),
                    containers: vec![Container {
                        name: c.as_str().into(),
                        image: Some(config.ingest_image.clone()),
                        image_pull_policy: Some(config.image_pull_policy.clone()),
                        env: Some(env),
                        // Named, so the chart's PodMonitor scrapes the run while it lasts.
                        ports: Some(vec![ContainerPort {
                            name: Some("metrics".into()),
                            container_port: c.metrics_port(),
                            protocol: Some("TCP".into()),
                            ..ContainerPort::default()
                        }]),
                        security_context: Some(container_sec),
                        volume_mounts: (!mounts.is_empty()).then_some(mounts),
                        ..Container::default()
                    }],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::tenant::tests::tenant;

    fn ij(name: &str) -> IngestionJob {
        let mut ij = IngestionJob::new(
            name,
            serde_json::from_value(
                serde_json::json!({"source": {"configMap": {"name": "faq"}}, "tags": ["faq"]}),
            )
            .unwrap(),
        );
        ij.metadata.namespace = Some("xin-acme".into());
        ij.metadata.uid = Some("ij-uid".into());
        ij
    }

    #[test]
    fn sources_and_embeddings_reach_the_job_as_secret_references_never_values() {
        let mut j = ij("kb");
        j.spec.source = serde_json::from_value(serde_json::json!({
            "url": {"urls": ["https://docs.example.com/a.md"], "headersSecretRef": {"name": "kb-headers"}}
        }))
        .unwrap();
        let mut t = tenant("acme");
        t.spec.embeddings = Some(
            serde_json::from_value(serde_json::json!({
                "endpoint": "https://embed.example.com", "model": "e5", "dimensions": 384,
                "apiKeySecretRef": {"name": "embed", "key": "key"}}))
            .unwrap(),
        );
        let job = build_ingestion_job(&j, &t, &Config::for_tests()).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let env = c.env.as_ref().unwrap();
        let find = |n: &str| env.iter().find(|e| e.name == n).cloned();
        assert_eq!(
            find("EMBEDDING_MODEL").unwrap().value.as_deref(),
            Some("e5")
        );
        assert_eq!(
            find("EMBEDDING_DIMENSIONS").unwrap().value.as_deref(),
            Some("384")
        );
        let key = find("EMBEDDING_API_KEY").unwrap();
        assert!(key.value.is_none());
        assert_eq!(
            key.value_from.unwrap().secret_key_ref.unwrap().name,
            "embed"
        );
        assert_eq!(
            find("INGEST_HEADERS_DIR").unwrap().value.as_deref(),
            Some(HEADERS_DIR)
        );
        let vol = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(
            vol.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("kb-headers")
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        // The orchestrator embeds questions with the same settings.
        let orch = crate::builders::tenant::orchestrator_env(&t, "xin-acme", &Config::for_tests());
        for n in [
            "EMBEDDING_ENDPOINT",
            "EMBEDDING_MODEL",
            "EMBEDDING_DIMENSIONS",
            "EMBEDDING_API_KEY",
        ] {
            assert_eq!(
                orch.iter().find(|e| e.name == n),
                find(n).as_ref(),
                "{n} differs between the orchestrator and the ingestion Job"
            );
        }

        let mut s3 = ij("bucket");
        s3.spec.source = serde_json::from_value(serde_json::json!({
            "s3": {"endpoint": "https://s3.example.com", "bucket": "docs", "credentialsSecretRef": {"name": "s3"}}
        }))
        .unwrap();
        let job = build_ingestion_job(&s3, &tenant("acme"), &Config::for_tests()).unwrap();
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        for (n, key) in [
            ("INGEST_S3_ACCESS_KEY_ID", "accessKeyId"),
            ("INGEST_S3_SECRET_ACCESS_KEY", "secretAccessKey"),
        ] {
            let e = env.iter().find(|e| e.name == n).unwrap();
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!((r.name.as_str(), r.key.as_str()), ("s3", key));
        }
        assert!(!env.iter().any(|e| e.name.starts_with("EMBEDDING_")));
    }

    #[test]
    fn a_spec_too_large_for_the_environment_is_left_to_the_api_server() {
        let mut big = ij("big");
        let urls: Vec<String> = (0..1000)
            .map(|i| format!("https://docs.example.com/{i}/{}", "x".repeat(100)))
            .collect();
        big.spec.source =
            serde_json::from_value(serde_json::json!({"url": {"urls": urls}})).unwrap();
        let job = build_ingestion_job(&big, &tenant("acme"), &Config::for_tests()).unwrap();
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(!env.iter().any(|e| e.name == "INGEST_SPEC"));
        assert!(env.iter().all(|e| {
            e.value
                .as_ref()
                .is_none_or(|v| v.len() < MAX_SPEC_ENV_BYTES)
        }));
        let small = build_ingestion_job(&ij("faq"), &tenant("acme"), &Config::for_tests()).unwrap();
        let env = small.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(env.iter().any(|e| e.name == "INGEST_SPEC"));
    }

    #[test]
    fn job_names_fit_in_a_label() {
        assert_eq!(job_name("faq"), "ingest-faq");
        let long = job_name(&"x".repeat(80));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(job_name(&"x".repeat(80)), job_name(&"x".repeat(81)));
    }

    #[test]
    fn job_runs_the_ingest_image_with_its_spec_and_metrics_port() {
        let job = build_ingestion_job(&ij("faq"), &tenant("acme"), &Config::for_tests()).unwrap();
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].kind,
            "IngestionJob"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/xin-dev/xin-ingest:0.1.0"));
        let env = c.env.as_ref().unwrap();
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(get("INGEST_METRICS_PORT").as_deref(), Some("9103"));
        assert_eq!(get("INGEST_METRICS_HOST").as_deref(), Some("0.0.0.0"));
        // The port the chart's PodMonitor scrapes, by name.
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9103)
        );
        let spec_json: serde_json::Value =
            serde_json::from_str(&get("INGEST_SPEC").unwrap()).unwrap();
        assert_eq!(spec_json["source"]["configMap"]["name"], "faq");
    }
}
