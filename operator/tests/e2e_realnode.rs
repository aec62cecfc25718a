//! The platform on a real node: a cluster of its own (`XIN_CLUSTER=real`, with kwok's fake
//! nodes cordoned) gets a real node from `e2e/realnode.sh` — kubelet, kube-proxy, containerd,
//! runc, CoreDNS, a CNI bridge — and the images `make images` builds (assembled here from the
//! dev binaries). Then, as a platform team would:
//!
//! 1. `helm install` of the chart installs the operator from its image (real pods), with the
//!    platform PostgreSQL (reached by the pods on the node's bridge address);
//! 2. `kubectl apply -R -f examples/`: both example tenants become Ready, their gateways and
//!    orchestrators run as real pods, acme's knowledge is ingested by a real Job;
//! 3. through `kubectl port-forward` (loopback only) a Telegram webhook reaches acme's gateway
//!    (and a forged one is refused), and a widget visitor's question is answered by acme's
//!    orchestrator through its Service from the ingested knowledge;
//! 4. `helm test` runs the smoke Job (`xin-operator smoke`);
//! 5. `helm upgrade` to another gateway tag rolls the operator and every tenant's gateway and
//!    nothing else; `helm rollback` brings the previous tag back; `helm test` passes again.
//!
//! Needs root (runc, cgroups, the bridge, nftables); fails, never skips, without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xin_e2e::http;
use xin_e2e::operator::repo_root;
use xin_e2e::workload::{Answer, StandIn, free_port, wait_child};

const NODE: &str = "xin-real-1";
const NODE_ADDR: &str = "10.245.0.1";
const PG_PORT: &str = "15432";
const RELEASE: &str = "xin";
const OPERATOR_NS: &str = "xin-system";
const TENANTS: [(&str, &str); 2] = [("acme", "xin-acme"), ("globex", "xin-globex")];

fn script(name: &str) -> PathBuf {
    repo_root().join("e2e").join(name)
}

/// Runs a command with the real cluster selected; its stdout, or a panic with its output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("XIN_CLUSTER", "real")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real cluster: its kubeconfig and where kubectl and helm are.
struct Cluster {
    kubeconfig: PathBuf,
    path: String,
}

impl Cluster {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .env("XIN_CLUSTER", "real");
        c
    }

    fn kubectl(&self, args: &[&str]) -> String {
        run(self.cmd("kubectl").args(args))
    }

    fn helm(&self, args: &[&str]) -> String {
        run(self.cmd("helm").args(args))
    }

    /// `kubectl apply --server-side -f -` of a manifest given on stdin (never in arguments).
    fn apply_stdin(&self, manifest: &str) {
        use std::io::Write;
        let mut child = self
            .cmd("kubectl")
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).expect("kubectl -o json")
    }

    /// Polls `f` every half second until it returns Some, or panics naming `what`.
    fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                let pods = self
                    .cmd("kubectl")
                    .args(["get", "pods", "-A", "-o", "wide"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("timed out after {timeout:?} waiting for {what}; pods:\n{pods}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.cmd("kubectl").args(&a).output().ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Waits until the Deployment has rolled out its latest generation, then returns it.
    fn rolled_out(&self, ns: &str, name: &str) -> Value {
        self.wait(
            &format!("deployment {ns}/{name} rolled out"),
            Duration::from_secs(240),
            || {
                let d = self.try_json(&["get", "deployment", name, "-n", ns])?;
                let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let s = &d["status"];
                (s["observedGeneration"] == d["metadata"]["generation"]
                    && s["updatedReplicas"].as_i64() == Some(want)
                    && s["availableReplicas"].as_i64() == Some(want)
                    && s["replicas"].as_i64() == Some(want))
                .then_some(d)
            },
        )
    }

    /// The pods of a Deployment (by its selector), each with its node, phase and readiness.
    fn pods_of(&self, ns: &str, deployment: &Value) -> Vec<Value> {
        let sel = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        self.json(&["get", "pods", "-n", ns, "-l", &sel])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    fn condition(&self, kind: &str, name: &str, ns: &str, type_: &str) -> Option<String> {
        let mut args = vec!["get", kind, name];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let o = self.try_json(&args)?;
        o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .and_then(|c| c["status"].as_str().map(str::to_string))
    }
}

/// Stops what the test started, even when it fails: the port-forward, the node, the cluster,
/// PostgreSQL.
struct Teardown {
    forward: Option<Child>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(mut f) = self.forward.take() {
            let _ = f.kill();
            let _ = f.wait();
        }
        for (s, args) in [
            ("realnode.sh", vec!["down"]),
            ("controlplane/cluster.sh", vec!["down"]),
        ] {
            let _ = Command::new(script(s))
                .args(args)
                .env("XIN_CLUSTER", "real")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new(script("postgres.sh"))
            .arg("stop")
            .env("XIN_PG_PORT", PG_PORT)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `kubectl port-forward` to a Service, on a free loopback port; returns the child and address.
fn port_forward(c: &Cluster, ns: &str, target: &str, port: u16) -> (Child, String) {
    let local = free_port();
    let mut child = c
        .cmd("kubectl")
        .args([
            "port-forward",
            "-n",
            ns,
            "--address",
            "127.0.0.1",
            target,
            &format!("{local}:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let addr = format!("127.0.0.1:{local}");
    let reached = c.wait(
        &format!("port-forward to {ns}/{target}"),
        Duration::from_secs(30),
        || {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("kubectl port-forward exited: {s}");
            }
            http(&addr, "GET", "/health", &[], b"").filter(|r| r.status == 200)
        },
    );
    assert_eq!(reached.body, "ok");
    (child, addr)
}

fn images_line(target: &Path, image: &str) -> Vec<String> {
    let list = std::fs::read_to_string(target.join("images/images.txt")).expect("images.txt");
    list.lines()
        .find(|l| l.starts_with(&format!("{image} ")))
        .unwrap_or_else(|| panic!("{image} in images.txt:\n{list}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_chart_installs_the_platform_on_a_real_node_and_upgrades_only_what_changed() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the real-node suite needs root (runc, cgroups, a bridge, nftables); make test runs as root in CI"
    );
    let repo = repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));

    // `make test` builds the node's binaries in the background from its start.
    xin_e2e::wait_for_realnode_build();
    // Leftovers of an interrupted run go first; then a fresh cluster.
    let mut teardown = Teardown { forward: None };
    drop(Teardown { forward: None });
    run(Command::new(script("controlplane/cluster.sh")).arg("reset"));
    run(Command::new(script("images.sh")).args(["assemble", "dev"]));
    run(Command::new(script("controlplane/cluster.sh")).arg("up"));
    let env = run(Command::new(script("controlplane/cluster.sh")).arg("env"));
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.replace("\"$PATH\"", &std::env::var("PATH").unwrap_or_default()))
            .unwrap_or_else(|| panic!("{name} in `cluster.sh env`:\n{env}"))
    };
    let c = Cluster {
        kubeconfig: PathBuf::from(var("KUBECONFIG")),
        path: var("PATH"),
    };
    run(Command::new(script("realnode.sh")).arg("up"));
    let node = c.json(&["get", "node", NODE]);
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.37.2");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://2.")),
        "{}",
        node["status"]["nodeInfo"]
    );
    // The fake nodes stay beside it, but the pods go to the real one.
    for n in ["xin-node-1", "xin-node-2"] {
        c.kubectl(&["cordon", n]);
    }

    // The platform PostgreSQL, also on the node's bridge address for the pods.
    let admin = run(Command::new(script("postgres.sh"))
        .arg("start")
        .env("XIN_PG_PORT", PG_PORT)
        .env("XIN_PG_ALSO_LISTEN", format!("{NODE_ADDR}/24")));
    let admin = admin
        .trim()
        .replace("@127.0.0.1:", &format!("@{NODE_ADDR}:"));
    // Telegram's Bot API, for the operator's setWebhook: a stand-in on the bridge address.
    let telegram = StandIn::start_on(&format!("{NODE_ADDR}:0"), |_| {
        Answer::json(200, json!({"ok": true, "result": true}))
    });

    let op = images_line(&target, "xin-operator");
    let (tag, commit_tag) = (op[1].clone(), op[2].clone());
    c.kubectl(&["create", "namespace", OPERATOR_NS]);
    // The admin URL (with its password) goes on stdin, never into a command line.
    c.apply_stdin(
        &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "xin-platform-db", "namespace": OPERATOR_NS},
            "stringData": {"url": admin}})
        .to_string(),
    );
    let chart = repo.join("charts/xin");
    let chart = chart.to_str().unwrap();
    let mut values = vec![
        "--set".to_string(),
        format!("image.repository=xin.local/xin-operator,image.tag={tag}"),
        "--set".into(),
        "database.adminUrlSecret.name=xin-platform-db".into(),
        "--set".into(),
        format!(
            "telegram.apiBase={},telegram.registerDelaySeconds=0",
            telegram.url()
        ),
        // Not enforced on this node (the bridge plugin has no NetworkPolicy engine), but as a
        // platform team would set them: the pods reach PostgreSQL on the node's address.
        "--set".into(),
        format!(
            "networkPolicy.database.cidrs={{{NODE_ADDR}/32}},networkPolicy.database.port={PG_PORT}"
        ),
        // A failing smoke test (below) gives up after this long.
        "--set".into(),
        "smokeTest.timeoutSeconds=30".into(),
    ];
    for w in ["gateway", "orchestrator", "ingest", "automation"] {
        values.push("--set".into());
        values.push(format!(
            "workloads.{w}.repository=xin.local/xin-{w},workloads.{w}.tag={tag}"
        ));
    }
    let mut install = vec![
        "install",
        RELEASE,
        chart,
        "-n",
        OPERATOR_NS,
        "--wait",
        "--timeout",
        "4m",
    ];
    install.extend(values.iter().map(String::as_str));
    c.helm(&install);

    // The operator runs from its image, as real pods on the real node.
    let operator = c.rolled_out(OPERATOR_NS, "xin-operator");
    let pods = c.pods_of(OPERATOR_NS, &operator);
    assert_eq!(pods.len(), 2, "the chart's two replicas");
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], NODE);
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(
            p["spec"]["containers"][0]["image"],
            format!("xin.local/xin-operator:{tag}")
        );
        let id = p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or_default();
        assert!(id.starts_with("containerd://"), "a real container: {id}");
    }

    // The examples, as a user applies them.
    c.kubectl(&[
        "apply",
        "--server-side",
        "-R",
        "-f",
        repo.join("examples").to_str().unwrap(),
    ]);
    for (t, ns) in TENANTS {
        c.wait(
            &format!("tenant {t} Ready"),
            Duration::from_secs(240),
            || (c.condition("tenant", t, "", "Ready").as_deref() == Some("True")).then_some(()),
        );
        let mut workloads = vec!["xin-gateway", "xin-orchestrator"];
        if t == "acme" {
            // acme has an AutomationRule: its automation worker runs too.
            workloads.push("xin-automation");
        }
        for w in workloads {
            let d = c.rolled_out(ns, w);
            let pods = c.pods_of(ns, &d);
            assert!(!pods.is_empty(), "{ns}/{w} has pods");
            for p in pods {
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                assert_eq!(p["spec"]["nodeName"], NODE, "{ns}/{name}");
                assert_eq!(p["status"]["phase"], "Running", "{ns}/{name}");
                let cs = &p["status"]["containerStatuses"][0];
                assert_eq!(cs["ready"], true, "{ns}/{name} passed its readiness probe");
                assert_eq!(
                    p["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
                    true
                );
                assert_eq!(
                    p["spec"]["securityContext"]["runAsUser"], 65532,
                    "{ns}/{name}"
                );
                assert_eq!(
                    cs["imageID"].as_str().map(|i| i.contains("sha256:")),
                    Some(true),
                    "{cs}"
                );
            }
        }
    }
    // Each tenant's knowledge, ingested by a real Job on the real node (it reads the
    // ConfigMap through the API server, by the `kubernetes` Service).
    for (_, ns) in TENANTS {
        c.wait(
            &format!("IngestionJob {ns}/faq-2026-11 Succeeded"),
            Duration::from_secs(240),
            || {
                let j = c.try_json(&["get", "ingestionjob", "faq-2026-11", "-n", ns])?;
                let phase = j["status"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert_ne!(phase, "Failed", "{}", j["status"]);
                (phase == "Succeeded").then_some(())
            },
        );
        let pods = c.json(&["get", "pods", "-n", ns, "-l", "job-name"]);
        let pods = pods["items"].as_array().cloned().unwrap_or_default();
        assert!(!pods.is_empty(), "{ns}: the ingestion Job's pod");
        for p in pods {
            assert_eq!(p["spec"]["nodeName"], NODE);
            assert_eq!(p["status"]["phase"], "Succeeded", "{}", p["status"]);
        }
    }

    // A Telegram webhook to acme's gateway, through a port-forward on loopback.
    let (forward, gw) = port_forward(&c, "xin-acme", "service/xin-gateway", 8080);
    teardown.forward = Some(forward);
    let key = {
        let s = c.json(&["get", "secret", "telegram-webhook", "-n", "xin-acme"]);
        let b64 = s["data"]["current"].as_str().expect("the webhook key");
        String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(),
        )
        .unwrap()
    };
    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 1,
        "chat": {"id": 77, "type": "private"}, "text": "How long do returns take?"}});
    let r = http(
        &gw,
        "POST",
        "/webhooks/telegram",
        &[("X-Telegram-Bot-Api-Secret-Token", key.as_str())],
        update.to_string().as_bytes(),
    )
    .expect("acme's gateway through the port-forward");
    assert_eq!(r.status, 200, "{}", r.body);
    let forged = http(
        &gw,
        "POST",
        "/webhooks/telegram",
        &[("X-Telegram-Bot-Api-Secret-Token", "not-the-key")],
        update.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(forged.status, 403, "{}", forged.body);

    // A widget visitor's question, answered by acme's orchestrator (the gateway calls it by
    // its Service name: CoreDNS and kube-proxy on the real node) from the ingested knowledge.
    let origin = ("Origin", "http://localhost:18090");
    let s = http(
        &gw,
        "POST",
        "/widget/web/session",
        &[origin],
        br#"{"visitor_id":"real-node-visitor-1"}"#,
    )
    .unwrap();
    assert_eq!(s.status, 200, "{}", s.body);
    let bearer = format!("Bearer {}", s.json()["session_token"].as_str().unwrap());
    let m = http(
        &gw,
        "POST",
        "/widget/web/messages",
        &[origin, ("Authorization", bearer.as_str())],
        br#"{"text":"How many days do I have to return an item?"}"#,
    )
    .unwrap();
    assert_eq!(m.status, 202, "{}", m.body);
    let answer = c.wait(
        "acme's answer through the real pods",
        Duration::from_secs(60),
        || {
            let got = http(
                &gw,
                "GET",
                "/widget/web/messages?wait=10",
                &[origin, ("Authorization", bearer.as_str())],
                b"",
            )?;
            got.json()["messages"][0]["answer"]
                .as_str()
                .map(str::to_string)
        },
    );
    assert!(
        answer.contains("30 days"),
        "from acme's knowledge: {answer}"
    );

    // The smoke Job.
    let smoke = c.helm(&["test", RELEASE, "-n", OPERATOR_NS, "--timeout", "4m"]);
    assert!(smoke.contains("Phase:          Succeeded"), "{smoke}");
    let logs = c.kubectl(&["logs", "-n", OPERATOR_NS, "job/xin-operator-smoke"]);
    for (t, _) in TENANTS {
        for w in ["gateway", "orchestrator"] {
            assert!(
                logs.lines()
                    .any(|l| l.starts_with(&format!("ok    tenant {t} {w} "))),
                "{t} {w} in the smoke Job's output:\n{logs}"
            );
        }
    }
    assert!(logs.contains("smoke: 5 checks passed"), "{logs}");

    // …and it fails when a Tenant is not Ready (here: its LLM key's Secret does not exist).
    c.apply_stdin(
        &json!({"apiVersion": "xin.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "broken"},
            "spec": {"displayName": "Broken", "deletionPolicy": "Delete",
                "llm": {"endpoint": "https://llm.example.com", "model": "m",
                    "apiKeySecretRef": {"name": "missing", "key": "apiKey"}}}})
        .to_string(),
    );
    c.wait("tenant broken not Ready", Duration::from_secs(60), || {
        (c.condition("tenant", "broken", "", "Ready").as_deref() == Some("False")).then_some(())
    });
    let failed = c
        .cmd("helm")
        .args(["test", RELEASE, "-n", OPERATOR_NS, "--timeout", "4m"])
        .output()
        .unwrap();
    assert!(
        !failed.status.success(),
        "helm test passed with a Tenant not Ready"
    );
    let logs = c.kubectl(&["logs", "-n", OPERATOR_NS, "job/xin-operator-smoke"]);
    assert!(
        logs.lines()
            .any(|l| l.starts_with("FAIL  tenant broken Ready: SecretNotFound")),
        "{logs}"
    );
    assert!(logs.contains("ok    tenant acme gateway "), "{logs}");
    c.kubectl(&[
        "delete",
        "tenant",
        "broken",
        "--wait=true",
        "--timeout=120s",
    ]);

    // An upgrade that changes one value: the gateways' tag.
    let generation = |ns: &str, name: &str| {
        c.json(&["get", "deployment", name, "-n", ns])["metadata"]["generation"]
            .as_i64()
            .unwrap()
    };
    let mut before = vec![(
        OPERATOR_NS,
        "xin-operator",
        generation(OPERATOR_NS, "xin-operator"),
    )];
    for (_, ns) in TENANTS {
        for w in ["xin-gateway", "xin-orchestrator"] {
            before.push((ns, w, generation(ns, w)));
        }
    }
    before.push((
        "xin-acme",
        "xin-automation",
        generation("xin-acme", "xin-automation"),
    ));
    c.helm(&[
        "upgrade",
        RELEASE,
        chart,
        "-n",
        OPERATOR_NS,
        "--reuse-values",
        "--set",
        &format!("workloads.gateway.tag={commit_tag}"),
        "--wait",
        "--timeout",
        "4m",
    ]);
    // Every tenant's gateway rolled out on `image`, its pods on the real node.
    let gateways_on = |image: &str| {
        for (_, ns) in TENANTS {
            c.wait(
                &format!("{ns}'s gateway on {image}"),
                Duration::from_secs(240),
                || {
                    let d = c.rolled_out(ns, "xin-gateway");
                    (d["spec"]["template"]["spec"]["containers"][0]["image"] == image).then_some(())
                },
            );
            let d = c.rolled_out(ns, "xin-gateway");
            for p in c.pods_of(ns, &d) {
                assert_eq!(p["spec"]["containers"][0]["image"], image);
                assert_eq!(p["spec"]["nodeName"], NODE);
            }
        }
    };
    gateways_on(&format!("xin.local/xin-gateway:{commit_tag}"));
    for (ns, name, gen_before) in &before {
        let now = generation(ns, name);
        let rolled = *name == "xin-gateway" || *name == "xin-operator";
        if rolled {
            assert!(
                now > *gen_before,
                "{ns}/{name} rolled ({gen_before} → {now})"
            );
        } else {
            assert_eq!(now, *gen_before, "{ns}/{name} untouched by the upgrade");
        }
    }

    // Rollback: the previous tag comes back the same way.
    c.helm(&[
        "rollback",
        RELEASE,
        "1",
        "-n",
        OPERATOR_NS,
        "--wait",
        "--timeout",
        "4m",
    ]);
    gateways_on(&format!("xin.local/xin-gateway:{tag}"));
    let smoke = c.helm(&["test", RELEASE, "-n", OPERATOR_NS, "--timeout", "4m"]);
    assert!(smoke.contains("Phase:          Succeeded"), "{smoke}");
    // Neither the upgrade nor the rollback touched the other workloads, even late.
    for (ns, name, gen_before) in &before {
        if *name != "xin-gateway" && *name != "xin-operator" {
            assert_eq!(
                generation(ns, name),
                *gen_before,
                "{ns}/{name} still untouched"
            );
        }
    }
    // The smoke test's ServiceAccount and rights are gone once it ran.
    for kind in ["serviceaccount", "clusterrole", "clusterrolebinding"] {
        let out = c.kubectl(&[
            "get",
            kind,
            "-A",
            "-o",
            "name",
            "--field-selector",
            "metadata.name=xin-operator-smoke",
        ]);
        assert!(out.trim().is_empty(), "{kind} left behind: {out}");
    }
    if let Some(mut f) = teardown.forward.take() {
        let _ = f.kill();
        assert!(wait_child(&mut f, Duration::from_secs(10)).is_some());
    }
    drop(telegram);
}
