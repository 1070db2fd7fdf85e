//! The server as a real process (the `edgeflow` binary), for faults an in-process server cannot
//! show: SIGKILL takes its sockets, its database connections and its memory at once.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD};

pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts `edgeflow serve` on `addr` (port 0: a free one it can be restarted on) against
    /// `database_url`, with the test settings (fast heartbeats, no login rate limits, the test
    /// Owner), and waits until it answers `/healthz`. `extra` sets more EDGEFLOW_* variables.
    /// Its errors go to `<data_dir>/server-<port>.log` (shown if it does not come up), or to this
    /// terminal at the level asked with EDGEFLOW_TEST_CHILD_LOG (e.g. `edgeflow=debug`).
    pub async fn start(database_url: &str, addr: SocketAddr, data_dir: &Path, extra: &[(&str, &str)]) -> Self {
        let addr = if addr.port() == 0 { SocketAddr::new(addr.ip(), super::port_to_keep()) } else { addr };
        let level = std::env::var("EDGEFLOW_TEST_CHILD_LOG").ok();
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log_file = data_dir.join(format!("server-{}.log", addr.port()));
        let stderr = match &level {
            Some(_) => Stdio::inherit(),
            None => Stdio::from(std::fs::File::create(&log_file).expect("server log file")),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .env("DATABASE_URL", database_url)
            .env("EDGEFLOW_LISTEN", addr.to_string())
            .env("EDGEFLOW_DATA_DIR", data_dir)
            .env("EDGEFLOW_ADMIN_EMAIL", OWNER_EMAIL)
            .env("EDGEFLOW_ADMIN_PASSWORD", OWNER_PASSWORD)
            .env("EDGEFLOW_HEARTBEAT_SECONDS", "1")
            .env("EDGEFLOW_OFFLINE_AFTER_SECONDS", "3")
            .env("EDGEFLOW_DB_MAX_CONNECTIONS", "4")
            .env("EDGEFLOW_RATE_LIMIT_LOGIN_PER_IP", "0")
            .env("EDGEFLOW_RATE_LIMIT_LOGIN_PER_ACCOUNT", "0")
            .envs(extra.iter().copied())
            .env("RUST_LOG", level.as_deref().unwrap_or("error"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start the server binary");
        let mut server = Self { addr, child };
        let client = reqwest::Client::new();
        let healthz = format!("{}/healthz", server.url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.get(&healthz).send().await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            let exited = server.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let _ = server.child.start_kill();
                let _ = server.child.wait().await;
                let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                let tail = &log[log.len().saturating_sub(2000)..];
                panic!("the server process did not come up on {addr} ({exited:?}):\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no goodbyes, no clean-up, sockets and database connections cut by the kernel.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill the server process");
        self.child.wait().await.expect("reap the server process");
    }
}
