//! A real PostgreSQL server for tests: its own data directory in a temporary directory, on a free loopback port,
//! stopped when dropped. Uses the `initdb`/`pg_ctl` of Debian's `postgresql` package (`scripts/setup-postgres.sh`
//! installs it; `RLM_PG_BIN` names another directory). PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` user through `runuser`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Why a test server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): run scripts/setup-postgres.sh, or set RLM_PG_BIN to the directory of initdb and pg_ctl"
    )]
    NotInstalled,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{tool} failed: {output}")]
    Tool { tool: String, output: String },
}

/// A PostgreSQL server of its own; stopped (immediately) when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_root: bool,
}

fn postgres_bin() -> Result<PathBuf, PostgresError> {
    if let Some(dir) = std::env::var_os("RLM_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or(PostgresError::NotInstalled)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PostgresServer {
    /// initdb + start (under a second here).
    pub fn start() -> Result<Self, PostgresError> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new().prefix("rlm-pg-").tempdir()?;
        let as_root = is_root();
        if as_root {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?;
            if !status.success() {
                return Err(PostgresError::Tool { tool: "chown".into(), output: dir.path().display().to_string() });
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = Self { dir, bin, port, as_root };
        let data = server.data_dir().display().to_string();
        server
            .pg("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"])?;
        server.start_again()?;
        Ok(server)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(exe);
            command
        } else {
            Command::new(exe)
        }
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Result<(), PostgresError> {
        let output = self.command(tool).args(args).stdin(Stdio::null()).output()?;
        if output.status.success() {
            Ok(())
        } else {
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            Err(PostgresError::Tool { tool: tool.to_owned(), output: text })
        }
    }

    /// Starts the server (again, after [`PostgresServer::stop`]) on the same port and data.
    pub fn start_again(&self) -> Result<(), PostgresError> {
        let data = self.data_dir().display().to_string();
        let log = self.dir.path().join("log").display().to_string();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.path().display()
        );
        self.pg("pg_ctl", &["-D", &data, "-w", "-l", &log, "-o", &options, "start"])
    }

    /// Stops the server, keeping its data.
    pub fn stop(&self) -> Result<(), PostgresError> {
        self.pg("pg_ctl", &["-D", &self.data_dir().display().to_string(), "-w", "-m", "fast", "stop"])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.command("pg_ctl").arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
    }
}
