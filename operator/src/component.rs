//! The four workload components a Tenant runs, with everything that differs between them:
//! names, ports, labels and API rights. Every `match` on a component is exhaustive, so a new
//! component cannot silently inherit another one's rights.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::builders::{COMPONENT_LABEL, MANAGED_BY, TENANT_LABEL};

/// The HTTP port of every workload container (the Services map `http` to it).
pub const HTTP_PORT: i32 = 8080;

/// A workload binary of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `xin-gateway`: provider webhooks and the web widget; exists while Channels do.
    Gateway,
    /// `xin-orchestrator`: conversations, retrieval and answers; always runs.
    Orchestrator,
    /// `xin-ingest`: one Job per IngestionJob.
    Ingestion,
    /// `xin-automation`: exists while AutomationRules do.
    Automation,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Gateway,
        Component::Orchestrator,
        Component::Ingestion,
        Component::Automation,
    ];

    /// The value of the `app.kubernetes.io/component` label and the container's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Orchestrator => "orchestrator",
            Component::Ingestion => "ingest",
            Component::Automation => "automation",
        }
    }

    /// Name of the component's objects in the tenant namespace (`xin-gateway`, ...).
    pub fn workload_name(self) -> String {
        format!("xin-{}", self.as_str())
    }

    /// The port of its Prometheus `/metrics` endpoint.
    pub const fn metrics_port(self) -> i32 {
        match self {
            Component::Orchestrator => 9101,
            Component::Gateway => 9102,
            Component::Ingestion => 9103,
            Component::Automation => 9104,
        }
    }

    /// Prefix of its `<PREFIX>_METRICS_HOST` / `<PREFIX>_METRICS_PORT` variables.
    pub const fn env_prefix(self) -> &'static str {
        match self {
            Component::Gateway => "GATEWAY",
            Component::Orchestrator => "ORCHESTRATOR",
            Component::Ingestion => "INGEST",
            Component::Automation => "AUTOMATION",
        }
    }

    /// What its ServiceAccount may do through the API server; empty for the components that
    /// never talk to it (they get no token mounted either).
    pub fn role_rules(self) -> Vec<PolicyRule> {
        let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![group.into()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..PolicyRule::default()
        };
        match self {
            Component::Gateway | Component::Orchestrator => vec![],
            // Reads the rules and reports runs in their status.
            Component::Automation => vec![
                rule("xin.dev", &["automationrules"], &["get", "list", "watch"]),
                rule("xin.dev", &["automationrules/status"], &["patch"]),
            ],
            // Reads its IngestionJob and the ConfigMaps it names, reports progress in its status.
            Component::Ingestion => vec![
                rule("xin.dev", &["ingestionjobs"], &["get", "list", "watch"]),
                rule("xin.dev", &["ingestionjobs/status"], &["patch"]),
                rule("", &["configmaps"], &["get"]),
            ],
        }
    }

    /// Whether its pods get a ServiceAccount token.
    pub fn talks_to_api(self) -> bool {
        !self.role_rules().is_empty()
    }

    /// Labels of the component's objects for `tenant`.
    pub fn labels(self, tenant: &str) -> BTreeMap<String, String> {
        crate::builders::labels(tenant, self.as_str())
    }

    /// Pod selector of its workload (a stable subset of [`Component::labels`]).
    pub fn selector(self, tenant: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (COMPONENT_LABEL.into(), self.as_str().into()),
            (TENANT_LABEL.into(), tenant.into()),
        ])
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The managed-by label selector every watch of the operator's children uses.
pub fn managed_by_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_names_are_distinct() {
        let mut ports: Vec<i32> = Component::ALL.iter().map(|c| c.metrics_port()).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports, [9101, 9102, 9103, 9104]);
        assert_eq!(Component::Ingestion.workload_name(), "xin-ingest");
    }

    #[test]
    fn only_the_workers_get_api_rights_and_never_write_verbs() {
        for c in Component::ALL {
            let rules = c.role_rules();
            assert_eq!(
                c.talks_to_api(),
                matches!(c, Component::Automation | Component::Ingestion)
            );
            for r in &rules {
                assert!(
                    r.verbs
                        .iter()
                        .all(|v| ["get", "list", "watch", "patch"].contains(&v.as_str())),
                    "{c}: {:?}",
                    r.verbs
                );
                if r.verbs.iter().any(|v| v == "patch") {
                    assert!(
                        r.resources.as_ref().unwrap()[0].ends_with("/status"),
                        "{c} may patch only a status"
                    );
                }
            }
        }
        // The automation worker gets no access to IngestionJobs or ConfigMaps, and vice versa.
        let names = |c: Component| -> Vec<String> {
            c.role_rules()
                .into_iter()
                .flat_map(|r| r.resources.unwrap_or_default())
                .collect()
        };
        assert!(
            names(Component::Automation)
                .iter()
                .all(|r| r.starts_with("automationrules"))
        );
        assert!(
            !names(Component::Ingestion)
                .iter()
                .any(|r| r.starts_with("automationrules"))
        );
    }
}
