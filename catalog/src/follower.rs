//! [`MapFollower`]: how a storage node follows the placement map, as the
//! map's changes in the catalog's change log (`only=map`: no bucket or key
//! change, so no secret, reaches a node). Gateways follow the whole catalog
//! the same way (`sillok_gateway::catalog`).
//!
//! Owns: the node's map file (`map.redb`, a [`MapFile`]: the map by rows and
//! the follower's index in the change log), and a long-poll loop through a
//! [`CatalogClient`].
//!
//! Invariants:
//! - What is published never goes back: a map whose epoch is not larger
//!   than the current one is ignored, whatever a replica answers. Changes are
//!   taken in index order; a delta whose epoch the follower already has is
//!   skipped, and one that does not start from the follower's epoch (a gap:
//!   the follower took a map some other way) makes it ask for the whole map.
//! - A map change costs the follower what the change costs: the delta's
//!   bytes, and the rows it names written in one transaction. (Only the map
//!   in memory is copied whole, once per answer that changes it.)
//! - A map is on disk, with the index it is current at, before it is
//!   published, so after a restart the follower starts from the newest map it
//!   ever published, even when no replica answers. An answer that changes no
//!   map moves the index in memory only; after a restart the follower asks
//!   from the last index written, and a replica whose log no longer reaches
//!   back sends the whole map.
//! - Every map published passes `PlacementMap::validate`.
//! - When no replica answers, the follower keeps what it has and retries
//!   after a pause; it never blocks readers of the current map.
//! - [`MapFollower::refresh`] cuts a wait short (a node was told of a newer
//!   epoch): the follower asks again at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::changes::{Changes, IndexedChange, ViewChange};
use crate::client::{CatalogClient, ClientError};
use crate::map_rows::{MapFile, MapFileError, MapWrite};
use sillok_placement::{MapDelta, PlacementMap};

/// How a follower polls.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// How long one long poll waits on a replica for news. Short enough that
    /// a hung replica costs little (the client then moves to another).
    pub wait: Duration,
    /// Pause between polls (0: poll again at once, i.e. follow continuously).
    /// A refresh cuts it short.
    pub pause: Duration,
    /// Pause after a round in which no replica answered.
    pub retry: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions { wait: Duration::from_secs(5), pause: Duration::ZERO, retry: Duration::from_secs(1) }
    }
}

/// What the follow loop shares with the follower's handle.
struct Shared {
    tx: watch::Sender<Option<Arc<PlacementMap>>>,
    /// The change-log index the published map is current at.
    applied: AtomicU64,
    file: Arc<MapFile>,
    poke: Notify,
    /// What the follower received and wrote, for its owner's metrics.
    figures: FollowedFigures,
}

/// What a follower received and wrote.
#[derive(Debug, Default)]
pub struct FollowedFigures {
    /// Bytes of answers that carried a map change (as JSON).
    pub bytes: AtomicU64,
    /// Map changes taken as deltas.
    pub deltas: AtomicU64,
    /// Whole maps taken.
    pub wholes: AtomicU64,
}

/// What one answer asks of the follower.
enum Taken {
    /// Nothing changed the map (or it was not newer).
    Nothing,
    /// A newer map, saved and published.
    Published,
    /// A delta that does not start from the follower's map.
    Gap,
}

impl Shared {
    fn epoch(&self) -> u64 {
        self.tx.borrow().as_ref().map_or(0, |m| m.epoch)
    }

    /// Takes the map changes of a run up to `to`: saved, then published.
    async fn take(&self, to: u64, changes: Vec<IndexedChange>) -> Result<Taken, MapFileError> {
        let have = self.tx.borrow().clone();
        let mut map: Option<Arc<PlacementMap>> = have.clone();
        let mut whole = false;
        let mut deltas: Vec<MapDelta> = Vec::new();
        for c in changes {
            let epoch = map.as_ref().map_or(0, |m| m.epoch);
            match c.change {
                ViewChange::Map { map: m } if m.epoch > epoch => {
                    if let Err(e) = m.validate() {
                        tracing::warn!(epoch = m.epoch, error = %e, "a replica sent a map that is not valid; ignored");
                        continue;
                    }
                    map = Some(Arc::new(m));
                    whole = true;
                    deltas.clear();
                }
                ViewChange::MapDelta { delta } if delta.epoch > epoch => {
                    let Some(base) = map.as_ref().filter(|m| m.epoch == delta.from_epoch) else {
                        tracing::info!(have = epoch, from = delta.from_epoch, "a map change does not start from ours");
                        return Ok(Taken::Gap);
                    };
                    match delta.apply(base) {
                        Ok(next) => {
                            map = Some(Arc::new(next));
                            deltas.push(delta);
                        }
                        Err(e) => {
                            tracing::warn!(epoch = delta.epoch, error = %e, "a map change cannot be applied");
                            return Ok(Taken::Gap);
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(map) = map.filter(|m| have.as_ref().is_none_or(|h| m.epoch > h.epoch)) else {
            self.applied.fetch_max(to, Ordering::Relaxed);
            return Ok(Taken::Nothing);
        };
        let file = self.file.clone();
        let saved = map.clone();
        let n = deltas.len() as u64;
        tokio::task::spawn_blocking(move || {
            let write = if whole { MapWrite::Whole } else { MapWrite::Deltas(&deltas) };
            file.write(to, &saved, write)
        })
        .await
        .map_err(|e| MapFileError { path: self.file.path().to_path_buf(), source: crate::map_rows::join_error(e) })??;
        if whole {
            self.figures.wholes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.figures.deltas.fetch_add(n, Ordering::Relaxed);
        }
        self.applied.fetch_max(to, Ordering::Relaxed);
        tracing::info!(epoch = map.epoch, applied = to, whole, "following a newer placement map");
        self.tx.send_replace(Some(map));
        Ok(Taken::Published)
    }

    /// Takes a whole map fetched outside the change log (a gap, or a replica
    /// without the map-only route), keeping the index where it was.
    async fn take_whole(&self, map: PlacementMap) -> Result<Taken, MapFileError> {
        let at = self.applied.load(Ordering::Relaxed);
        self.take(at, vec![IndexedChange { index: at, change: ViewChange::Map { map } }]).await
    }
}

/// Follows the placement map; see the module's invariants.
pub struct MapFollower {
    rx: watch::Receiver<Option<Arc<PlacementMap>>>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What storage nodes kept before `map.redb`: the map as JSON, next to it.
fn old_file(path: &Path) -> PathBuf {
    path.with_file_name("map.json")
}

impl MapFollower {
    /// Starts from the map saved at `path` (or `initial`, or a `map.json`
    /// written by an older node, whichever is newest) and follows the catalog
    /// from there.
    pub fn start(
        client: Arc<CatalogClient>,
        path: PathBuf,
        initial: Option<PlacementMap>,
        options: FollowOptions,
    ) -> Result<Self, MapFileError> {
        let (file, held) = MapFile::open(&path)?;
        let (mut applied, mut start) = held.map_or((0, None), |(i, m)| (i, Some(m)));
        let old = std::fs::read(old_file(&path)).ok().and_then(|t| serde_json::from_slice::<PlacementMap>(&t).ok());
        for candidate in [old, initial].into_iter().flatten() {
            if candidate.validate().is_ok() && start.as_ref().is_none_or(|s| candidate.epoch > s.epoch) {
                // Not from the change log: the index stays where it was.
                file.write(applied, &candidate, MapWrite::Whole)?;
                start = Some(candidate);
            }
        }
        if start.is_none() {
            applied = 0;
        }
        if std::fs::remove_file(old_file(&path)).is_ok() {
            tracing::info!(path = %path.display(), "the saved map moved from map.json to its redb file");
        }
        let (tx, rx) = watch::channel(start.map(Arc::new));
        let shared = Arc::new(Shared {
            tx,
            applied: AtomicU64::new(applied),
            file: Arc::new(file),
            poke: Notify::new(),
            figures: FollowedFigures::default(),
        });
        let task = tokio::spawn(follow(client, shared.clone(), options));
        Ok(MapFollower { rx, shared, task })
    }

    /// The newest map seen so far.
    pub fn current(&self) -> Option<Arc<PlacementMap>> {
        self.rx.borrow().clone()
    }

    /// The epoch of the newest map seen so far (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch()
    }

    /// The change-log index the current map is current at.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Relaxed)
    }

    /// What the follower received and wrote.
    pub fn figures(&self) -> &FollowedFigures {
        &self.shared.figures
    }

    /// A receiver that is told of every newer map.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PlacementMap>>> {
        self.rx.clone()
    }

    /// Asks the catalog again now instead of waiting.
    pub fn refresh(&self) {
        self.shared.poke.notify_one();
    }

    /// Waits (at most `timeout`) until a map is published; returns it.
    pub async fn first(&self, timeout: Duration) -> Option<Arc<PlacementMap>> {
        let mut rx = self.rx.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| v.is_some())).await;
        self.current()
    }

    /// Asks the catalog now and waits (at most `timeout`) for a map of at
    /// least `epoch`; returns whether it came.
    pub async fn wait_for_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        if self.epoch() >= epoch {
            return true;
        }
        self.refresh();
        let mut rx = self.rx.clone();
        let got = tokio::time::timeout(timeout, rx.wait_for(|v| v.as_ref().is_some_and(|v| v.epoch >= epoch))).await;
        matches!(got, Ok(Ok(_)))
    }
}

impl Drop for MapFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(client: Arc<CatalogClient>, shared: Arc<Shared>, options: FollowOptions) {
    loop {
        let since = shared.applied.load(Ordering::Relaxed);
        // A continuous follower long-polls; a paused one only asks.
        let wait = if options.pause.is_zero() { options.wait } else { Duration::ZERO };
        let asked = tokio::select! {
            r = client.map_changes_since(since, wait) => r,
            _ = shared.poke.notified() => continue,
        };
        let taken = match asked {
            Ok(Some(Changes::Changes { to, changes, .. })) => {
                if !changes.is_empty() {
                    let bytes = serde_json::to_vec(&changes).map_or(0, |b| b.len());
                    shared.figures.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                }
                shared.take(to, changes).await
            }
            // A replica that does not know `only=map` (an older build) may
            // send this; a gap asks for the whole map too.
            Ok(Some(Changes::SnapshotNeeded { .. })) => Ok(Taken::Gap),
            Ok(None) => Ok(Taken::Nothing),
            // A replica without the change route (an older build still).
            Err(ClientError::BadRequest(_)) => Ok(Taken::Gap),
            Err(e) => {
                tracing::debug!(error = %e, "no catalog replica answered; keeping what we have");
                pause(&shared, options.retry).await;
                continue;
            }
        };
        let taken = match taken {
            // After a gap only a whole map counts as progress: anything else
            // waits a retry's pause, so a gap that persists is not a busy loop.
            Ok(Taken::Gap) => match whole(&client, &shared, wait).await {
                Ok(Taken::Published) => Ok(Taken::Published),
                Ok(_) => Ok(Taken::Gap),
                Err(e) => Err(e),
            },
            other => other,
        };
        match taken {
            Ok(Taken::Published | Taken::Nothing) => pause(&shared, options.pause).await,
            Ok(Taken::Gap) => pause(&shared, options.retry).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the map; not using it yet");
                pause(&shared, options.retry).await;
            }
        }
    }

    /// The whole map, if some replica has one newer than ours.
    async fn whole(client: &CatalogClient, shared: &Shared, wait: Duration) -> Result<Taken, MapFileError> {
        match client.map_newer_than(shared.epoch(), wait).await {
            Ok(Some(map)) => {
                let bytes = serde_json::to_vec(&map).map_or(0, |b| b.len());
                shared.figures.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                shared.take_whole(map).await
            }
            Ok(None) => Ok(Taken::Nothing),
            Err(e) => {
                tracing::debug!(error = %e, "no catalog replica sent the whole map; keeping what we have");
                Ok(Taken::Gap)
            }
        }
    }

    async fn pause(shared: &Shared, pause: Duration) {
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shared.poke.notified() => {}
            }
        }
    }
}
