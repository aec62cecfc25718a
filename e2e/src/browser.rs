//! A real browser for the web widget's tests: Debian's Chromium (`chromium`), driven over
//! WebDriver by its `chromedriver` on loopback with fantoccini, and pages served on a local
//! origin of their own. `make test` installs both packages when they are missing
//! (`e2e/widget.sh browser`); nothing is downloaded at run time.
//!
//! Chromium runs headless, with a fresh profile per session, and without its background
//! services (component updates, sync, metrics): they would only try to reach the network.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
pub use fantoccini;
use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use crate::operator::repo_root;
use crate::workload::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process on loopback; killed (with its browsers) on drop.
pub struct Driver {
    child: Child,
    url: String,
    profiles: PathBuf,
    pub log: PathBuf,
}

impl Driver {
    /// Starts chromedriver and waits until it is ready.
    pub fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: `e2e/widget.sh browser` installs Debian's chromium and chromium-driver (make test runs it)"
            );
        }
        let port = free_port();
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("chromedriver-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let profiles =
            std::env::temp_dir().join(format!("xin-chromium-{}-{port}", std::process::id()));
        let mut d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Ready once it says so and accepts connections.
            if std::fs::read_to_string(&d.log).is_ok_and(|l| l.contains("started successfully"))
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return d;
            }
            if let Ok(Some(s)) = d.child.try_wait() {
                panic!(
                    "chromedriver exited with {s}: {}",
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new browser (headless Chromium, a fresh profile: its own localStorage) with the
    /// browser's language `lang` and a window of 1280 × 900.
    pub async fn session(&self, lang: &str) -> Client {
        std::fs::create_dir_all(&self.profiles).unwrap();
        let profile = self.profiles.join(format!("p{}", free_port()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--no-first-run",
                    "--disable-quic", "--metrics-recording-only", "--hide-scrollbars",
                    "--force-color-profile=srgb", "--window-size=1280,900",
                    format!("--lang={lang}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {"intl.accept_languages": lang},
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a Chromium session: {e}; chromedriver log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// One page a [`Pages`] server serves.
#[derive(Clone, Debug)]
pub struct Page {
    /// Its path (`/`, `/fa` …).
    pub path: String,
    pub html: String,
    /// A `Content-Security-Policy` header to send with it.
    pub csp: Option<String>,
}

/// Serves fixed pages on a local origin (`http://<addr>`) from a thread of its own, until
/// dropped.
pub struct Pages {
    pub origin: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pages {
    /// Binds `addr` (`127.0.0.1:0` for any port; `localhost:18090` for the demo's) and serves
    /// `pages`; `origin_host` is the host name the origin is written with.
    pub fn serve(addr: &str, origin_host: &str, pages: Vec<Page>) -> std::io::Result<Pages> {
        use axum::http::{HeaderValue, header};
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut router = axum::Router::new();
        for p in pages {
            let page = p.clone();
            router = router.route(
                &p.path,
                axum::routing::get(move || {
                    let page = page.clone();
                    async move {
                        let mut r = axum::response::Html(page.html).into_response();
                        let h = r.headers_mut();
                        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        if let Some(csp) = page
                            .csp
                            .as_deref()
                            .and_then(|c| HeaderValue::from_str(c).ok())
                        {
                            h.insert(header::CONTENT_SECURITY_POLICY, csp);
                        }
                        r
                    }
                }),
            );
        }
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the page server");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Pages {
            origin: format!("http://{origin_host}:{port}"),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A page of a made-up shop with the widget's `snippet` in it, in language `lang`.
pub fn widget_page(lang: &str, title: &str, text: &str, snippet: &str) -> String {
    let dir = if lang == "fa" { "rtl" } else { "ltr" };
    format!(
        "<!doctype html>\n<html lang=\"{lang}\" dir=\"{dir}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n</head>\n\
         <body>\n<h1>{title}</h1>\n<p>{text}</p>\n{snippet}\n</body>\n</html>\n"
    )
}
