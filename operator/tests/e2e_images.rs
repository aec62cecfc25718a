//! The images `e2e/images.sh` builds (`make images`; here assembled from the dev binaries
//! `cargo test` built), run by an OCI runtime (Debian's runc) with what the operator renders:
//! the operator's own image reconciles a Tenant in the test cluster, then the gateway,
//! orchestrator and automation images start with the environment it rendered for that
//! Tenant, serve `/health` and `/metrics` (and `/ready`), and exit 0 on SIGTERM; the
//! ingestion image runs the Tenant's IngestionJob to completion as its Job would.
//!
//! The test cluster's nodes are fake ones (kwok) that run no pods, so here runc is the
//! evidence that each image starts; e2e_realnode runs them as real pods (docs/images.md).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use xin_e2e::local::{
    IngestOverrides, Overrides, automation_env, gateway_env, ingest_env, orchestrator_env,
    service_account_kubeconfig, write_routes,
};
use xin_e2e::oci::{Bind, Container, unpack, version_tag};
use xin_e2e::operator::install_crds;
use xin_e2e::workload::free_port;

const IMAGES: [&str; 5] = [
    "xin-operator",
    "xin-gateway",
    "xin-orchestrator",
    "xin-ingest",
    "xin-automation",
];

/// A copy of `file` readable by the images' user (65532), in `dir`; bound at `file`'s path.
fn readable_copy(file: &Path, dir: &Path) -> Bind {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join(file.file_name().unwrap());
    std::fs::copy(file, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    Bind {
        source: copy,
        destination: file.display().to_string(),
        read_only: true,
    }
}

/// The CA files a kubeconfig (YAML or JSON) names by path, readable in a container.
fn ca_binds(kubeconfig: &Path, dir: &Path) -> Vec<Bind> {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    text.match_indices("certificate-authority")
        .filter_map(|(at, _)| {
            let rest = &text[at + "certificate-authority".len()..];
            let rest = rest.trim_start_matches(['"', ':', ' ']);
            let path: String = rest
                .chars()
                .take_while(|c| !matches!(c, '"' | '\n' | ',' | '}'))
                .collect();
            path.starts_with('/').then(|| PathBuf::from(path.trim()))
        })
        .map(|ca| readable_copy(&ca, &dir.join("ca")))
        .collect()
}

/// The test cluster's kubeconfig and the CA file it names, for a container.
fn kubeconfig_binds(dir: &Path) -> Vec<Bind> {
    let kubeconfig =
        PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG (make test sets it)"));
    let mut binds = vec![readable_copy(&kubeconfig, &dir.join("kubeconfig"))];
    binds.extend(ca_binds(&kubeconfig, dir));
    binds
}

/// A service account's kubeconfig directory (bound at its path) and its CA.
fn service_account_binds(kubeconfig: &Path, dir: &Path) -> Vec<Bind> {
    let mut binds = vec![same_path(kubeconfig.parent().unwrap())];
    binds.extend(ca_binds(kubeconfig, dir));
    binds
}

/// A directory bound read-only at its own path.
fn same_path(dir: &Path) -> Bind {
    Bind {
        source: dir.to_path_buf(),
        destination: dir.display().to_string(),
        read_only: true,
    }
}

/// Assembles the images once per test process from the dev binaries `cargo test` built
/// (`e2e/images.sh assemble dev`, the same assembly as `make images`).
fn images() {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = ONCE.get_or_init(|| {
        let script = xin_e2e::operator::repo_root().join("e2e/images.sh");
        let out = std::process::Command::new(&script)
            .args(["assemble", "dev"])
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "e2e/images.sh assemble dev failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Serves `/health` and `/metrics` on `metrics` (and `path` on `http`), then exits 0 on
/// SIGTERM within 20 s.
fn serves_and_stops(c: &mut Container, http: &str, path: &str, metrics: &str) {
    c.wait_http(http, path).unwrap();
    assert_eq!(c.wait_http(metrics, "/health").unwrap().trim(), "ok");
    let m = c.wait_http(metrics, "/metrics").unwrap();
    assert!(m.contains("# TYPE") && m.contains("# EOF"), "{m}");
    c.signal("TERM").unwrap();
    let status = c
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{} still running 20 s after SIGTERM:\n{}", c.id, c.logs()));
    assert!(
        status.success(),
        "{} exited with {status}:\n{}",
        c.id,
        c.logs()
    );
}

#[test]
fn the_images_are_minimal_non_root_and_carry_their_sbom() {
    images();
    for name in IMAGES {
        let bundle = unpack(name, &version_tag()).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(
            config["process"]["user"]["uid"], 65532,
            "{name} runs as 65532"
        );
        assert_eq!(config["process"]["user"]["gid"], 65532);
        assert_eq!(
            config["process"]["args"][0],
            format!("/usr/local/bin/{name}"),
            "{name}'s entrypoint"
        );
        let rootfs = bundle.join("rootfs");
        for absent in [
            "bin/sh",
            "usr/bin/sh",
            "bin/bash",
            "usr/bin/apt",
            "usr/bin/dpkg",
            "sbin",
        ] {
            assert!(!rootfs.join(absent).exists(), "{name} has no {absent}");
        }
        assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").exists());
        assert!(rootfs.join("lib/x86_64-linux-gnu/libc.so.6").exists());
        // Exactly: the binary, its libraries, CA bundle, passwd and group.
        let mut files = vec![];
        let mut stack = vec![rootfs.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                } else {
                    files.push(p.strip_prefix(&rootfs).unwrap().display().to_string());
                }
            }
        }
        files.sort();
        let unexpected: Vec<&String> = files
            .iter()
            .filter(|f| {
                !(f.starts_with("lib/x86_64-linux-gnu/")
                    || f.starts_with("lib64/ld-linux")
                    || *f == &format!("usr/local/bin/{name}")
                    || [
                        "etc/passwd",
                        "etc/group",
                        "etc/ssl/certs/ca-certificates.crt",
                    ]
                    .contains(&f.as_str()))
            })
            .collect();
        assert!(unexpected.is_empty(), "{name} holds {unexpected:?}");
        let _ = std::fs::remove_dir_all(&bundle);
        // The SBOM: the crates compiled in and the Debian packages of the libraries.
        let sbom_file = xin_e2e::oci::layout(name).with_extension("spdx.json");
        let sbom: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sbom_file).unwrap()).unwrap();
        assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
        let purls: Vec<String> = sbom["packages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["referenceLocator"].as_str().map(str::to_string))
            .collect();
        assert!(
            purls.iter().any(|p| p.starts_with("pkg:cargo/tokio@")),
            "{name}"
        );
        assert!(
            purls.iter().any(|p| p.starts_with("pkg:deb/debian/libc6@")),
            "{name}"
        );
        assert!(
            !purls.iter().any(|p| p.starts_with("pkg:cargo/fantoccini@")),
            "{name}: test-only crates are not in it"
        );
    }
}

#[test]
fn the_images_run_in_an_oci_runtime_as_the_operator_renders_them() {
    images();
    install_crds();
    let scratch = std::env::temp_dir().join(format!("xin-images-{}", std::process::id()));
    // The operator from its image: it reconciles this test's Tenant.
    let op_metrics = format!("127.0.0.1:{}", free_port());
    let mut op_env = env(&[
        ("XIN_METRICS_ADDR", op_metrics.clone()),
        ("XIN_LEADER_ELECT", "false".into()),
        ("XIN_RESYNC_SECONDS", "30".into()),
        ("XIN_TELEGRAM_API_BASE", "http://127.0.0.1:9".into()),
        ("KUBECONFIG", std::env::var("KUBECONFIG").unwrap()),
        ("RUST_LOG", "info".into()),
    ]);
    if let Ok(url) = std::env::var("XIN_TEST_DATABASE_URL") {
        op_env.push(("XIN_DATABASE_ADMIN_URL".into(), url));
    }
    let mut operator =
        Container::start("xin-operator", &op_env, &kubeconfig_binds(&scratch)).unwrap();
    operator.wait_http(&op_metrics, "/readyz").unwrap();
    assert_eq!(
        operator.wait_http(&op_metrics, "/healthz").unwrap().trim(),
        "ok"
    );

    let name = format!("img-{}", std::process::id());
    let ns = format!("xin-{name}");
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, annotations: {{xin.dev/adopt: {name}}}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: site, namespace: {ns}}}\nstringData: {{identity: site-secret}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kb, namespace: {ns}}}\ndata: {{faq.md: \"# Returns\\n\\nReturns are free for 30 days.\"}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{displayName: {name}, deletionPolicy: Delete}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec: {{type: web, displayName: web, web: {{allowedOrigins: ['https://shop.example'], identitySecretRef: {{name: site, key: identity}}}}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: hook, namespace: {ns}}}\n\
         spec: {{trigger: {{event: {{types: [MessageReceived]}}}}, action: {{webhook: {{url: 'https://hooks.example/x'}}}}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: kb, namespace: {ns}}}\n\
         spec: {{source: {{configMap: {{name: kb}}}}}}\n"
    ));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ready("tenant", &name, "");
        ready("channel", "web", &ns);
        ready("automationrule", "hook", &ns);
        let dir = scratch.join("routes");
        let o = Overrides::local(write_routes(&ns, &dir).unwrap());
        let mut orch =
            Container::start("xin-orchestrator", &orchestrator_env(&ns, &o).unwrap(), &[]).unwrap();
        let mut gw = Container::start(
            "xin-gateway",
            &gateway_env(&ns, &o).unwrap(),
            &[same_path(&dir)],
        )
        .unwrap();
        serves_and_stops(
            &mut gw,
            &format!("127.0.0.1:{}", o.gateway_port),
            "/ready",
            &format!("127.0.0.1:{}", o.gateway_metrics_port),
        );
        serves_and_stops(
            &mut orch,
            &format!("127.0.0.1:{}", o.orchestrator_port),
            "/ready",
            &format!("127.0.0.1:{}", o.orchestrator_metrics_port),
        );

        // The automation worker, with its service account.
        let a = automation_env(&ns, None, None).unwrap();
        let sa = scratch.join("automation");
        let kubeconfig = service_account_kubeconfig(&ns, "xin-automation", &sa).unwrap();
        let mut a_env = a.env.clone();
        a_env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        let mut auto = Container::start(
            "xin-automation",
            &a_env,
            &service_account_binds(&kubeconfig, &scratch.join("automation-ca")),
        )
        .unwrap();
        serves_and_stops(&mut auto, &a.http, "/ready", &a.metrics);

        // The ingestion worker, as its Job: to completion, reported to the IngestionJob.
        wait_until("the IngestionJob's Job", MINUTE, || {
            get_json(&["ingestionjob", "kb", "-n", &ns])
                .and_then(|j| j.pointer("/status/jobName").cloned())
                .ok_or("no Job yet".to_string())
        });
        let idir = scratch.join("ingest");
        let mut i_env = ingest_env(&ns, "kb", &idir, &IngestOverrides::default()).unwrap();
        let kubeconfig = service_account_kubeconfig(&ns, "xin-ingest", &idir).unwrap();
        i_env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        let mut ingest = Container::start(
            "xin-ingest",
            &i_env,
            &service_account_binds(&kubeconfig, &scratch.join("ingest-ca")),
        )
        .unwrap();
        let status = ingest
            .wait_exit(Duration::from_secs(120))
            .unwrap_or_else(|| panic!("the ingestion run did not end:\n{}", ingest.logs()));
        assert!(
            status.success(),
            "xin-ingest exited with {status}:\n{}",
            ingest.logs()
        );
        let ij = wait_condition("ingestionjob", "kb", &ns, "Complete", "True", MINUTE);
        assert_eq!(str_at(&ij, "/status/phase"), "Succeeded");
        assert_eq!(ij["status"]["chunks"], 1);
    }));
    // The operator's finalizer runs while it still does.
    let gone = delete_tenant_and_wait_with(&name, &ns, || operator_is_running(&mut operator));
    // The operator itself stops cleanly on SIGTERM.
    operator.signal("TERM").unwrap();
    let status = operator.wait_exit(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
    gone.unwrap();
    let status =
        status.unwrap_or_else(|| panic!("the operator ignored SIGTERM:\n{}", operator.logs()));
    assert!(
        status.success(),
        "the operator exited with {status}:\n{}",
        operator.logs()
    );
}

fn operator_is_running(c: &mut Container) -> bool {
    c.wait_exit(Duration::ZERO).is_none()
}
