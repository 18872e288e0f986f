//! `sillok admin rebalance`: planned capacity changes.
//!
//! Owns: the operator's side of rebalancing. Capacity changes (`node add`,
//! `remove`, `set-weight`, `drain`, `site add`) are staged in the catalog;
//! `plan` shows what they would move (computed here from the staged changes,
//! the current map and the nodes' reported bytes, by
//! [`sillok_catalog::rebalance::plan`]); `apply` makes them one map change;
//! `discard` drops them. `status` says how far the data is from the map
//! (PGs whose earlier rows are still kept, shards and bytes left, rate,
//! ETA); `pause` and `resume` hold planned moves (not repairs); `cancel`
//! turns back the moves not yet finished.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use sillok_catalog::CatalogClient;
use sillok_catalog::rebalance::Plan;
use sillok_catalog::state::{Catalog, Command};
use sillok_placement::NodeId;

use super::admin::{human_bytes, print_json, report, table};

#[derive(clap::Subcommand)]
pub enum RebalanceCommand {
    /// What the staged changes would do: per node slots and bytes in and
    /// out, the total to move, the balance of the result, the site rule.
    Plan,
    /// Make the staged changes one map change; data then moves in the background.
    Apply,
    /// Drop the staged changes.
    Discard,
    /// How far the data is from where the map puts it.
    Status {
        /// Print a progress line every 2 s until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Hold planned moves (rebuilds of lost shards go on).
    Pause,
    /// Turn back every move not yet finished: each PG still moving goes
    /// back to the row its data came from (data already moved is moved
    /// back; nothing is lost). The topology stays as applied: stage the
    /// inverse change to undo that too.
    Cancel,
    /// Let planned moves go on.
    Resume,
}

/// `rebalance status --json`.
#[derive(Debug, Serialize)]
pub struct RebalanceStatus {
    pub epoch: u64,
    pub pg_count: u32,
    /// PGs whose earlier rows are kept: their data has not all moved.
    pub pgs_moving: u64,
    pub shards_left: u64,
    pub bytes_left: u64,
    pub bytes_per_s: u64,
    pub eta_s: Option<u64>,
    pub paused: bool,
    /// Changes staged and not applied.
    pub staged: usize,
    pub done: bool,
}

async fn fetch_status(c: &CatalogClient) -> anyhow::Result<RebalanceStatus> {
    let status = c.status().await?;
    let view = c.catalog(false).await?;
    let Some(map) = view.map else { bail!("the catalog has no map yet (not bootstrapped)") };
    let repair = sillok_catalog::repair::RepairStatus::of(&status, &map);
    let pgs_moving = map.previous.len() as u64;
    Ok(RebalanceStatus {
        epoch: map.epoch,
        pg_count: map.pg_count,
        pgs_moving,
        shards_left: repair.shards_left,
        bytes_left: repair.bytes_left,
        bytes_per_s: repair.bytes_per_s,
        eta_s: repair.eta_s,
        paused: status.rebalance_paused,
        staged: view.staged.len(),
        done: pgs_moving == 0 && repair.shards_left == 0,
    })
}

fn progress_line(s: &RebalanceStatus) -> String {
    let total = u64::from(s.pg_count).max(1);
    let settled = total.saturating_sub(s.pgs_moving);
    let filled = (settled * 30 / total) as usize;
    let eta = match (s.done, s.eta_s) {
        (true, _) => "done".to_string(),
        (false, Some(e)) => format!("ETA {e} s"),
        (false, None) => "no progress in the last report".to_string(),
    };
    format!(
        "[{}{}] {settled}/{total} PGs where the map puts them, {} shards ({}) left at {}/s, {eta}{}",
        "#".repeat(filled),
        ".".repeat(30 - filled),
        s.shards_left,
        human_bytes(s.bytes_left),
        human_bytes(s.bytes_per_s),
        if s.paused { " (PAUSED)" } else { "" }
    )
}

async fn plan(c: &CatalogClient) -> anyhow::Result<Plan> {
    let view = c.catalog(true).await?;
    let Some(map) = view.map else { bail!("the catalog has no map yet (not bootstrapped)") };
    if view.staged.is_empty() {
        bail!("nothing is staged: stage changes with `sillok admin node add|remove|set-weight|drain` or `site add`");
    }
    let status = c.status().await?;
    let staged = Catalog { map: Some(map.clone()), next_node_id: view.next_node_id, ..Default::default() };
    let (new, _) = staged.staged_map(&map, &view.staged)?;
    let bytes: BTreeMap<NodeId, u64> =
        status.nodes.iter().filter_map(|n| n.usage.as_ref().map(|u| (n.id, u.shard_bytes))).collect();
    Ok(sillok_catalog::rebalance::plan(&map, &new, view.staged.iter().map(Command::name).collect(), &bytes))
}

fn print_plan(p: &Plan) {
    println!("staged changes (from map epoch {}):", p.from_epoch);
    for (i, c) in p.changes.iter().enumerate() {
        println!("  {}. {c}", i + 1);
    }
    if p.pgs_after != p.pgs_before {
        println!(
            "PGs: {} -> {} (each splits into {}; a child starts on its parent's nodes and moves only where the \
             assignment below places it elsewhere; slot counts are in PGs after the split)",
            p.pgs_before,
            p.pgs_after,
            p.pgs_after / p.pgs_before.max(1)
        );
    }
    let rows: Vec<Vec<String>> = p
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.site.clone(),
                format!("{:?}", n.state).to_lowercase(),
                format!("{}", n.weight),
                format!("{} -> {}", n.slots_before, n.slots_after),
                format!("+{} -{}", n.slots_in, n.slots_out),
                format!("+{} -{}", human_bytes(n.bytes_in), human_bytes(n.bytes_out)),
                format!("{:.1}% / {:.1}%", n.share_pct, n.weight_share_pct),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["NODE", "SITE", "STATE", "WEIGHT", "SLOTS", "MOVES", "BYTES (est.)", "SHARE / WEIGHT"], &rows)
    );
    println!(
        "to move: {} slots in {} PGs, about {} (bringing every node exactly to its share would move {} slots)",
        p.slots_moved,
        p.pgs_moving,
        human_bytes(p.bytes_to_move),
        p.min_slots_moved
    );
    println!("balance: every node within {:.1}% of its weight share of slots", p.max_imbalance_pct);
    match &p.refused {
        None => println!("site rule: kept; `sillok admin rebalance apply` commits it"),
        Some(why) => println!("REFUSED: {why}; `sillok admin rebalance discard` drops the changes"),
    }
}

pub async fn run(c: &CatalogClient, cmd: RebalanceCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        RebalanceCommand::Plan => {
            let p = plan(c).await?;
            if json {
                return print_json(&p);
            }
            print_plan(&p);
        }
        RebalanceCommand::Apply => report(&c.propose(Command::ApplyStaged).await?, json)?,
        RebalanceCommand::Discard => report(&c.propose(Command::DiscardStaged).await?, json)?,
        RebalanceCommand::Cancel => report(&c.propose(Command::CancelMoves).await?, json)?,
        RebalanceCommand::Pause => report(&c.propose(Command::SetRebalancePaused { paused: true }).await?, json)?,
        RebalanceCommand::Resume => report(&c.propose(Command::SetRebalancePaused { paused: false }).await?, json)?,
        RebalanceCommand::Status { watch } => loop {
            let s = fetch_status(c).await?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("{}", progress_line(&s));
                if !watch && s.staged > 0 {
                    println!("{} change(s) staged and not applied (`sillok admin rebalance plan`)", s.staged);
                }
            }
            if !watch {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        },
    }
    Ok(())
}
