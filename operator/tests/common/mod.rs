//! Shared by the operator's e2e suites: tenants made for one test, and waiting on conditions.
#![allow(dead_code)]

use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use xin_e2e::operator::{OperatorProcess, operators_running};
pub use xin_e2e::*;

pub const MINUTE: Duration = Duration::from_secs(60);
pub const OPERATOR: &str = env!("CARGO_BIN_EXE_xin-operator");

/// A Tenant (and its namespace, annotated for the Tenant to adopt it, with a Secret of the
/// user's) made for one test; its database is platform-managed. Dropping it deletes
/// the Tenant and waits until the operator has run its decommission finalizer and the Tenant is
/// gone, then deletes the namespace (see [`delete_tenant_and_wait`]).
///
/// Declare it *after* the [`OperatorProcess`] that reconciles it: locals are dropped in reverse
/// order of declaration, and an operator dropped first leaves nothing to remove the finalizer.
/// That mistake fails the test (after cleaning up).
pub struct TestTenant {
    pub name: String,
    pub ns: String,
}

impl TestTenant {
    /// `spec_extra` is YAML appended under `spec:` (indented by two spaces).
    pub fn create(prefix: &str, spec_extra: &str) -> Self {
        Self::create_full(prefix, spec_extra, |_| String::new())
    }

    /// Like [`TestTenant::create`], with the objects `objects(namespace)` returns (YAML
    /// documents, each ending with `---`) created in the namespace before the Tenant.
    pub fn create_with_objects(
        prefix: &str,
        spec_extra: &str,
        objects: impl FnOnce(&str) -> String,
    ) -> Self {
        Self::create_full(prefix, spec_extra, objects)
    }

    fn create_full(prefix: &str, spec_extra: &str, objects: impl FnOnce(&str) -> String) -> Self {
        let name = unique_name(prefix);
        let ns = format!("xin-{name}");
        let objects = objects(&ns);
        apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, annotations: {{xin.dev/adopt: {name}}}}}\n---\n{objects}\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: notes, namespace: {ns}}}\nstringData: {{text: 'the user data'}}\n---\n\
             apiVersion: xin.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  displayName: {name}\n  \
             deletionPolicy: Delete\n{spec_extra}"
        ));
        TestTenant { name, ns }
    }

    pub fn channel(&self, name: &str, secret_name: &str) -> String {
        format!(
            "apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: {name}, namespace: {}}}\n\
             spec:\n  type: telegram\n  displayName: {name}\n  telegram: {{botTokenSecretRef: {{name: {secret_name}, key: token}}}}\n",
            self.ns
        )
    }

    pub fn telegram_secret(&self, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {}}}\nstringData: {{token: '1:abc'}}\n",
            self.ns
        )
    }
}

impl Drop for TestTenant {
    fn drop(&mut self) {
        if let Err(e) = delete_tenant_and_wait(&self.name, &self.ns) {
            // A second panic while a failed test unwinds would abort the whole test binary.
            if std::thread::panicking() {
                eprintln!("cleanup of Tenant {}: {e}", self.name);
            } else {
                panic!("cleanup of Tenant {}: {e}", self.name);
            }
        }
    }
}

/// `kubectl delete <what> --ignore-not-found --wait=false` on drop, for objects a test makes
/// that no finalizer holds (a leader-election Lease, cluster-scoped RBAC). Declare it before
/// whatever uses the objects, so it is dropped after them.
pub struct DeleteOnDrop(Vec<String>);

impl DeleteOnDrop {
    pub fn new(what: &[&str]) -> Self {
        DeleteOnDrop(what.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let mut args = vec!["delete"];
        args.extend(self.0.iter().map(String::as_str));
        args.extend(["--ignore-not-found", "--wait=false"]);
        let _ = kubectl(&args);
    }
}

/// How long a deleted Tenant may take to go while an operator runs: the decommission sequence
/// is a handful of API calls, then the finalizer is removed.
pub const TENANT_GONE_WITHIN: Duration = Duration::from_secs(120);

/// Deletes Tenant `name`, waits until it is gone ([`wait_tenant_gone`]), then deletes namespace
/// `ns` without waiting (with `deletionPolicy: Delete` the operator already did; with `Retain`
/// it stays otherwise). Never panics: it runs in `drop`, possibly while a failed test unwinds.
pub fn delete_tenant_and_wait(name: &str, ns: &str) -> Result<(), String> {
    delete_tenant_and_wait_with(name, ns, || operators_running() > 0)
}

/// [`delete_tenant_and_wait`], with `operator_running` saying whether the operator that runs
/// the finalizer still does (an operator of this process by default; a container's in the
/// images suite).
pub fn delete_tenant_and_wait_with(
    name: &str,
    ns: &str,
    operator_running: impl FnMut() -> bool,
) -> Result<(), String> {
    let deleted = kubectl(&[
        "delete",
        "tenant",
        name,
        "--wait=false",
        "--ignore-not-found",
    ]);
    let gone = if deleted.ok {
        wait_tenant_gone_while(name, operator_running)
    } else {
        Err(format!("kubectl delete tenant failed: {}", deleted.stderr))
    };
    let _ = kubectl(&[
        "delete",
        "namespace",
        ns,
        "--wait=false",
        "--ignore-not-found",
    ]);
    gone
}

/// After Tenant `name`'s deletion was requested: waits (at most [`TENANT_GONE_WITHIN`]) until an
/// operator of this test process has run its finalizer and the Tenant is gone. Never panics.
///
/// When the Tenant cannot go — no [`OperatorProcess`] of this process runs any more, or it is
/// still there after the wait — the finalizer is removed by hand so nothing is left in the
/// cluster, and the error says why: the first is a test that drops its operator too early, the
/// second an operator that does not finish a deletion.
pub fn wait_tenant_gone(name: &str) -> Result<(), String> {
    wait_tenant_gone_while(name, || operators_running() > 0)
}

/// [`wait_tenant_gone`], with `operator_running` saying whether the operator still runs.
pub fn wait_tenant_gone_while(
    name: &str,
    mut operator_running: impl FnMut() -> bool,
) -> Result<(), String> {
    let exists = || {
        let r = kubectl(&["get", "tenant", name, "--ignore-not-found", "-o", "name"]);
        !(r.ok && r.stdout.trim().is_empty())
    };
    let start = Instant::now();
    let problem = loop {
        if !exists() {
            break None;
        }
        if !operator_running() {
            break Some(
                "no operator of this test runs any more, so nothing would run its \
                 decommission finalizer; declare the TestTenant after the OperatorProcess (locals \
                 drop in reverse order)"
                    .to_string(),
            );
        }
        if start.elapsed() > TENANT_GONE_WITHIN {
            let r = kubectl(&["get", "tenant", name, "-o", "jsonpath={.status.conditions}"]);
            break Some(format!(
                "still there {TENANT_GONE_WITHIN:?} after its deletion with an operator \
                 running; conditions {}",
                r.stdout
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    match problem {
        None => Ok(()),
        Some(why) => {
            let _ = kubectl(&[
                "patch",
                "tenant",
                name,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
            Err(format!("{why} (its finalizer was removed by hand)"))
        }
    }
}

/// Waits until `kind/name` (in `ns`, or cluster-scoped when `ns` is empty) has condition
/// `type_` with `status`, and returns the object.
pub fn wait_condition(
    kind: &str,
    name: &str,
    ns: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Value {
    let mut args = vec![kind, name];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    wait_until(
        &format!("{kind} {ns}/{name} {type_}={status}"),
        timeout,
        || {
            let obj = get_json(&args).ok_or("not found")?;
            match condition_status(&obj, type_) {
                Some(s) if s == status => Ok(obj),
                other => Err(format!(
                    "{type_}={other:?}; conditions {}",
                    obj.pointer("/status/conditions").unwrap_or(&Value::Null)
                )),
            }
        },
    )
}

/// Merge-patches Tenant `name` with the JSON `patch` (`{"spec": {...}}`).
pub fn patch_tenant(name: &str, patch: &str) {
    kubectl_ok(&["patch", "tenant", name, "--type=merge", "-p", patch]);
}

pub fn ready(kind: &str, name: &str, ns: &str) -> Value {
    wait_condition(kind, name, ns, "Ready", "True", 2 * MINUTE)
}

/// The reason of a condition.
pub fn condition_reason(obj: &Value, type_: &str) -> String {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The message of a condition.
pub fn condition_message(obj: &Value, type_: &str) -> String {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Decoded value of `key` in Secret `ns/name`.
pub fn secret_value(ns: &str, name: &str, key: &str) -> Option<String> {
    let s = get_json(&["secret", name, "-n", ns])?;
    let b64 = s.pointer(&format!("/data/{key}"))?.as_str()?.to_string();
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    out.stdin.as_ref()?.write_all(b64.as_bytes()).ok()?;
    let o = out.wait_with_output().ok()?;
    String::from_utf8(o.stdout).ok()
}

/// The uid of an object.
pub fn uid_of(args: &[&str]) -> String {
    get_json(args)
        .map(|o| str_at(&o, "/metadata/uid").to_string())
        .unwrap_or_default()
}

/// Events about an object, as `(reason, message)`.
pub fn events_for(ns: &str, name: &str) -> Vec<(String, String)> {
    let field = format!("involvedObject.name={name}");
    let list = get_json(&["events", "-n", ns, "--field-selector", &field]).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                str_at(e, "/reason").to_string(),
                str_at(e, "/message").to_string(),
            )
        })
        .collect()
}

/// examples/ applied for one test; deleted again on drop, the Tenants through their finalizer
/// (declare it after the operator that reconciles them, so the operator still runs), and then
/// their namespaces, waited for until they are gone.
pub struct Examples(std::path::PathBuf);

/// The namespaces examples/ creates.
const EXAMPLE_NAMESPACES: [&str; 2] = ["xin-acme", "xin-globex"];

/// How long the namespace controller gets to empty and remove a deleted example namespace.
const NAMESPACE_GONE_WITHIN: Duration = Duration::from_secs(120);

/// Waits until none of the example namespaces is terminating (absent or active), so that
/// applying examples/ right after an earlier suite deleted them does not hit "unable to
/// create new content in namespace … because it is being terminated".
fn wait_example_namespaces_not_terminating() -> Result<(), String> {
    let start = Instant::now();
    loop {
        let terminating: Vec<&str> = EXAMPLE_NAMESPACES
            .into_iter()
            .filter(|ns| {
                let r = kubectl(&[
                    "get",
                    "namespace",
                    ns,
                    "--ignore-not-found",
                    "-o",
                    "jsonpath={.status.phase}",
                ]);
                !r.ok || r.stdout.trim() == "Terminating"
            })
            .collect();
        if terminating.is_empty() {
            return Ok(());
        }
        if start.elapsed() > NAMESPACE_GONE_WITHIN {
            return Err(format!(
                "namespaces {terminating:?} still terminating {NAMESPACE_GONE_WITHIN:?} after \
                 their deletion"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Examples {
    pub fn apply() -> Self {
        if let Err(e) = wait_example_namespaces_not_terminating() {
            panic!("before applying examples/: {e}");
        }
        let dir = xin_e2e::operator::repo_root().join("examples");
        kubectl_ok(&["apply", "-R", "-f", dir.to_str().unwrap()]);
        Examples(dir)
    }
}

impl Drop for Examples {
    fn drop(&mut self) {
        let deleted = kubectl(&[
            "delete",
            "-R",
            "-f",
            self.0.to_str().unwrap(),
            "--wait=false",
            "--ignore-not-found",
        ]);
        let mut problems: Vec<String> = ["acme", "globex"]
            .into_iter()
            .filter_map(|t| {
                wait_tenant_gone(t)
                    .err()
                    .map(|e| format!("Tenant {t}: {e}"))
            })
            .collect();
        if !deleted.ok {
            problems.push(format!("kubectl delete -R -f examples: {}", deleted.stderr));
        }
        if let Err(e) = wait_example_namespaces_not_terminating() {
            problems.push(e);
        }
        if problems.is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("cleanup of examples/: {problems:?}");
        } else {
            panic!("cleanup of examples/: {problems:?}");
        }
    }
}

/// Runs the worker of IngestionJob `ns/name` as its Job would, to completion. First waits for
/// positive evidence that the operator does not report an outcome on its own: the local
/// cluster's fake node completes the Job's pod without running anything, and the
/// IngestionJob must then wait for the worker's report (`AwaitingWorkerReport`). The worker
/// runs as a local process with the Job's environment and service account
/// (`xin_e2e::local::run_ingestion`) and must exit 0 (a run it finished and reported).
pub fn run_ingestion_worker(ns: &str, name: &str) {
    run_ingestion_worker_with(ns, name, &Default::default());
}

/// [`run_ingestion_worker`] with local overrides (stand-ins for external endpoints).
pub fn run_ingestion_worker_with(
    ns: &str,
    name: &str,
    overrides: &xin_e2e::local::IngestOverrides,
) {
    wait_until(
        "the operator to wait for the worker's report",
        2 * MINUTE,
        || {
            let ij = get_json(&["ingestionjob", name, "-n", ns]).ok_or("no IngestionJob")?;
            let reason = ij["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["reason"].as_str().unwrap_or_default().to_string());
            match reason.as_deref() {
                Some("AwaitingWorkerReport") => {
                    assert_eq!(str_at(&ij, "/status/phase"), "Running");
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    );
    let run = xin_e2e::local::run_ingestion(ns, name, overrides)
        .unwrap_or_else(|e| panic!("run the ingestion worker for {ns}/{name}: {e}"));
    assert!(
        run.success,
        "xin-ingest failed for {ns}/{name}:\n{}",
        run.log
    );
}

/// [`run_ingestion_worker`], then the IngestionJob once the operator reports it `Complete`.
pub fn ingest(ns: &str, name: &str) -> serde_json::Value {
    run_ingestion_worker(ns, name);
    let ij = wait_condition("ingestionjob", name, ns, "Complete", "True", MINUTE);
    assert_eq!(str_at(&ij, "/status/phase"), "Succeeded");
    assert_eq!(str_at(&ij, "/status/worker/state"), "Succeeded");
    ij
}
