//! Helpers for the end-to-end suites: drive the local control plane (`e2e/controlplane`) with
//! `kubectl`, exactly as a user would, and wait for what a user would wait for.
//!
//! The suites find the cluster through `KUBECONFIG`; `make test` starts the test cluster
//! (`XIN_CLUSTER=test`, never the demo's) and sets it (and puts the matching `kubectl` first on
//! `PATH`). Without a cluster every e2e test fails with a message saying how to start one: a
//! skipped suite is a failed suite.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use serde_json::Value;

pub mod browser;
pub mod local;
pub mod oci;
pub mod operator;
pub mod workload;

/// An HTTP answer read by [`http`].
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); `None` when the
/// server cannot be reached or answers garbage.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<HttpReply> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(HttpReply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET path`: `(status, body)`.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http(addr, "GET", path, &[], b"").map(|r| (r.status, r.body))
}

/// Result of one `kubectl` invocation.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `kubectl` against the local control plane.
pub fn kubectl(args: &[&str]) -> Run {
    kubectl_stdin(args, None)
}

/// Runs `kubectl` with `stdin` as standard input (for `apply -f -`).
pub fn kubectl_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: start the test cluster with `make cluster-up XIN_CLUSTER=test` \
         and `eval \"$(XIN_CLUSTER=test e2e/controlplane/cluster.sh env)\"`, or run the suites \
         with `make test`"
    );
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be on PATH (make test puts the built one first)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("wait for kubectl").into()
}

/// Runs `kubectl` and panics with its stderr when it fails.
pub fn kubectl_ok(args: &[&str]) -> String {
    let run = kubectl(args);
    assert!(run.ok, "kubectl {} failed: {}", args.join(" "), run.stderr);
    run.stdout
}

/// `kubectl apply -f -` of `manifest`; panics with the server's message on refusal.
pub fn apply(manifest: &str) -> String {
    let run = kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(run.ok, "kubectl apply failed: {}\n{manifest}", run.stderr);
    run.stdout
}

/// `kubectl get ... -o json`, parsed; `None` when the object does not exist.
pub fn get_json(args: &[&str]) -> Option<Value> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let run = kubectl(&full);
    if !run.ok {
        assert!(
            run.stderr.contains("NotFound") || run.stderr.contains("not found"),
            "kubectl {} failed: {}",
            full.join(" "),
            run.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&run.stdout).expect("kubectl printed JSON"))
}

/// Polls `check` every half second until it returns `Some`, or panics after `timeout` with
/// `what` and the last observation. Timeouts are generous: they bound a hang, not a speed.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Waits until each CustomResourceDefinition `crds` names (e.g. `tenants.xin.dev`) is
/// Established. Polled here rather than with `kubectl wait --for=condition=Established`, which
/// fails at once ("`.status.conditions accessor error: <nil> is of the type <nil>`") when it
/// reads a just-created CRD whose `status.conditions` is still null
/// (kubernetes/kubernetes#66439).
pub fn wait_crds_established(crds: &[&str]) {
    for crd in crds {
        wait_until(
            &format!("crd/{crd} Established"),
            Duration::from_secs(60),
            || match get_json(&["crd", crd]) {
                Some(v) if condition_status(&v, "Established") == Some("True") => Ok(()),
                Some(v) => Err(format!("conditions: {}", v["status"]["conditions"])),
                None => Err("not found".into()),
            },
        );
    }
}

/// A name unique to this test process and call, so suites can run in parallel and rerun
/// against the same cluster without colliding.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id(),
        nanos & 0xffff,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A namespace created for one test and deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub fn create(prefix: &str) -> Self {
        let name = unique_name(prefix);
        kubectl_ok(&["create", "namespace", &name]);
        // Pods are refused until the service-account controller has created `default`.
        wait_until(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            || match get_json(&["serviceaccount", "default", "-n", &name]) {
                Some(_) => Ok(()),
                None => Err("no default ServiceAccount yet".into()),
            },
        );
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// Reads a string at a JSON pointer, or "" when absent.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The `status` of the condition `type_` in `.status.conditions`, if present.
pub fn condition_status<'a>(v: &'a Value, type_: &str) -> Option<&'a str> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
}

/// Waits while `make test` builds Prometheus and Jaeger in the background
/// (`XIN_OBSERVABILITY_BUILD_PID`, set by `e2e/run-tests.sh`): a suite that needs them calls
/// this first. Returns at once when no such build runs (the tools are cached, or the suite
/// runs on its own). The build's outcome is the binaries: a suite still fails, naming the
/// build command, when they are missing afterwards.
pub fn wait_for_observability_build() {
    wait_for_background_build("XIN_OBSERVABILITY", "Prometheus and Jaeger");
}

/// Waits while `make test` builds the real node's binaries in the background
/// (`XIN_REALNODE_BUILD_PID`: kubelet, kube-proxy, containerd, CoreDNS, the CNI plugins;
/// `e2e/realnode.sh build`), as [`wait_for_observability_build`] does.
pub fn wait_for_realnode_build() {
    wait_for_background_build("XIN_REALNODE", "the real node's binaries");
}

/// `<prefix>_BUILD_PID` and `<prefix>_BUILD_LOG`: the background build to wait for.
fn wait_for_background_build(prefix: &str, what: &str) {
    let Some(pid) = std::env::var(format!("{prefix}_BUILD_PID"))
        .ok()
        .filter(|p| !p.is_empty())
    else {
        return;
    };
    // Running while /proc/<pid>/stat exists and its state is not Z: the finished build stays
    // a zombie until run-tests.sh reaps it after the suites.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    let mut said = false;
    let deadline = Instant::now() + Duration::from_secs(60 * 60);
    while running() && Instant::now() < deadline {
        if !said {
            eprintln!(
                "waiting for the background build of {what} (pid {pid}, log {})",
                std::env::var(format!("{prefix}_BUILD_LOG")).unwrap_or_default()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn condition_status_finds_the_named_condition() {
        let obj = json!({"status": {"conditions": [
            {"type": "Available", "status": "False"},
            {"type": "Ready", "status": "True"}
        ]}});
        assert_eq!(condition_status(&obj, "Ready"), Some("True"));
        assert_eq!(condition_status(&obj, "Available"), Some("False"));
        assert_eq!(condition_status(&obj, "Stalled"), None);
        assert_eq!(condition_status(&json!({}), "Ready"), None);
    }

    #[test]
    fn unique_names_differ_and_are_dns_labels() {
        let a = unique_name("smoke");
        let b = unique_name("smoke");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
    }

    #[test]
    fn wait_until_returns_the_first_success() {
        let mut n = 0;
        let got = wait_until("a counter to reach 3", Duration::from_secs(10), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "timed out")]
    fn wait_until_panics_with_the_last_observation_on_timeout() {
        wait_until::<()>("never", Duration::from_millis(1), || Err("still no".into()));
    }
}
