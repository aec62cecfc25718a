//! Workload binaries as real processes, and local HTTP stand-ins for the providers we cannot
//! reach (Telegram, Meta, the LLM, an OTLP collector). A stand-in records every request and
//! answers with what the test tells it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::operator::repo_root;

/// A free TCP port on loopback for a process the test starts. Ports come from 20000–29999,
/// below Linux's ephemeral range (32768–60999), so a socket bound to port 0 meanwhile (a
/// stand-in, a client) cannot take one between this check and the process's own bind; and
/// one test process never hands out the same port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 10_000, "no free port left in 20000–29999");
        let port = 20_000 + (start.wrapping_add(n) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Path of a workspace binary built by `cargo test --workspace` / `cargo build --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let p = target.join("debug").join(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (make test does)",
        p.display()
    );
    p
}

/// One workload process, its output in `target/e2e-logs/<name>-<pid>.log`; killed on drop.
pub struct Workload {
    child: Child,
    pub log: PathBuf,
}

impl Workload {
    pub fn start(bin: &str, name: &str, env: &[(String, String)]) -> Self {
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let logs = logs.canonicalize().unwrap_or(logs);
        let log = logs.join(format!("{name}-{}-{}.log", std::process::id(), free_port()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(binary(bin));
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for v in [
            "OTEL_EXPORTER_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "DATABASE_URL",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {bin}: {e}"));
        Workload { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET http://addr/path` answers 200, or the process exits.
    pub fn wait_ready(&mut self, addr: &str, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status}:\n{}",
                    self.log.display(),
                    self.logs()
                );
            }
            // 200 from this process: it logs the address it serves on (a process that lost
            // its port exits, and something else may be answering there).
            if crate::http_get(addr, path).is_some_and(|(s, _)| s == 200)
                && self.logs().contains(&format!("\"addr\":\"{addr}\""))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr}{path} not ready after 60 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: nothing in flight gets finished.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit (at most 20 s) and returns whether it was a success.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// The exit status, waiting at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

/// The exit status of `child`, waiting at most `timeout` (a zero timeout looks once).
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A request a stand-in received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What a stand-in answers: status, JSON body, delay.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Answer {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>;

/// A local HTTP server standing in for an external provider, on its own thread.
pub struct StandIn {
    pub addr: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StandIn {
    pub fn start(respond: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", respond)
    }

    pub fn start_on(
        bind: &str,
        respond: impl Fn(&Recorded) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let respond: Responder = Arc::new(respond);
        let listener = std::net::TcpListener::bind(bind).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let (seen, respond) = (s2.clone(), respond.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, 64 << 20)
                            .await
                            .unwrap_or_default()
                            .to_vec();
                        let rec = Recorded {
                            method: parts.method.to_string(),
                            path: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect(),
                            body,
                        };
                        let a = respond(&rec);
                        seen.lock().unwrap().push(rec);
                        tokio::time::sleep(a.delay).await;
                        axum::response::Response::builder()
                            .status(a.status)
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from(a.body))
                            .unwrap()
                    }
                });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        StandIn {
            addr,
            seen,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the requests seen so far.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "stand-in {}: {what} not seen within {timeout:?}; saw {:#?}",
                self.addr,
                r.iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
