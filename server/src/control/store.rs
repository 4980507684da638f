//! Control-plane persistence: spaces, in embedded SQLite by default or in
//! PostgreSQL when nodes share it (`--database postgres://…`). One code
//! path for both through sqlx's `Any` driver: the same queries, the same
//! row mapping, and migrations that are the same steps in each dialect
//! (`migrations/sqlite`, `migrations/postgres`).

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use tribune_core::space::SpaceState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceRow {
    pub id: String,
    pub title: String,
    pub state: SpaceState,
    pub created_by: String,
    pub created_at: u64,
    pub scheduled_at: Option<u64>,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub peak_listeners: u64,
    /// Only listeners with a token for this space may listen.
    pub private: bool,
    /// Packets and audio duration of the program, recorded when it ends.
    pub packets: u64,
    pub duration_ms: u64,
    /// The name people see for the host.
    pub host_name: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where it is, for messages (never the password).
    pub kind: &'static str,
}

fn to_u64(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

fn from_u64(v: Option<u64>) -> Option<i64> {
    v.and_then(|v| i64::try_from(v).ok())
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// `database`: a `postgres://` URL, or `None` for SQLite at `sqlite_path`.
    pub async fn open(database: Option<&str>, sqlite_path: &Path) -> Result<Store, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let (url, kind) = match database {
            Some(url) => (url.to_string(), "postgres"),
            None => (
                format!("sqlite://{}?mode=rwc", sqlite_path.display()),
                "sqlite",
            ),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == "sqlite" { 4 } else { 8 })
            // a database that is down answers in seconds, not minutes
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == "sqlite" {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        if kind == "sqlite" {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        Ok(Store { pool, kind })
    }

    pub async fn insert(&self, s: &SpaceRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO spaces (id, title, state, created_by, created_at, scheduled_at, started_at, ended_at, peak_listeners, private, host_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&s.id)
        .bind(&s.title)
        .bind(s.state.as_str())
        .bind(&s.created_by)
        .bind(int(s.created_at))
        .bind(from_u64(s.scheduled_at))
        .bind(from_u64(s.started_at))
        .bind(from_u64(s.ended_at))
        .bind(int(s.peak_listeners))
        .bind(i64::from(s.private))
        .bind(s.host_name.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn update(&self, s: &SpaceRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE spaces SET state = $1, started_at = $2, ended_at = $3, peak_listeners = $4, packets = $5, duration_ms = $6 \
             WHERE id = $7",
        )
        .bind(s.state.as_str())
        .bind(from_u64(s.started_at))
        .bind(from_u64(s.ended_at))
        .bind(int(s.peak_listeners))
        .bind(int(s.packets))
        .bind(int(s.duration_ms))
        .bind(&s.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn all(&self) -> Result<Vec<SpaceRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, title, state, created_by, created_at, scheduled_at, started_at, ended_at, \
             peak_listeners, private, packets, duration_ms, host_name FROM spaces ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(SpaceRow {
                    id: r.try_get("id")?,
                    title: r.try_get("title")?,
                    state: SpaceState::from_str(&state)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?,
                    created_by: r.try_get("created_by")?,
                    created_at: to_u64(r.try_get("created_at")?).unwrap_or(0),
                    scheduled_at: to_u64(r.try_get("scheduled_at")?),
                    started_at: to_u64(r.try_get("started_at")?),
                    ended_at: to_u64(r.try_get("ended_at")?),
                    peak_listeners: to_u64(r.try_get("peak_listeners")?).unwrap_or(0),
                    private: r.try_get::<i64, _>("private")? != 0,
                    packets: to_u64(r.try_get("packets")?).unwrap_or(0),
                    duration_ms: to_u64(r.try_get("duration_ms")?).unwrap_or(0),
                    host_name: r.try_get("host_name")?,
                })
            })
            .collect()
    }
}
