//! A private PostgreSQL cluster for one test, to stop and start at will without touching the
//! shared one: `initdb` into a temporary directory, a free TCP port on 127.0.0.1, trust auth.
//! PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::Command;

pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with the server programs, or the directory
/// `pg_config --bindir` names.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .collect();
    versions.sort();
    let packaged = versions.into_iter().rev().map(|(_, bin)| bin);
    let configured = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    packaged.chain(configured).find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
}

impl Cluster {
    /// Makes and starts a new cluster. Fails the test with a clear message when the PostgreSQL
    /// server programs are not installed.
    pub async fn start() -> Self {
        let bin = server_binaries().expect(
            "these fault tests run a private PostgreSQL cluster and need its server programs (initdb, pg_ctl): \
             none found in /usr/lib/postgresql/*/bin or `pg_config --bindir`; install the `postgresql` package \
             (.ci/run does when it is missing)",
        );
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir = std::env::temp_dir().join(format!("edgeflow-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        if as_postgres {
            let owned = std::process::Command::new("chown").arg("postgres:postgres").arg(&dir).status();
            assert!(owned.is_ok_and(|s| s.success()), "cannot give {} to the postgres user", dir.display());
        }
        let cluster = Self { bin, dir, port: super::port_to_keep(), as_postgres };
        let data = cluster.data_dir();
        cluster
            .run(
                "initdb",
                &["-D", path(&data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            )
            .await;
        cluster.start_again().await;
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the (stopped) cluster on its port and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off \
             -c shared_buffers=16MB -c max_connections=60",
            self.port,
            self.dir.display()
        );
        let (data, log) = (self.data_dir(), self.dir.join("postgres.log"));
        self.run("pg_ctl", &["-D", path(&data), "-l", path(&log), "-o", &options, "-w", "-t", "30", "start"]).await;
    }

    /// Stops the cluster: `fast` (sessions are told and disconnected) or `immediate` (as a crash).
    pub async fn stop(&self, mode: &str) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", path(&data), "-m", mode, "-w", "-t", "30", "stop"]).await;
    }

    /// The program, run as the `postgres` user when we are root.
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut runuser = std::process::Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            std::process::Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let mut command = Command::from(self.command(program));
        let output = command.args(args).kill_on_drop(true).output().await.expect("run a PostgreSQL program");
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\n{log}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .args(["-D", path(&data), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
