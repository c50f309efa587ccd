//! A throwaway PostgreSQL cluster (initdb + pg_ctl in a temporary directory) that a test may stop
//! and restart without touching the shared server. Uses only std, so the CLI tests share it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running throwaway cluster; stopped (immediately) when dropped.
pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// Where `initdb` and `pg_ctl` live: `TAPEDECK_PG_BIN`, a Debian `/usr/lib/postgresql/*/bin`,
/// or the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TAPEDECK_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort();
    if let Some(last) = found.pop() {
        return Some(last);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// Starts a cluster, or says why it cannot (and fails under `CI=true`).
    pub fn start(test: &str) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            let why = "no initdb/pg_ctl found (set TAPEDECK_PG_BIN)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but {why}");
            }
            eprintln!("skipping {test}: {why}");
            return None;
        };
        let root = std::env::temp_dir().join(format!(
            "tapedeck-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(root.join("data")).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to the `postgres` user.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .unwrap();
            assert!(status.success(), "chown of {} failed", root.display());
        }
        let cluster = Cluster {
            root,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = cluster.root.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start_again();
        Some(cluster)
    }

    /// `tool` from the cluster's bin directory, run as the cluster's owner.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections. The WAL writer runs
    /// only every 10 s, so a crash (`stop("immediate")`) loses the asynchronous commits since the
    /// last synchronous one — the case a sink must survive.
    pub fn start_again(&self) {
        let data = self.root.join("data");
        let log = self.root.join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20 -c wal_writer_delay=10s",
            self.port,
            path(&self.root)
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server: `mode` is pg_ctl's `fast` (clean) or `immediate` (a crash).
    pub fn stop(&self, mode: &str) {
        let data = self.root.join("data");
        self.run("pg_ctl", &["-D", path(&data), "-w", "-m", mode, "stop"]);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.root.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", path(&data), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
