//! Table tests of the Tenant's pure pipeline: a validated input in, the built children and the
//! status out, each compared with a committed golden file (`operator/tests/golden/tenant/`).

use super::database::DatabasePlan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use xin_api::channel::Channel;
use xin_api::routes::{ChannelRoute, Credentials, Routes, Time as RouteTime, WebhookKey};
use xin_api::tenant::Tenant;

use super::children::build_tenant_children;
use super::resolve::WorkloadInputs;
use super::status::{Availability, pass, wanted};
use super::validate::ValidatedTenant;
use crate::conditions::reason;
use crate::config::Config;
use crate::controllers::runner::Requeue;
use crate::error::Problem;
use crate::golden;

fn at(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn tenant() -> Tenant {
    let mut t = crate::builders::tenant::tests::tenant("acme");
    t.metadata.generation = Some(3);
    t
}

fn channel(name: &str, host: Option<&str>) -> Channel {
    let mut c: Channel = serde_json::from_value(serde_json::json!({
        "apiVersion": "xin.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": name, "namespace": "xin-acme", "uid": format!("uid-{name}")},
        "spec": {"type": "telegram", "displayName": name,
                 "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}}},
    }))
    .unwrap();
    if let Some(h) = host {
        c.spec.ingress = serde_json::from_value(serde_json::json!({"host": h})).unwrap();
    }
    c
}

fn route(name: &str, keys: Vec<WebhookKey>) -> ChannelRoute {
    ChannelRoute {
        keys,
        credentials: Credentials {
            bot_token: Some("1:abc".into()),
            ..Credentials::default()
        },
        ..crate::builders::gateway::tests::route(name)
    }
}

fn key(k: &str) -> WebhookKey {
    WebhookKey {
        key: k.into(),
        expires_at: None,
    }
}

fn inputs(routes: Vec<ChannelRoute>, channels: Vec<Channel>) -> WorkloadInputs {
    WorkloadInputs {
        db_url: b"postgres://acme@db/acme".to_vec(),
        database_plan: DatabasePlan::External {
            runtime_url: "postgres://acme@db/acme".into(),
            owner_url: "postgres://acme_owner@db/acme".into(),
        },
        database: None,
        llm_key: vec![],
        embedding_key: vec![],
        signing_key: b"signing-key-of-acme".to_vec(),
        routes: Routes {
            tenant: "acme".into(),
            channels: routes,
        },
        live_channels: channels,
        gateway_waits: false,
    }
}

fn validated(
    t: Tenant,
    channels: i32,
    rules: i32,
    w: Result<WorkloadInputs, Problem>,
) -> ValidatedTenant {
    ValidatedTenant {
        tenant: t,
        namespace: "xin-acme".into(),
        channels,
        rules,
        rule_secrets: vec![],
        workloads: w,
    }
}

fn all_up(v: &ValidatedTenant) -> Availability {
    wanted(v).into_iter().map(|c| (c, true)).collect()
}

/// Builds the children and the status of `v` and checks both against `tenant/<case>`.
fn case(
    name: &str,
    v: &ValidatedTenant,
    config: &Config,
    available: &Availability,
) -> runner::Outcome<xin_api::TenantStatus> {
    let children = build_tenant_children(v, config).unwrap();
    golden::check(&format!("tenant/{name}.children"), &children);
    let outcome = pass(v, available).outcome(&v.tenant, &at("2026-11-30T12:00:00Z"));
    golden::check(&format!("tenant/{name}.status"), &outcome);
    outcome
}

use crate::controllers::runner;

#[test]
fn a_tenant_without_channels_or_rules_runs_only_the_orchestrator() {
    let v = validated(tenant(), 0, 0, Ok(inputs(vec![], vec![])));
    let out = case("orchestrator-only", &v, &Config::for_tests(), &all_up(&v));
    let c = build_tenant_children(&v, &Config::for_tests()).unwrap();
    let w = c.workloads.unwrap();
    assert_eq!(w.deployments.len(), 1);
    assert!(w.ingresses.is_empty());
    assert_eq!(out.requeue, Requeue::Resync);
    assert!(!out.stalled);
}

#[test]
fn channels_and_rules_add_the_gateway_its_ingress_and_the_automation_worker() {
    let chans = vec![
        channel("bot", Some("bot.acme.example")),
        channel("web", None),
    ];
    let v = validated(
        tenant(),
        2,
        1,
        Ok(inputs(
            vec![
                route("bot", vec![key("k-bot")]),
                route("web", vec![key("k-web")]),
            ],
            chans,
        )),
    );
    case(
        "gateway-and-automation",
        &v,
        &Config::for_tests(),
        &all_up(&v),
    );
}

#[test]
fn the_first_gateway_waits_for_its_first_routable_channel() {
    let mut i = inputs(vec![], vec![channel("bot", None)]);
    i.gateway_waits = true;
    let v = validated(tenant(), 1, 0, Ok(i));
    let mut up = all_up(&v);
    up.insert(crate::component::Component::Gateway, false);
    let out = case("gateway-waits", &v, &Config::for_tests(), &up);
    assert_eq!(
        out.requeue,
        Requeue::After(std::time::Duration::from_secs(10))
    );
}

#[test]
fn a_rotation_renders_both_keys_until_the_previous_expires() {
    let previous = WebhookKey {
        key: "k-old".into(),
        expires_at: Some(RouteTime("2026-11-30T12:15:00Z".parse().unwrap())),
    };
    let v = validated(
        tenant(),
        1,
        0,
        Ok(inputs(
            vec![route("bot", vec![key("k-new"), previous])],
            vec![channel("bot", None)],
        )),
    );
    case("rotation", &v, &Config::for_tests(), &all_up(&v));
}

#[test]
fn suspend_scales_to_zero_without_hpas_and_resume_wakes_the_deployments() {
    let mut t = tenant();
    t.spec.suspend = true;
    let v = validated(
        t,
        1,
        1,
        Ok(inputs(
            vec![route("bot", vec![key("k")])],
            vec![channel("bot", None)],
        )),
    );
    let out = case("suspended", &v, &Config::for_tests(), &Availability::new());
    let w = build_tenant_children(&v, &Config::for_tests())
        .unwrap()
        .workloads
        .unwrap();
    assert!(w.hpas.is_empty() && w.wake.is_empty());
    assert!(w.deployments.iter().all(|d| d.spec.replicas == Some(0)));
    let ready = &out.status.unwrap().conditions;
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == reason::SUSPENDED)
    );

    let mut resumed = v.clone();
    resumed.tenant.spec.suspend = false;
    // Just resumed: the woken Deployments have no available replica yet.
    let waking: Availability = wanted(&resumed).into_iter().map(|c| (c, false)).collect();
    let out = case("resumed", &resumed, &Config::for_tests(), &waking);
    assert!(!out.stalled);
    let ready = &out.status.unwrap().conditions;
    assert!(
        ready.iter().any(|c| c.type_ == "Ready"
            && c.status == "False"
            && c.message.contains("waiting for")),
        "{ready:?}"
    );
    let w = build_tenant_children(&resumed, &Config::for_tests())
        .unwrap()
        .workloads
        .unwrap();
    assert_eq!(w.hpas.len(), 3);
    assert!(w.deployments.iter().all(|d| d.spec.replicas.is_none()));
    assert_eq!(
        w.wake,
        [
            ("xin-orchestrator".to_string(), 1),
            ("xin-gateway".to_string(), 1),
            ("xin-automation".to_string(), 1)
        ]
    );
}

#[test]
fn a_missing_secret_builds_the_guard_rails_only_and_stalls() {
    let problem = Problem {
        reason: reason::SECRET_NOT_FOUND,
        message: "Secret xin-acme/db not found".into(),
    };
    let v = validated(tenant(), 1, 0, Err(problem));
    let out = case(
        "missing-secret",
        &v,
        &Config::for_tests(),
        &Availability::new(),
    );
    assert!(
        build_tenant_children(&v, &Config::for_tests())
            .unwrap()
            .workloads
            .is_none()
    );
    assert!(out.stalled);
    let status = out.status.unwrap();
    assert_eq!(status.channels, 1);
    assert!(status.conditions.iter().any(|c| c.type_ == "Stalled"
        && c.status == "True"
        && c.reason == reason::SECRET_NOT_FOUND));
}

#[test]
fn workloads_not_yet_available_are_progressing() {
    let v = validated(tenant(), 0, 1, Ok(inputs(vec![], vec![])));
    let mut up = all_up(&v);
    up.insert(crate::component::Component::Automation, false);
    let out = pass(&v, &up).outcome(&v.tenant, &at("2026-11-30T12:00:00Z"));
    let status = out.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::PROGRESSING)
    );
    assert_eq!(
        ready.message,
        "waiting for xin-automation to become available"
    );
}

#[test]
fn otel_headers_are_read_from_the_tenants_secret_and_never_copied_into_it() {
    let mut cfg = Config::for_tests();
    cfg.otel_exporter_endpoint = Some("http://otel.example:4318".into());
    cfg.otel_tenant_headers_secret = Some("otel-credentials".into());
    let v = validated(tenant(), 0, 0, Ok(inputs(vec![], vec![])));
    case("otel", &v, &cfg, &all_up(&v));
    let w = build_tenant_children(&v, &cfg).unwrap().workloads.unwrap();
    let names: Vec<_> = w
        .secrets
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["xin-tenant-signing"],
        "the operator writes no OTLP Secret"
    );
}

#[test]
fn debug_output_of_a_pass_never_holds_a_secret_value() {
    let mut i = inputs(vec![route("tg", vec![key("webhook-key-value")])], vec![]);
    i.llm_key = b"llm-key-value".to_vec();
    let v = validated(tenant(), 1, 0, Ok(i));
    let children = build_tenant_children(&v, &Config::for_tests()).unwrap();
    let shown = format!("{v:?} {children:?}");
    for secret in [
        "signing-key-of-acme",
        "postgres://acme@db",
        "llm-key-value",
        "webhook-key-value",
        "1:abc",
    ] {
        assert!(!shown.contains(secret), "Debug shows {secret:?}");
    }
    // The Secrets are named, so a log line still says which.
    assert!(shown.contains("xin-tenant-signing"));
}

#[test]
fn an_unchanged_tenant_writes_no_status() {
    let v = validated(tenant(), 0, 0, Ok(inputs(vec![], vec![])));
    let first = pass(&v, &all_up(&v)).outcome(&v.tenant, &at("2026-11-30T12:00:00Z"));
    let mut t = v.tenant.clone();
    t.status = first.status;
    let v2 = ValidatedTenant {
        tenant: t.clone(),
        ..v
    };
    let again = pass(&v2, &all_up(&v2)).outcome(&t, &at("2026-11-30T12:05:00Z"));
    assert!(
        again.status.is_none(),
        "an identical status must not be patched"
    );
}

#[test]
fn a_channel_is_served_unless_its_controller_marked_it_stalled() {
    use super::resolve::routable;
    let with = |conds: serde_json::Value, observed: i64| {
        let mut c = channel("bot", None);
        c.metadata.generation = Some(2);
        c.status = serde_json::from_value(
            serde_json::json!({"observedGeneration": observed, "conditions": conds}),
        )
        .unwrap();
        c
    };
    let cond = |t: &str, s: &str| serde_json::json!({"type": t, "status": s, "reason": "R", "message": "", "lastTransitionTime": "2026-11-30T12:00:00Z"});
    // Not judged yet, or judged before an edit (status behind the generation): still served.
    assert!(routable(&channel("bot", None)));
    assert!(routable(&with(
        serde_json::json!([cond("Ready", "True"), cond("Stalled", "False")]),
        1
    )));
    // A failed request on the Channel's side is not a verdict on the channel.
    assert!(routable(&with(
        serde_json::json!([
            cond("Ready", "False"),
            cond("Reconciling", "True"),
            cond("Stalled", "False")
        ]),
        2
    )));
    assert!(!routable(&with(
        serde_json::json!([cond("Ready", "False"), cond("Stalled", "True")]),
        2
    )));
}

#[test]
fn a_platform_managed_database_gets_its_secret_and_the_workloads_read_it() {
    let mut t = tenant();
    t.spec.database = Default::default();
    let mut i = inputs(vec![], vec![]);
    let status = xin_api::tenant::TenantDatabaseStatus {
        mode: "Managed".into(),
        name: "db:5432/xin_0123".into(),
        schema_version: xin_store::schema_version(),
        url_secret_name: Some("xin-database".into()),
    };
    i.database = Some(super::database::Database {
        url: "postgres://xin_0123_app:pw@db:5432/xin_0123".into(),
        managed: Some((
            "postgres://xin_0123_app:pw@db:5432/xin_0123".into(),
            Some("2026-11-30".into()),
        )),
        status: status.clone(),
        rotated: true,
    });
    let v = validated(t, 0, 0, Ok(i));
    let out = case("managed-database", &v, &Config::for_tests(), &all_up(&v));
    let w = build_tenant_children(&v, &Config::for_tests())
        .unwrap()
        .workloads
        .unwrap();
    let secret = w
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("xin-database"))
        .expect("the runtime URL's Secret");
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["xin.dev/rotation-handled"],
        "2026-11-30"
    );
    let env = &w.deployments[0]
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env;
    let db = env
        .iter()
        .flatten()
        .find(|e| e.name == "DATABASE_URL")
        .unwrap();
    let from = db
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("xin-database", "url")
    );
    assert_eq!(out.status.unwrap().database, Some(status));
    assert_eq!(out.events.len(), 1, "the rotation is told as an Event");
}

#[test]
fn an_unreachable_database_is_retried_and_a_missing_one_is_the_users_to_fix() {
    for (reason, stalled) in [
        (crate::conditions::reason::DATABASE_UNAVAILABLE, false),
        (crate::conditions::reason::DATABASE_NOT_CONFIGURED, true),
    ] {
        let v = validated(
            tenant(),
            0,
            0,
            Err(Problem {
                reason,
                message: "x".into(),
            }),
        );
        let out = pass(&v, &all_up(&v)).outcome(&v.tenant, &at("2026-11-30T12:00:00Z"));
        assert_eq!(out.stalled, stalled, "{reason}");
        assert!(
            build_tenant_children(&v, &Config::for_tests())
                .unwrap()
                .workloads
                .is_none()
        );
    }
}
