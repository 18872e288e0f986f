//! [`MapFollower`]: how a gateway or a storage node follows the placement map
//! by epoch (the building block of the catalog's item "following the map";
//! wiring it into the gateway and the nodes is separate work).
//!
//! Owns: one file, the last map seen (`path`, JSON, written atomically:
//! temporary file, fsync, rename), and a long-poll loop on
//! `GET /v1/map?newer_than=EPOCH` through a [`CatalogClient`].
//!
//! Invariants:
//! - The published epoch never goes back: a map whose epoch is not larger
//!   than the current one is ignored, whatever a replica answers.
//! - A map is on disk before it is published, so after a restart the
//!   follower starts from the newest map it ever published, even when no
//!   replica answers.
//! - Every map published passes `PlacementMap::validate`.
//! - When no replica answers, the follower keeps the map it has and retries
//!   after a pause; it never blocks readers of the current map.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::client::CatalogClient;
use crate::map::PlacementMap;

/// Follows the catalog's map; see the module's invariants.
pub struct MapFollower {
    rx: watch::Receiver<Option<Arc<PlacementMap>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Reads the last map saved at `path` (`None` if there is none or it is unreadable).
pub fn load_saved(path: &Path) -> Option<PlacementMap> {
    let text = std::fs::read_to_string(path).ok()?;
    let map: PlacementMap = serde_json::from_str(&text).ok()?;
    map.validate().ok()?;
    Some(map)
}

/// Saves a map atomically (temporary file, fsync, rename, directory fsync).
pub fn save(path: &Path, map: &PlacementMap) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(map).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

impl MapFollower {
    /// Starts from the map saved at `path` (or `initial`, whichever is newer)
    /// and follows the catalog from there.
    pub fn start(client: Arc<CatalogClient>, path: PathBuf, initial: Option<PlacementMap>) -> Self {
        let saved = load_saved(&path);
        let start = match (saved, initial) {
            (Some(a), Some(b)) => Some(if b.epoch > a.epoch { b } else { a }),
            (a, b) => a.or(b),
        };
        let (tx, rx) = watch::channel(start.map(Arc::new));
        let task = tokio::spawn(follow(client, path, tx));
        MapFollower { rx, task }
    }

    /// The newest map seen so far.
    pub fn current(&self) -> Option<Arc<PlacementMap>> {
        self.rx.borrow().clone()
    }

    pub fn epoch(&self) -> u64 {
        self.rx.borrow().as_ref().map_or(0, |m| m.epoch)
    }

    /// A receiver that is told of every newer map.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PlacementMap>>> {
        self.rx.clone()
    }
}

impl Drop for MapFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(client: Arc<CatalogClient>, path: PathBuf, tx: watch::Sender<Option<Arc<PlacementMap>>>) {
    loop {
        let epoch = tx.borrow().as_ref().map_or(0, |m| m.epoch);
        match client.map_newer_than(epoch, Duration::from_secs(25)).await {
            Ok(Some(map)) if map.epoch > epoch && map.validate().is_ok() => {
                let p = path.clone();
                let m = map.clone();
                match tokio::task::spawn_blocking(move || save(&p, &m)).await {
                    Ok(Ok(())) => {
                        tracing::info!(epoch = map.epoch, "following a newer placement map");
                        tx.send_replace(Some(Arc::new(map)));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, path = %path.display(), "cannot save the map; not using it yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "saving the map failed"),
                }
            }
            Ok(Some(map)) => {
                tracing::warn!(got = map.epoch, have = epoch, "ignored a map that is not newer or not valid");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "no catalog replica answered; keeping the current map");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
