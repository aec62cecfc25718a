//! Benchmark support: CPU time read from `/proc` (Linux), so a benchmark can say how much of
//! the machine a request cost in PostgreSQL and in the process itself.

use sqlx::PgPool;

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`; 100 when unknown).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields of `/proc/<pid>/stat` after the command name (index 0 is the state, 1 the
/// parent, 11/12 user/system time, 13/14 those of reaped children).
fn stat(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system) a process has used; 0 when it cannot be read.
pub fn process_seconds(pid: u32) -> f64 {
    stat(pid).map_or(0.0, |f| (f[11] + f[12]) as f64 / clock_ticks())
}

/// A PostgreSQL server's CPU, found from one of its connections.
#[derive(Clone, Copy, Debug)]
pub struct ServerCpu {
    postmaster: u32,
    ticks: f64,
}

impl ServerCpu {
    /// The server `pool` is connected to, when it runs on this machine and its processes can
    /// be read.
    pub async fn of(pool: &PgPool) -> Option<ServerCpu> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(pool)
            .await
            .ok()?;
        let postmaster = u32::try_from(*stat(u32::try_from(backend).ok()?)?.get(1)?).ok()?;
        Some(ServerCpu {
            postmaster,
            ticks: clock_ticks(),
        })
    }

    /// CPU seconds of the whole server so far: the postmaster's own, its reaped children's
    /// (backends that ended) and every live child's (backends, background workers).
    pub fn seconds(&self) -> f64 {
        let own = stat(self.postmaster).map_or(0, |f| f[11] + f[12] + f[13] + f[14]);
        let children: u64 = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(stat)
            .filter(|f| f.get(1) == Some(&u64::from(self.postmaster)))
            .map(|f| f[11] + f[12])
            .sum();
        (own + children) as f64 / self.ticks
    }
}
