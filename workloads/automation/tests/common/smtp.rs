//! The real SMTP server of the e-mail tests: aiosmtpd from `e2e/smtp.sh` (STARTTLS required,
//! AUTH PLAIN/LOGIN, a throwaway CA). Started on first use (a no-op when it runs already) and
//! left running; `make test` stops it at the end, or `e2e/smtp.sh stop`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The script that runs the server.
fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e/smtp.sh").to_string()
}

/// The `key=value` line `smtp.sh start` prints.
pub struct Server {
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    pub user: String,
    pub password: String,
    pub ca: PathBuf,
    pub maildir: PathBuf,
    pub rundir: PathBuf,
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(script())
            .arg("start")
            .output()
            .expect("run smtp.sh");
        assert!(
            out.status.success(),
            "smtp.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let kv: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|p| p.split_once('='))
            .collect();
        Server {
            addr: format!("{}:{}", kv["host"], kv["port"]).parse().unwrap(),
            tls_addr: format!("{}:{}", kv["host"], kv["tls_port"])
                .parse()
                .unwrap(),
            user: kv["user"].into(),
            password: kv["password"].into(),
            ca: kv["ca"].into(),
            maildir: kv["maildir"].into(),
            rundir: kv["rundir"].into(),
        }
    })
}
