//! The tenant's automation worker: exists while at least one AutomationRule does. It watches
//! the rules itself (through its Role) and reports runs in their status.

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use xin_api::tenant::Tenant;

use super::workload::{WorkloadParts, build_workload_deployment};
use super::*;
use crate::component::{Component, HTTP_PORT};

pub fn build_automation_deployment(
    tenant: &Tenant,
    ns: &str,
    config: &Config,
    config_hash: String,
) -> Deployment {
    let s = &tenant.spec;
    let mut env = vec![
        env("XIN_TENANT", tenant.name_any()),
        env("XIN_NAMESPACE", ns),
        env("TENANT_TIME_ZONE", s.time_zone.clone()),
        env("AUTOMATION_HTTP_PORT", HTTP_PORT.to_string()),
        env("AUTOMATION_METRICS_HOST", "0.0.0.0"),
        env(
            "AUTOMATION_METRICS_PORT",
            Component::Automation.metrics_port().to_string(),
        ),
        crate::builders::tenant::database_url_env(tenant),
    ];
    env.extend(otel_env(config));
    env.extend(outbound_env(config));
    build_workload_deployment(
        tenant,
        ns,
        config,
        WorkloadParts {
            component: Component::Automation,
            image: config.automation_image.clone(),
            env,
            resources: None,
            config_hash,
            volumes: vec![],
            mounts: vec![],
            replicas: s.suspend.then_some(0),
            probe_path: Some("/ready"),
        },
    )
}
