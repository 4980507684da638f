//! The fleet, in Redis (`--redis redis://…`): a directory of nodes (each
//! node's address, role, capacity, listeners, health and relay lag, kept
//! by a heartbeat with a TTL) and the listener counts of every space on
//! every node, so a space's count and peak are the sum over the fleet and a
//! full node can send a listener to one with room.
//!
//! Redis is an aid, never a dependency of the audio: when it is down a
//! node keeps serving and admitting by its own capacity, shows its own
//! counts, and catches up when Redis is back.

use crate::clock::wall_ms;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How often a node says it is alive, and how long the fleet believes it.
const HEARTBEAT: Duration = Duration::from_secs(1);
const TTL_SECS: i64 = 5;
/// A fleet view older than this is not trusted (Redis is gone).
const STALE: Duration = Duration::from_secs(5);

/// One node, as the directory knows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub url: String,
    pub role: String,
    pub capacity: u64,
    pub listeners: u64,
    pub healthy: bool,
    pub relay_lag_ms: u64,
    pub updated_ms: u64,
    /// Listeners per space on this node.
    pub spaces: HashMap<String, u64>,
}

impl NodeStatus {
    /// Listeners it may still admit.
    pub fn room(&self) -> u64 {
        if self.healthy {
            self.capacity.saturating_sub(self.listeners)
        } else {
            0
        }
    }
}

/// What this node reports each heartbeat.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub listeners: u64,
    pub healthy: bool,
    pub relay_lag_ms: u64,
    pub spaces: HashMap<String, u64>,
}

#[derive(Default)]
struct View {
    nodes: Vec<NodeStatus>,
    peaks: HashMap<String, u64>,
    at: Option<Instant>,
}

pub struct Fleet {
    client: redis::Client,
    /// This node's entry.
    pub me: NodeStatus,
    view: RwLock<View>,
}

/// Keeps the highest value seen: the fleet-wide peak of a space.
const MAX_SCRIPT: &str = r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if n > v then redis.call('SET', KEYS[1], ARGV[1]) return n end
return v";

impl Fleet {
    pub fn new(
        url: &str,
        name: &str,
        node_url: &str,
        role: &str,
        capacity: u64,
    ) -> Result<Fleet, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis {url}: {e}"))?;
        Ok(Fleet {
            client,
            me: NodeStatus {
                name: name.to_string(),
                url: node_url.to_string(),
                role: role.to_string(),
                capacity,
                ..Default::default()
            },
            view: RwLock::new(View::default()),
        })
    }

    /// The nodes alive at the last heartbeat, when that view is fresh.
    pub fn nodes(&self) -> Option<Vec<NodeStatus>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.at
            .filter(|at| at.elapsed() < STALE)
            .map(|_| view.nodes.clone())
    }

    /// A space's listeners over the fleet and its fleet-wide peak, when
    /// the view is fresh.
    pub fn space_totals(&self, space: &str) -> Option<(u64, u64)> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.at.filter(|at| at.elapsed() < STALE)?;
        let total: u64 = view.nodes.iter().filter_map(|n| n.spaces.get(space)).sum();
        let peak = view.peaks.get(space).copied().unwrap_or(0).max(total);
        Some((total, peak))
    }

    /// Another node with room for one more listener, the most room first;
    /// `None` when there is none (or Redis is gone).
    pub fn alternates(&self) -> Vec<NodeStatus> {
        let mut others: Vec<NodeStatus> = self
            .nodes()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.name != self.me.name && n.room() > 0)
            .collect();
        others.sort_by_key(|n| std::cmp::Reverse(n.room()));
        others
    }

    /// Heartbeats forever: reports `report()` and refreshes the view. A
    /// failed beat is logged (once per outage) and retried at the next.
    pub async fn run(&self, report: impl Fn() -> Report) {
        let mut conn: Option<ConnectionManager> = None;
        let mut down_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if conn.is_none() {
                conn = tokio::time::timeout(HEARTBEAT, self.client.get_connection_manager())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let result = match conn.as_mut() {
                Some(c) => tokio::time::timeout(HEARTBEAT * 2, self.beat(c, report()))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into())),
                None => Err("cannot connect".into()),
            };
            metrics::gauge!("tribune_fleet_up").set(if result.is_ok() { 1.0 } else { 0.0 });
            match result {
                Ok(()) => {
                    if let Some(since) = down_since.take() {
                        tracing::info!(
                            after_s = since.elapsed().as_secs(),
                            "Redis is back: fleet counts resume"
                        );
                    }
                }
                Err(e) => {
                    if down_since.is_none() {
                        tracing::warn!(error = %e, "Redis unavailable: serving with this node's own counts");
                        down_since = Some(Instant::now());
                    }
                    conn = None;
                }
            }
        }
    }

    async fn beat(&self, c: &mut ConnectionManager, report: Report) -> Result<(), String> {
        let err = |e: redis::RedisError| e.to_string();
        let me = format!("tribune:node:{}", self.me.name);
        let mine = format!("{me}:spaces");
        let now = wall_ms();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &me,
                &[
                    ("url", self.me.url.clone()),
                    ("role", self.me.role.clone()),
                    ("capacity", self.me.capacity.to_string()),
                    ("listeners", report.listeners.to_string()),
                    ("healthy", u8::from(report.healthy).to_string()),
                    ("relay_lag_ms", report.relay_lag_ms.to_string()),
                    ("updated_ms", now.to_string()),
                ],
            )
            .ignore()
            .expire(&me, TTL_SECS)
            .ignore()
            .del(&mine)
            .ignore();
        let spaces: Vec<(&String, u64)> = report.spaces.iter().map(|(k, v)| (k, *v)).collect();
        if !spaces.is_empty() {
            pipe.hset_multiple(&mine, &spaces)
                .ignore()
                .expire(&mine, TTL_SECS)
                .ignore();
        }
        pipe.sadd("tribune:nodes", &self.me.name).ignore();
        pipe.query_async::<()>(c).await.map_err(err)?;

        let names: Vec<String> = c.smembers("tribune:nodes").await.map_err(err)?;
        let mut read = redis::pipe();
        for n in &names {
            read.hgetall(format!("tribune:node:{n}"))
                .hgetall(format!("tribune:node:{n}:spaces"));
        }
        type Fields = HashMap<String, String>;
        let replies: Vec<Fields> = read.query_async(c).await.map_err(err)?;
        let mut nodes = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let (Some(info), Some(spaces)) = (replies.get(2 * i), replies.get(2 * i + 1)) else {
                continue;
            };
            if info.is_empty() {
                // its heartbeat expired: it is gone
                let _: Result<(), _> = c.srem("tribune:nodes", n).await;
                continue;
            }
            let num = |k: &str| info.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            nodes.push(NodeStatus {
                name: n.clone(),
                url: info.get("url").cloned().unwrap_or_default(),
                role: info.get("role").cloned().unwrap_or_default(),
                capacity: num("capacity"),
                listeners: num("listeners"),
                healthy: num("healthy") == 1,
                relay_lag_ms: num("relay_lag_ms"),
                updated_ms: num("updated_ms"),
                spaces: spaces
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?)))
                    .collect(),
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        // each space this node carries: the fleet total feeds the peak
        let script = redis::Script::new(MAX_SCRIPT);
        let mut peaks = HashMap::new();
        for space in report.spaces.keys() {
            let total: u64 = nodes.iter().filter_map(|n| n.spaces.get(space)).sum();
            let peak: u64 = script
                .key(format!("tribune:space:{space}:peak"))
                .arg(total)
                .invoke_async(c)
                .await
                .map_err(err)?;
            peaks.insert(space.clone(), peak);
        }
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = View {
            nodes,
            peaks,
            at: Some(Instant::now()),
        };
        Ok(())
    }
}
