//! The recorder: appends the program's pages to a durable Ogg Opus file.
//!
//! It runs on its own OS thread fed by an unbounded channel, so a slow disk
//! never stalls ingest or listeners and no page is ever dropped on the way.
//! Pages are written as they close and fsynced on a cadence, which bounds
//! what a crash can lose.

use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tribune_media::recording::{recover, Recovered};

pub enum RecorderMsg {
    Pages(Bytes),
    /// Make everything durable, close the file and acknowledge.
    Finish(oneshot::Sender<io::Result<u64>>),
}

pub struct RecorderHandle {
    tx: mpsc::Sender<RecorderMsg>,
}

impl RecorderHandle {
    pub fn append(&self, pages: Bytes) {
        if self.tx.send(RecorderMsg::Pages(pages)).is_err() {
            tracing::error!("recorder has stopped: pages not recorded");
        }
    }

    pub async fn finish(&self) -> io::Result<u64> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(RecorderMsg::Finish(ack))
            .map_err(|_| io::Error::other("recorder has stopped"))?;
        done.await
            .map_err(|_| io::Error::other("recorder stopped before finishing"))?
    }
}

pub fn recording_path(data: &Path, space_id: &str) -> PathBuf {
    data.join("recordings").join(format!("{space_id}.opus"))
}

/// Opens (or creates) a recording, truncating a torn tail left by a crash.
pub fn open_recovering(path: &Path) -> io::Result<(File, Recovered)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let recovered = recover(&data);
    if recovered.valid_len != data.len() as u64 {
        tracing::warn!(
            path = %path.display(),
            kept = recovered.valid_len,
            dropped = data.len() as u64 - recovered.valid_len,
            "recording had a torn tail; truncated to the last valid page"
        );
        file.set_len(recovered.valid_len)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::Start(recovered.valid_len))?;
    Ok((file, recovered))
}

pub fn spawn(space_id: String, mut file: File, fsync_every: Duration) -> RecorderHandle {
    let (tx, rx) = mpsc::channel::<RecorderMsg>();
    let bytes_written =
        metrics::counter!("tribune_recording_bytes_total", "space" => space_id.clone());
    let fsync_seconds = metrics::histogram!("tribune_recording_fsync_seconds");
    let errors = metrics::counter!("tribune_recording_errors_total", "space" => space_id.clone());
    let thread = std::thread::Builder::new().name(format!("rec-{space_id}")).spawn(move || {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let mut written = 0u64;
        let sync = |file: &mut File| {
            let t = Instant::now();
            let r = file.sync_data();
            fsync_seconds.record(t.elapsed().as_secs_f64());
            r
        };
        loop {
            let wait = fsync_every.saturating_sub(last_sync.elapsed());
            match rx.recv_timeout(wait) {
                Ok(RecorderMsg::Pages(pages)) => {
                    if let Err(e) = file.write_all(&pages) {
                        errors.increment(1);
                        tracing::error!(space = %space_id, error = %e, "recording write failed");
                    } else {
                        written += pages.len() as u64;
                        bytes_written.increment(pages.len() as u64);
                        dirty = true;
                    }
                }
                Ok(RecorderMsg::Finish(ack)) => {
                    let r = sync(&mut file).map(|_| written);
                    let _ = ack.send(r);
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = sync(&mut file);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if dirty && last_sync.elapsed() >= fsync_every {
                if let Err(e) = sync(&mut file) {
                    errors.increment(1);
                    tracing::error!(space = %space_id, error = %e, "recording fsync failed");
                }
                dirty = false;
                last_sync = Instant::now();
            } else if !dirty {
                last_sync = Instant::now();
            }
        }
    });
    if let Err(e) = thread {
        tracing::error!(error = %e, "cannot start recorder thread");
    }
    RecorderHandle { tx }
}
