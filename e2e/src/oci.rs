//! The images `e2e/images.sh` builds, run as containers by an OCI runtime: Debian's `runc`,
//! from a bundle `umoci unpack` makes of the image (its entrypoint, user and environment from
//! the image's configuration), with a read-only root filesystem as the operator renders it.
//! The container shares the host's network namespace (so a test reaches it on loopback and it
//! reaches the local PostgreSQL and API server); everything else is its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::operator::repo_root;
use crate::workload::free_port;

/// The OCI layout of image `name` (`target/images/<name>`).
pub fn layout(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("images").join(name)
}

/// The version tag `e2e/images.sh` gives every image.
pub fn version_tag() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} {:?}: {}{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Unpacks image `name:tag` into a new bundle directory (`rootfs/` and `config.json`).
pub fn unpack(name: &str, tag: &str) -> Result<PathBuf, String> {
    let l = layout(name);
    if !l.join("index.json").exists() {
        return Err(format!(
            "{} is missing: `e2e/images.sh build` (make images; make test builds them) makes it",
            l.display()
        ));
    }
    let bundle = std::env::temp_dir().join(format!(
        "xin-bundle-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", l.display()))
        .arg(&bundle))?;
    Ok(bundle)
}

/// A bind mount into the container: `source` on the host at `destination`.
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// One container run by runc in the foreground; killed and deleted on drop.
pub struct Container {
    pub id: String,
    child: Child,
    bundle: PathBuf,
    pub log: PathBuf,
}

impl Container {
    /// Runs image `name` (the version tag) with `env` added to the image's environment
    /// (replacing variables of the same name) and `binds` mounted.
    pub fn start(name: &str, env: &[(String, String)], binds: &[Bind]) -> Result<Self, String> {
        let bundle = unpack(name, &version_tag())?;
        let file = bundle.join("config.json");
        let mut config: Value = serde_json::from_slice(
            &std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?,
        )
        .map_err(|e| e.to_string())?;
        let process = &mut config["process"];
        let mut vars: Vec<String> = process["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .filter(|v| {
                let k = v.split('=').next().unwrap_or_default();
                !env.iter().any(|(n, _)| n == k)
            })
            .map(str::to_string)
            .collect();
        vars.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        process["env"] = json!(vars);
        process["terminal"] = json!(false);
        // As the operator renders every workload: a read-only root filesystem.
        config["root"]["readonly"] = json!(true);
        if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        let mounts = config["mounts"].as_array_mut().ok_or("no mounts")?;
        for b in binds {
            mounts.push(json!({
                "destination": b.destination,
                "type": "bind",
                "source": b.source,
                "options": ["rbind", if b.read_only { "ro" } else { "rw" }],
            }));
        }
        std::fs::write(&file, config.to_string()).map_err(|e| e.to_string())?;
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let id = format!("xin-{name}-{}-{}", std::process::id(), free_port());
        let log = logs.join(format!("{id}.log"));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("runc: {e}"))?;
        Ok(Container {
            id,
            child,
            bundle,
            log,
        })
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET http://addr/path` answers 200 (at most 60 s), or the container exits.
    pub fn wait_http(&mut self, addr: &str, path: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Err(format!("{} exited with {s}:\n{}", self.id, self.logs()));
            }
            if let Some((200, body)) = crate::http_get(addr, path) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                return Err(format!("{addr}{path} not 200 after 60 s:\n{}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `signal` to the container's process (`runc kill`).
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        run(Command::new("runc").args(["kill", &self.id, signal])).map(|_| ())
    }

    /// The exit status, waiting at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::workload::wait_child(&mut self.child, timeout)
    }

    /// The bundle's root filesystem (what the image holds).
    pub fn rootfs(&self) -> &Path {
        &self.bundle
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("runc")
                .args(["kill", &self.id, "KILL"])
                .output();
            let _ = self.child.wait();
        }
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .output();
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}
