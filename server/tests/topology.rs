//! The fleet under the failures large events meet, on a real topology:
//! network namespaces built by scripts/topology.sh (an origin, two edges on
//! it, an edge on an edge, PostgreSQL and Redis on a host of their own),
//! listeners from `tribune-load` validating every byte. Needs root (as CI
//! runs) for `ip netns`.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::services::{Postgres, Redis};
use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/topology.sh");

/// The topology exists while this lives.
struct Topology;

impl Topology {
    fn up() -> Topology {
        let out = Command::new(SCRIPT)
            .arg("up")
            .output()
            .expect("topology.sh");
        assert!(
            out.status.success(),
            "scripts/topology.sh up (needs root and iproute2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Topology
    }

    fn run(args: &[&str]) {
        let out = Command::new(SCRIPT)
            .args(args)
            .output()
            .expect("topology.sh");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("down").status();
    }
}

/// A node in its namespace, on both of its networks.
struct Node {
    child: Child,
    ns: &'static str,
    args: Vec<String>,
    /// Where listeners reach it.
    access: String,
}

impl Node {
    fn start(ns: &'static str, host: u8, data: &Path, extra: &[String]) -> Node {
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            "0.0.0.0:8080".into(),
            "--rtc-listen".into(),
            "0.0.0.0:8080".into(),
            "--public-url".into(),
            format!("http://10.77.2.{host}:8080"),
            "--node-name".into(),
            ns.trim_start_matches("tn-").into(),
            // the listeners of this test come from a few addresses
            "--per-ip-connections".into(),
            "0".into(),
            "--per-subnet-connections".into(),
            "0".into(),
            "--joins-per-ip".into(),
            "0".into(),
            "--data".into(),
        ];
        args.push(data.to_str().unwrap().to_string());
        args.extend(extra.iter().cloned());
        let mut node = Node {
            child: Command::new("true").spawn().unwrap(),
            ns,
            args,
            access: format!("http://10.77.2.{host}:8080"),
        };
        node.restart();
        node
    }

    fn restart(&mut self) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.ns, env!("CARGO_BIN_EXE_tribune")])
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tribune in its namespace");
        let start = Instant::now();
        loop {
            if healthy(self.addr()) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited: {status}", self.ns);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not start",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = child;
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.access.trim_start_matches("http://").parse().unwrap()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn info(&self, id: &str) -> Value {
        request(self.addr(), "GET", &format!("/api/spaces/{id}"), &[], None).json()
    }

    fn metrics(&self) -> String {
        request(self.addr(), "GET", "/metrics", &[], None).text()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The node answers `/healthz` (no panic while it is not up yet).
fn healthy(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

fn tribune_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_tribune")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built: ./scripts/test.sh builds the workspace first",
        path.display()
    );
    path
}

/// `tribune-load listen` in the background; its report as JSON.
fn listeners(url: &str, n: usize, secs: u64, failover: &[&str], json: &Path) -> Child {
    let mut cmd = Command::new(tribune_bin("tribune-load"));
    cmd.args([
        "listen",
        url,
        "--listeners",
        &n.to_string(),
        "--ramp",
        "200",
    ])
    .args(["--duration", &secs.to_string(), "--answer-timeout", "5"])
    .args([
        "--bind",
        "10.77.2.10,10.77.2.11,10.77.2.12,10.77.2.13",
        "--json",
    ])
    .arg(json)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if !failover.is_empty() {
        cmd.args(["--failover", &failover.join(",")]);
    }
    cmd.spawn().expect("tribune-load")
}

fn report(mut child: Child, json: &Path) -> Value {
    let status = child.wait();
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no tribune-load report ({status:?}): {e}"));
    serde_json::from_str(&text).expect("JSON report")
}

fn source(origin: &Node, id: &str, token: &str, secs: u64) -> Child {
    Command::new(tribune_bin("tribune-load"))
        .args([
            "source",
            &format!("http://10.77.1.2:8080/spaces/{id}/source"),
        ])
        .args(["--token", token, "--seconds", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("source for {}: {e}", origin.ns))
}

#[test]
fn the_fleet_holds_through_failures_on_a_real_topology() {
    let _topology = Topology::up();
    let pg = Postgres::start_at(Some("tn-db"), "10.77.1.6", 5432);
    let mut redis = Redis::start_at(Some("tn-db"), "10.77.1.6", 6379);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let shared = vec![
        "--database".to_string(),
        pg.url(),
        "--redis".into(),
        redis.url(),
    ];
    let mut origin = Node::start("tn-origin", 2, dirs[0].path(), &shared);
    let node_token = {
        let out = Command::new(env!("CARGO_BIN_EXE_tribune"))
            .args(["token", "--data"])
            .arg(dirs[0].path())
            .args(["--role", "node", "--ttl", "1h"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let edge_args = |upstream: &str| {
        let mut a = vec![
            "--upstream".to_string(),
            upstream.to_string(),
            "--node-token".into(),
            node_token.clone(),
            "--redis".into(),
            redis.url(),
        ];
        a.extend(["--max-listeners".to_string(), "5000".into()]);
        a
    };
    let mut edge1 = Node::start(
        "tn-edge1",
        3,
        dirs[1].path(),
        &edge_args("http://10.77.1.2:8080"),
    );
    let edge2 = Node::start(
        "tn-edge2",
        4,
        dirs[2].path(),
        &edge_args("http://10.77.1.2:8080"),
    );
    let edge3 = Node::start(
        "tn-edge3",
        5,
        dirs[3].path(),
        &edge_args("http://10.77.1.3:8080"),
    );

    // a space, its source on the origin's core address
    let admin = {
        let out = Command::new(env!("CARGO_BIN_EXE_tribune"))
            .args(["token", "--data"])
            .arg(dirs[0].path())
            .args(["--role", "admin", "--ttl", "1h"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let r = request(
        origin.addr(),
        "POST",
        "/api/spaces",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"title":"Topology"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let host = r.json()["host_token"].as_str().unwrap().to_string();
    let r = request(
        origin.addr(),
        "POST",
        &format!("/api/spaces/{id}/start"),
        &[("Authorization", &format!("Bearer {host}"))],
        None,
    );
    assert_eq!(r.status, 200);
    let mut src = source(&origin, &id, &host, 600);
    assert!(eventually(Duration::from_secs(10), || {
        origin.info(&id)["packets"].as_u64().unwrap_or(0) > 100
    }));
    let tmp = tempfile::tempdir().unwrap();
    let live = |node: &Node| format!("{}/spaces/{id}/live.opus", node.access);

    // 1. an edge killed with listeners on it: each reconnects to another
    //    node within 3 s and resumes with no seq gap
    let json = tmp.path().join("failover.json");
    let load = listeners(
        &live(&edge1),
        60,
        16,
        &[&edge2.access, &origin.access],
        &json,
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(eventually(Duration::from_secs(5), || origin.info(&id)
        ["listeners"]
        == 60));
    edge1.kill9();
    let r = report(load, &json);
    assert_eq!(r["validation_faults"], serde_json::json!({}), "{r}");
    assert_eq!(r["failover"]["reconnections"], 60, "{r}");
    assert_eq!(r["failover"]["resumed_with_a_seq_gap"], 0, "{r}");
    assert!(
        r["failover"]["reconnect_ms"]["max"].as_u64().unwrap() <= 3_000,
        "{r}"
    );
    // and the space's fleet-wide count settles back (edge 1's entry expires)
    assert!(
        eventually(Duration::from_secs(15), || origin.info(&id)["listeners"]
            == 0),
        "{}",
        origin.info(&id)
    );
    edge1.restart();

    // 2. the relay link of an edge cut for 5 s: its listeners stay, hear a
    //    gap no longer than the cut and a second, and the edge resumes by seq
    let json = tmp.path().join("cut.json");
    let load = listeners(&live(&edge2), 40, 16, &[], &json);
    std::thread::sleep(Duration::from_secs(4));
    Topology::run(&["cut", "edge2", "5"]);
    let r = report(load, &json);
    assert_eq!(
        r["passed"].as_u64().unwrap() + r["failed"].as_u64().unwrap(),
        40
    );
    assert_eq!(r["validation_faults"], serde_json::json!({}), "{r}");
    assert_eq!(r["ended_by"]["deadline"], 40, "all stayed connected: {r}");
    let stalled_per_listener = r["stall_seconds"].as_f64().unwrap() / 40.0;
    assert!(
        stalled_per_listener <= 6.0,
        "{stalled_per_listener} s of stall each: {r}"
    );
    let m = edge2.metrics();
    assert!(
        metric(&m, "tribune_relay_reconnects_total", "") >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "tribune_relay_gaps_total", ""), 0.0, "{m}");

    // 3. the origin killed and restarted: the edges keep their listeners,
    //    the track resumes from the recording with seq continuing
    let json = tmp.path().join("origin.json");
    let load = listeners(&live(&edge3), 40, 18, &[], &json);
    std::thread::sleep(Duration::from_secs(4));
    let before = edge2.info(&id)["packets"].as_u64().unwrap();
    origin.kill9();
    let _ = src.kill();
    let _ = src.wait();
    std::thread::sleep(Duration::from_secs(2));
    origin.restart();
    let recovered = origin.info(&id)["packets"].as_u64().unwrap();
    assert!(
        recovered + 50 >= before,
        "the recording lost more than 1 s: {recovered} of {before} packets"
    );
    src = source(&origin, &id, &host, 600);
    let r = report(load, &json);
    assert_eq!(r["validation_faults"], serde_json::json!({}), "{r}");
    assert_eq!(r["ended_by"]["deadline"], 40, "all stayed connected: {r}");

    // 4. Redis killed: nodes serve and admit on their own
    redis.kill();
    let json = tmp.path().join("redis.json");
    let r = report(listeners(&live(&edge2), 20, 6, &[], &json), &json);
    assert_eq!(r["passed"], 20, "{r}");
    redis.restart();

    let _ = src.kill();
    let _ = src.wait();
    drop((edge1, edge2, edge3, origin));
}
