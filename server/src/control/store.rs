//! Control-plane persistence: spaces in SQLite (sqlx, with migrations).

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
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
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn to_u64(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

fn from_u64(v: Option<u64>) -> Option<i64> {
    v.and_then(|v| i64::try_from(v).ok())
}

impl Store {
    pub async fn open(path: &Path) -> Result<Store, sqlx::Error> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn insert(&self, s: &SpaceRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO spaces (id, title, state, created_by, created_at, scheduled_at, started_at, ended_at, peak_listeners, private) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.title)
        .bind(s.state.as_str())
        .bind(&s.created_by)
        .bind(s.created_at as i64)
        .bind(from_u64(s.scheduled_at))
        .bind(from_u64(s.started_at))
        .bind(from_u64(s.ended_at))
        .bind(s.peak_listeners as i64)
        .bind(s.private)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn update(&self, s: &SpaceRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE spaces SET state = ?, started_at = ?, ended_at = ?, peak_listeners = ?, packets = ?, duration_ms = ? \
             WHERE id = ?",
        )
        .bind(s.state.as_str())
        .bind(from_u64(s.started_at))
        .bind(from_u64(s.ended_at))
        .bind(s.peak_listeners as i64)
        .bind(s.packets as i64)
        .bind(s.duration_ms as i64)
        .bind(&s.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn all(&self) -> Result<Vec<SpaceRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM spaces ORDER BY created_at")
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
                    private: r.try_get("private")?,
                    packets: to_u64(r.try_get("packets")?).unwrap_or(0),
                    duration_ms: to_u64(r.try_get("duration_ms")?).unwrap_or(0),
                })
            })
            .collect()
    }
}
