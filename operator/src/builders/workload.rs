//! The workloads' objects: Deployment, Service, HPA and PDB of a component, with the
//! restricted security settings every container runs with.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use xin_api::tenant::Tenant;

use super::*;
use crate::component::{Component, HTTP_PORT};

/// Restricted-profile security settings for every workload container.
pub fn restricted_security() -> (PodSecurityContext, SecurityContext) {
    (
        PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        },
        SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        },
    )
}

/// Parts shared by the workload Deployments.
pub struct WorkloadParts {
    pub component: Component,
    pub image: String,
    pub env: Vec<k8s_openapi::api::core::v1::EnvVar>,
    pub resources: Option<ResourceRequirements>,
    pub config_hash: String,
    pub volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    pub mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
    /// `Some(0)` when suspended; `None` leaves `replicas` to the HPA.
    pub replicas: Option<i32>,
    pub probe_path: Option<&'static str>,
}

pub fn build_workload_deployment(
    tenant: &Tenant,
    ns: &str,
    config: &Config,
    parts: WorkloadParts,
) -> Deployment {
    let t = tenant.name_any();
    let c = parts.component;
    let name = c.workload_name();
    let (pod_sec, container_sec) = restricted_security();
    let probe = parts.probe_path.map(|path| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    });
    let mut pod_labels = c.labels(&t);
    pod_labels.extend(c.selector(&t));
    Deployment {
        metadata: meta(tenant, &name, ns, &t, c.as_str()),
        spec: DeploymentSpec {
            replicas: parts.replicas,
            selector: LabelSelector {
                match_labels: Some(c.selector(&t)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.into(),
                        parts.config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    automount_service_account_token: Some(c.talks_to_api()),
                    security_context: Some(pod_sec),
                    containers: vec![Container {
                        name: c.as_str().into(),
                        image: Some(parts.image),
                        image_pull_policy: Some(config.image_pull_policy.clone()),
                        env: Some(parts.env),
                        ports: Some(
                            ports(c)
                                .into_iter()
                                .map(|(n, p)| ContainerPort {
                                    name: Some(n.into()),
                                    container_port: p,
                                    protocol: Some("TCP".into()),
                                    ..ContainerPort::default()
                                })
                                .collect(),
                        ),
                        resources: parts.resources,
                        readiness_probe: probe.clone(),
                        liveness_probe: probe.map(|mut p| {
                            p.http_get.as_mut().expect("built above").path = Some("/health".into());
                            p
                        }),
                        security_context: Some(container_sec),
                        volume_mounts: (!parts.mounts.is_empty()).then_some(parts.mounts),
                        ..Container::default()
                    }],
                    volumes: (!parts.volumes.is_empty()).then_some(parts.volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The named ports of a workload: `http` and `metrics`.
fn ports(c: Component) -> [(&'static str, i32); 2] {
    [("http", HTTP_PORT), ("metrics", c.metrics_port())]
}

pub fn build_service(tenant: &Tenant, ns: &str, component: Component) -> Service {
    let t = tenant.name_any();
    Service {
        metadata: meta(
            tenant,
            &component.workload_name(),
            ns,
            &t,
            component.as_str(),
        ),
        spec: Some(ServiceSpec {
            selector: Some(component.selector(&t)),
            ports: Some(
                ports(component)
                    .into_iter()
                    .map(|(n, p)| ServicePort {
                        name: Some(n.into()),
                        port: p,
                        target_port: Some(IntOrString::String(n.into())),
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn build_hpa(
    tenant: &Tenant,
    ns: &str,
    component: Component,
    min: i32,
    max: i32,
) -> HorizontalPodAutoscaler {
    let name = component.workload_name();
    HorizontalPodAutoscaler {
        metadata: meta(tenant, &name, ns, &tenant.name_any(), component.as_str()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(min),
            max_replicas: max.max(min),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(70),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    }
}

pub fn build_pdb(tenant: &Tenant, ns: &str, component: Component) -> PodDisruptionBudget {
    let t = tenant.name_any();
    PodDisruptionBudget {
        metadata: meta(
            tenant,
            &component.workload_name(),
            ns,
            &t,
            component.as_str(),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(component.selector(&t)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
