//! `sillok admin repair status`: how far the cluster is from full
//! redundancy, as [`sillok_catalog::repair`] computes it from the catalog's
//! status (PG states and what they mean are listed there).
//!
//! Owns: printing it once, as JSON, or every 2 s with a progress bar.

use std::time::Duration;

use sillok_catalog::CatalogClient;
pub use sillok_catalog::repair::{RepairStatus, STATES};

/// How `sillok admin repair status` shows a [`RepairStatus`].
trait Show {
    fn progress_line(&self) -> String;
    fn print(&self);
}

impl Show for RepairStatus {
    fn progress_line(&self) -> String {
        let clean = self.pgs.get("clean").copied().unwrap_or(0) + self.pgs.get("degraded-site").copied().unwrap_or(0);
        let total = u64::from(self.pg_count).max(1);
        let filled = (clean * 30 / total) as usize;
        let eta = match self.eta_s {
            Some(s) => format!("ETA {}", human_secs(s)),
            None if self.shards_left == 0 => "nothing to rebuild".into(),
            None => "no progress in the last report".into(),
        };
        format!(
            "[{}{}] {clean}/{total} PGs fully redundant, {} shards ({}) left at {}/s, {eta}",
            "#".repeat(filled),
            ".".repeat(30 - filled),
            self.shards_left,
            super::admin::human_bytes(self.bytes_left),
            super::admin::human_bytes(self.bytes_per_s),
        )
    }

    fn print(&self) {
        let pgs: Vec<String> =
            STATES.iter().map(|st| format!("{} {st}", self.pgs.get(*st).copied().unwrap_or(0))).collect();
        println!("map epoch {}, {} PGs: {}", self.epoch, self.pg_count, pgs.join(", "));
        println!("{}", self.progress_line());
        println!(
            "PGs waiting for replicas: {}; suspect shards: {}; scrubbed: {}; repair held: {}",
            self.pgs_waiting,
            self.suspects,
            super::admin::human_bytes(self.scrubbed_bytes),
            if self.repair_held { "yes" } else { "no" }
        );
        if !self.nodes_not_checked.is_empty() {
            let ids: Vec<String> = self.nodes_not_checked.iter().map(|n| format!("n{n}")).collect();
            println!("not yet checked under this map: {}", ids.join(", "));
        }
        if !self.nodes_not_reporting.is_empty() {
            let ids: Vec<String> = self.nodes_not_reporting.iter().map(|n| format!("n{n}")).collect();
            println!("up but not reporting (not counted): {}", ids.join(", "));
        }
        if let Some(t) = &self.throttle {
            println!("{} (set with `sillok admin repair throttle`)", super::admin::describe_throttle(t));
        }
        if let Some(limit) = &self.limit {
            println!("limit: {limit}");
        }
    }
}

fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

pub async fn fetch(c: &CatalogClient) -> anyhow::Result<RepairStatus> {
    let status = c.status().await?;
    let view = c.catalog(false).await?;
    let map = view.map.ok_or_else(|| anyhow::anyhow!("the catalog has no map yet (not bootstrapped)"))?;
    Ok(RepairStatus::of(&status, &map))
}

/// Prints the status once, or every 2 s with `watch` until interrupted.
pub async fn run(c: &CatalogClient, json: bool, watch: bool) -> anyhow::Result<()> {
    loop {
        let s = fetch(c).await?;
        if json {
            println!("{}", serde_json::to_string(&s)?);
        } else if watch {
            println!("{}", s.progress_line());
        } else {
            s.print();
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
