//! Real PostgreSQL and Redis servers for the tests (Debian's packages,
//! installed by scripts/install-deps.sh test): each on a free loopback
//! port with its data in a temp dir, stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(ip: &str, port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command run in network namespace `ns` (or here).
fn in_ns(ns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    ip: String,
    ns: Option<String>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_at(None, "127.0.0.1", free_port())
    }

    /// In network namespace `ns`, on `ip:port`.
    pub fn start_at(ns: Option<&str>, ip: &str, port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Redis {
            child: None,
            port,
            ip: ip.to_string(),
            ns: ns.map(str::to_string),
            dir,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}/", self.ip, self.port)
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        assert!(
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok(),
            "redis-server is not installed: run ./scripts/test.sh, which installs it"
        );
        let child = in_ns(self.ns.as_deref(), "redis-server")
            .args(["--bind", &self.ip, "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        wait_for_port(&self.ip, self.port, "redis-server");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Postgres {
    pub port: u16,
    ip: String,
    ns: Option<String>,
    dir: PathBuf,
    bin: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Runs a PostgreSQL tool as the `postgres` user (initdb refuses root).
fn as_postgres(ns: Option<&str>, bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    in_ns(ns, "runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .expect("runuser")
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_at(None, "127.0.0.1", free_port())
    }

    /// In network namespace `ns`, on `ip:port`.
    pub fn start_at(ns: Option<&str>, ip: &str, port: u16) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run ./scripts/test.sh, which installs it")
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pg");
        std::fs::create_dir(&dir).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let dir_s = dir.to_str().unwrap().to_string();
        let out = as_postgres(
            None,
            &bin,
            "initdb",
            &["-D", &dir_s, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // the test fleet's nodes connect from their own addresses
        let hba = dir.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap_or_default();
        rules.push_str("\nhost all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, rules).unwrap();
        let pg = Postgres {
            port,
            ip: ip.to_string(),
            ns: ns.map(str::to_string),
            dir,
            bin,
            _tmp: tmp,
        };
        pg.resume();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:{}/postgres", self.ip, self.port)
    }

    /// Starts the server (again).
    pub fn resume(&self) {
        let dir = self.dir.to_str().unwrap();
        let opts = format!("-p {} -k {} -h {}", self.port, dir, self.ip);
        let log = format!("{dir}/log");
        let out = as_postgres(
            self.ns.as_deref(),
            &self.bin,
            "pg_ctl",
            &["-D", dir, "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for_port(&self.ip, self.port, "postgres");
    }

    /// Stops it (fast: open transactions are rolled back).
    pub fn stop(&self) {
        let dir = self.dir.to_str().unwrap();
        let _ = as_postgres(
            self.ns.as_deref(),
            &self.bin,
            "pg_ctl",
            &["-D", dir, "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian's nginx with `deploy/nginx/tribune-hls.conf` in front of a
/// node: its own prefix, cache and logs in a temp dir, in the foreground.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstream: std::net::SocketAddr) -> Nginx {
        let nginx = Path::new("/usr/sbin/nginx");
        assert!(
            nginx.exists(),
            "nginx is not installed: run ./scripts/test.sh, which installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let template =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/tribune-hls.conf");
        let site = std::fs::read_to_string(&template)
            .expect("deploy/nginx/tribune-hls.conf")
            .replace(
                "/var/cache/nginx/tribune-hls",
                &dir.path().join("cache").to_string_lossy(),
            )
            .replace("listen 8088 ", &format!("listen 127.0.0.1:{port} "))
            .replace("127.0.0.1:8089", &format!("127.0.0.1:{}", free_port()));
        std::fs::write(dir.path().join("tribune-hls.conf"), site).unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             upstream tribune {{ server {upstream}; keepalive 16; }}\n  include {d}/tribune-hls.conf;\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        wait_for_port("127.0.0.1", port, "nginx");
        Nginx { child, port, dir }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// nginx's log of requests (one line each).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave
        // them running, orphaned, on the test's port)
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
