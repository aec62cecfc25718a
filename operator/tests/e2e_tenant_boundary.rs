//! The tenant boundary through the operator, against the local control plane and a real
//! PostgreSQL: decommission reaches the data (`Delete` drops the database and roles, `Retain`
//! disables the runtime login), a re-created Tenant of the same name starts empty, a
//! pre-existing namespace is adopted only when annotated, an empty credential is refused, and a
//! team's own database is accepted only with a runtime role that has data rights only.

mod common;

use std::sync::OnceLock;

use common::*;
use sqlx::Connection;
use xin_store::provision::{Admin, TenantDatabase};

/// One operator process serves every test of this file (two would fight over the objects).
fn operator() -> &'static OperatorProcess {
    static OP: OnceLock<OperatorProcess> = OnceLock::new();
    OP.get_or_init(|| OperatorProcess::start(OPERATOR, &[]))
}

fn admin() -> Admin {
    Admin::new(&xin_store::test_admin_url()).unwrap()
}

fn names_of(tenant: &serde_json::Value) -> TenantDatabase {
    TenantDatabase::for_uid(str_at(tenant, "/metadata/uid")).unwrap()
}

/// The runtime URL the operator wrote for Tenant namespace `ns`.
fn runtime_url(ns: &str) -> String {
    secret_value(ns, "xin-database", "url").expect("Secret xin-database")
}

fn delete_and_wait(name: &str) {
    kubectl_ok(&["delete", "tenant", name, "--wait=false"]);
    wait_tenant_gone(name).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_drops_the_database_and_roles() {
    operator();
    let t = TestTenant::create("dropdb", "");
    let tenant = ready("tenant", &t.name, "");
    let names = names_of(&tenant);
    assert_eq!(admin().state(&names).await.unwrap(), (true, true));
    // The runtime role works, and sees a schema at the version the binaries need.
    let pool = xin_store::connect(&runtime_url(&t.ns), 1).await.unwrap();
    xin_store::check_schema(&pool).await.unwrap();
    xin_store::check_runtime_role(&pool).await.unwrap();
    pool.close().await;

    delete_and_wait(&t.name);
    assert_eq!(
        admin().state(&names).await.unwrap(),
        (false, false),
        "database {} and its roles dropped",
        names.database
    );
}

/// The orchestrator's configuration hash (the pods roll when it changes).
fn orchestrator_hash(ns: &str) -> String {
    get_json(&["deployment", "xin-orchestrator", "-n", ns])
        .map(|d| {
            str_at(
                &d,
                "/spec/template/metadata/annotations/xin.dev~1config-hash",
            )
            .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_request_gives_a_new_password_rolls_the_pods_and_refuses_the_old_one() {
    operator();
    let t = TestTenant::create("rotdb", "");
    ready("tenant", &t.name, "");
    let old_url = runtime_url(&t.ns);
    let old_hash = orchestrator_hash(&t.ns);
    assert!(!old_hash.is_empty());
    kubectl_ok(&[
        "annotate",
        "tenant",
        &t.name,
        "xin.dev/rotate-database-password=first",
    ]);
    // Never shown in a failure: the URL carries the password.
    let new_url = wait_until(
        "a new runtime URL in xin-database",
        2 * MINUTE,
        || match secret_value(&t.ns, "xin-database", "url") {
            Some(u) if u != old_url => Ok(u),
            Some(_) => Err("the same URL".into()),
            None => Err("no Secret".into()),
        },
    );
    wait_until("the orchestrator's pods to roll", 2 * MINUTE, || {
        let h = orchestrator_hash(&t.ns);
        if h != old_hash { Ok(()) } else { Err(h) }
    });
    let e = sqlx::PgConnection::connect(&old_url).await.unwrap_err();
    assert!(
        e.to_string().contains("password authentication failed"),
        "the old password is refused"
    );
    let mut c = sqlx::PgConnection::connect(&new_url)
        .await
        .expect("the new URL connects");
    sqlx::query("SELECT 1").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    // Acted on once: the handled value is recorded beside the password, and an Event says so.
    let secret = get_json(&["secret", "xin-database", "-n", &t.ns]).unwrap();
    assert_eq!(
        str_at(&secret, "/metadata/annotations/xin.dev~1rotation-handled"),
        "first"
    );
    wait_until("a DatabasePasswordRotated Event", MINUTE, || {
        let events = events_for("default", &t.name);
        if events.iter().any(|(r, _)| r == "DatabasePasswordRotated") {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    });
    // A reconcile that finds the request handled rotates nothing more: the Tenant's next
    // status write (observed after a spec change) leaves the URL as it is.
    patch_tenant(&t.name, r#"{"spec":{"displayName":"rotated once"}}"#);
    wait_until("the Tenant to observe its new generation", MINUTE, || {
        let tenant = get_json(&["tenant", &t.name]).unwrap_or_default();
        let generation = tenant.pointer("/metadata/generation").cloned();
        let observed = tenant.pointer("/status/observedGeneration").cloned();
        if generation.is_some() && generation == observed {
            Ok(())
        } else {
            Err(format!("{generation:?} vs {observed:?}"))
        }
    });
    assert!(
        secret_value(&t.ns, "xin-database", "url").as_deref() == Some(new_url.as_str()),
        "no second rotation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_disables_the_login_and_a_tenant_recreated_with_the_name_starts_empty() {
    operator();
    let t = TestTenant::create("keepdb", "");
    patch_tenant(&t.name, r#"{"spec":{"deletionPolicy":"Retain"}}"#);
    let first = ready("tenant", &t.name, "");
    let old = names_of(&first);
    let old_url = runtime_url(&t.ns);
    let pool = xin_store::connect(&old_url, 1).await.unwrap();
    sqlx::query("INSERT INTO conversations (id, tenant, channel, external_user) VALUES ('c-old', 'x', 'web', 'previous-customer')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    delete_and_wait(&t.name);
    assert_eq!(
        admin().state(&old).await.unwrap(),
        (true, false),
        "the rows stay, the runtime login is disabled"
    );
    let e = sqlx::PgConnection::connect(&old_url).await.unwrap_err();
    assert!(e.to_string().contains("not permitted to log in"), "{e}");
    assert!(
        secret_value(&t.ns, "xin-database", "url").is_none(),
        "the runtime URL's Secret is deleted with the other tokens"
    );

    // Same name, new Tenant: the retained namespace is adopted only when annotated again, and
    // the new Tenant gets a new, empty database.
    apply(&format!(
        "apiVersion: xin.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {}}}\nspec:\n  displayName: again\n  deletionPolicy: Delete\n",
        t.name
    ));
    let c = wait_condition("tenant", &t.name, "", "Ready", "False", 2 * MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "NamespaceNotAdoptable");
    kubectl_ok(&[
        "annotate",
        "namespace",
        &t.ns,
        &format!("xin.dev/adopt={}", t.name),
    ]);
    let second = ready("tenant", &t.name, "");
    let new = names_of(&second);
    assert_ne!(new, old);
    let pool = xin_store::connect(&runtime_url(&t.ns), 1).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "none of the previous Tenant's rows");
    pool.close().await;
    drop(t);
    // The retained database stays until someone with the admin's rights removes it.
    admin().drop(&old).await.unwrap();
}

#[test]
fn a_namespace_someone_else_made_is_not_adopted_without_the_annotation() {
    operator();
    let name = unique_name("adopt");
    let ns = format!("xin-{name}");
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  displayName: x\n  deletionPolicy: Delete\n"
    ));
    let c = wait_condition("tenant", &name, "", "Ready", "False", 2 * MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "NamespaceNotAdoptable");
    assert!(
        condition_message(&c, "Ready").contains(&format!("xin.dev/adopt={name}")),
        "the message says how to allow it"
    );
    // Nothing was written into it.
    assert!(get_json(&["networkpolicy", "xin-default-deny", "-n", &ns]).is_none());
    kubectl_ok(&[
        "annotate",
        "namespace",
        &ns,
        &format!("xin.dev/adopt={name}"),
    ]);
    ready("tenant", &name, "");
    delete_tenant_and_wait(&name, &ns).unwrap();
}

#[test]
fn an_empty_credential_is_a_false_condition_not_an_empty_key() {
    operator();
    let t = TestTenant::create_with_objects(
        "emptykey",
        "  llm: {endpoint: 'https://llm.example.com', model: m, apiKeySecretRef: {name: llm, key: apiKey}}\n",
        |ns| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: llm, namespace: {ns}}}\nstringData: {{apiKey: '  '}}\n---\n"
            )
        },
    );
    let c = wait_condition("tenant", &t.name, "", "Ready", "False", 2 * MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "SecretValueEmpty");
    assert!(
        get_json(&["deployment", "xin-orchestrator", "-n", &t.ns]).is_none(),
        "no workload is built on an empty credential"
    );
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: llm, namespace: {}}}\nstringData: {{apiKey: sk-real}}\n",
        t.ns
    ));
    ready("tenant", &t.name, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teams_own_database_is_migrated_and_its_runtime_role_must_have_data_rights_only() {
    operator();
    let own = xin_store::TestDatabase::new().await;
    let owner_url = own
        .admin
        .owner_login(&own.names, &xin_store::provision::new_password())
        .await
        .unwrap();
    // First with the superuser as the "runtime" role: refused, saying why.
    let superuser = xin_store::test_admin_url();
    let t = TestTenant::create_with_objects(
        "byo",
        "  database: {urlSecretRef: {name: owndb, key: url}, ownerUrlSecretRef: {name: owndb, key: owner}}\n",
        |ns| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: owndb, namespace: {ns}}}\nstringData: {{url: '{superuser}', owner: '{owner_url}'}}\n---\n"
            )
        },
    );
    let c = wait_condition("tenant", &t.name, "", "Ready", "False", 2 * MINUTE);
    assert_eq!(condition_reason(&c, "Ready"), "DatabaseRoleTooPowerful");
    let message = condition_message(&c, "Ready");
    assert!(message.contains("is a superuser"), "{message}");
    assert!(
        !message.contains("xin-test-admin"),
        "no password: {message}"
    );

    // The real runtime role: accepted, and the workloads read the team's Secret.
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: owndb, namespace: {}}}\nstringData: {{url: '{}', owner: '{owner_url}'}}\n",
        t.ns, own.url
    ));
    let tenant = ready("tenant", &t.name, "");
    assert_eq!(str_at(&tenant, "/status/database/mode"), "External");
    assert_eq!(
        tenant
            .pointer("/status/database/schemaVersion")
            .and_then(|v| v.as_i64()),
        Some(xin_store::schema_version())
    );
    let env = xin_e2e::local::rendered_env(&t.ns, "xin-orchestrator").unwrap();
    assert!(env.contains(&("DATABASE_URL".into(), own.url.clone())));
    assert!(
        get_json(&["secret", "xin-database", "-n", &t.ns]).is_none(),
        "no platform database for a Tenant that brings its own"
    );
    drop(t);
    // A team's database is the team's: decommission leaves it.
    assert_eq!(own.admin.state(&own.names).await.unwrap(), (true, true));
    own.admin.drop(&own.names).await.unwrap();
}
