//! `sillok admin`: the operator's tool, talking to the catalog replicas.
//!
//! It needs the replica addresses and a key: `--catalog`/`SILLOK_CATALOG`
//! (comma-separated `host:port`) and `--key-id`/`SILLOK_ADMIN_KEY_ID` with
//! `SILLOK_ADMIN_SECRET` (an admin key; `secret` in a `--config` file, never
//! `--secret` on the command line), or `--cluster FILE`, which
//! takes both the replica list and the cluster secret from a cluster file.
//! `sillok dev` writes the env variables into `cluster.env`. Any replica
//! will do: writes are forwarded to the leader, and the client moves on to
//! another replica when one does not answer, so admin works from any site
//! that is still up. Output: aligned tables, or `--json` for scripts. Key
//! secrets are printed once, by `key create`, and never by anything else.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use sillok_catalog::api::{Proposed, Status};
use sillok_catalog::server::state_name;
use sillok_catalog::state::{Bucket, Command, KeyRecord, Outcome, Permission, STANDARD};
use sillok_catalog::{CatalogClient, ClientTimeouts};
use sillok_placement::{NodeId, NodeState};
use sillok_rpc::auth::Signer;

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Catalog replicas, `host:port,host:port,...`.
    #[arg(long, env = "SILLOK_CATALOG", global = true)]
    pub catalog: Option<String>,
    /// Admin access key id.
    #[arg(long, env = "SILLOK_ADMIN_KEY_ID", global = true)]
    pub key_id: Option<String>,
    /// Admin secret key: from SILLOK_ADMIN_SECRET or the --config file, never
    /// the command line (refused there: other users can read it).
    #[arg(long, env = "SILLOK_ADMIN_SECRET", global = true, hide_env_values = true)]
    pub secret: Option<String>,
    /// A cluster file: replica addresses and the cluster secret (instead of an admin key).
    #[arg(long, global = true)]
    pub cluster: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 15, global = true)]
    pub timeout_secs: u64,
    /// This tool's internal identity (`ca.pem`, `cert.pem`, `key.pem`; an
    /// admin certificate). Default: `tls/admin` beside the `--cluster` file.
    #[arg(long, global = true)]
    pub internal_tls: Option<PathBuf>,
    /// Plain HTTP to the catalog (a cluster run with --insecure-internal-http).
    #[arg(long, global = true)]
    pub insecure_internal_http: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Sites, nodes and their states, epoch, the leader and every replica.
    Status,
    /// Storage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Sites (failure domains).
    #[command(subcommand)]
    Site(SiteCommand),
    /// Placement groups.
    #[command(subcommand)]
    Pg(PgCommand),
    /// Buckets.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Catalog replicas (Raft membership).
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// Automatic failure handling.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Planned capacity changes: what staged changes would move, applying
    /// them, and how far the data is from where the map says.
    #[command(subcommand)]
    Rebalance(super::rebalance::RebalanceCommand),
    /// Backups of the catalog (map, buckets, keys with their secrets), for
    /// `sillok catalog --restore-from`.
    #[command(subcommand)]
    Catalog(CatalogCommand),
}

#[derive(clap::Subcommand)]
pub enum CatalogCommand {
    /// Read the whole catalog from the leader (after a read barrier) into a
    /// file, created 0600: it holds every S3 secret.
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Read the catalog from a stopped replica's data directory (no network):
    /// what that replica had applied. For when no majority of replicas is
    /// left to take a backup from.
    Export {
        /// The replica's `--data` directory.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum RepairCommand {
    /// Stop the catalog from marking silent nodes `out` (they are still marked
    /// `down`): for planned maintenance, like Ceph's `noout`.
    Hold,
    /// Let the catalog mark nodes `out` again once they have been silent long enough.
    Release,
    /// How far the cluster is from full redundancy: PGs per state, shards and
    /// bytes left, the rebuild rate and an ETA, from the nodes' reports.
    Status {
        /// Print a progress line every 2 s until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Set the rebuild pace of every storage node while they run (each
    /// applies it within a report interval, about 2 s). With no option, shows it.
    Throttle {
        /// Rebuilt bytes per node, MiB/s (0: unlimited).
        #[arg(long)]
        mib_per_s: Option<u32>,
        /// Shards each node rebuilds at once (at least 1).
        #[arg(long)]
        concurrency: Option<u32>,
    },
}

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Stage adding a storage node (it gets the next free id when applied).
    Add {
        #[arg(long)]
        site: String,
        /// `host:port` of the node's internal API.
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
    },
    /// Stage removing a node for good (refused at apply while any PG's row
    /// still names it: drain it first and wait for `rebalance status`).
    Remove { id: String },
    /// Stage a change of a node's weight (its share of the slots).
    SetWeight { id: String, weight: f64 },
    /// Mark a node down: it keeps its slots, readers and writers avoid it.
    Down { id: String },
    /// Mark a node up again.
    Up { id: String },
    /// Stage draining a node: its slots and data move elsewhere.
    Drain { id: String },
    /// Mark a node out: its slots are reassigned and its shards rebuilt.
    Out { id: String },
}

#[derive(clap::Subcommand)]
pub enum PgCommand {
    /// Stage splitting every PG into children so that there are COUNT
    /// (a multiple of today's count; a power of two for maps that take the
    /// PG from the top bits of the hash). Each child starts on its parent's
    /// nodes; `sillok admin rebalance plan` shows what the assignment then
    /// moves, and `rebalance apply` makes it one map change.
    Split { count: u32 },
}

#[derive(clap::Subcommand)]
pub enum SiteCommand {
    /// Stage adding an (empty) site.
    Add { name: String },
    /// Stage removing a site and its nodes (refused at apply while any PG's
    /// row names one of them: drain them first).
    Remove { name: String },
    /// Mark every node of a site down.
    Down { name: String },
    /// Mark every node of a site out (its data is rebuilt on the others).
    Out { name: String },
    /// Mark every node of a site up.
    Up { name: String },
}

#[derive(clap::Subcommand)]
pub enum BucketCommand {
    Create {
        name: String,
        /// Owner's access key id (default: the admin key).
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value = STANDARD)]
        storage_class: String,
    },
    List,
    /// Remove a bucket from the catalog. The catalog cannot see objects, so
    /// this does not check that the bucket is empty (objects left in it
    /// become unreachable): prefer S3 DeleteBucket, which refuses a
    /// non-empty bucket; `--force` says you mean it.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Make a new access key and print its secret (shown only this once).
    Create {
        /// An admin key (for `sillok admin`) instead of an S3 key.
        #[arg(long)]
        admin: bool,
        /// An S3 key that may only read.
        #[arg(long, conflicts_with = "admin")]
        read_only: bool,
        /// The key id (default: a random `SILLOK...` id).
        #[arg(long)]
        id: Option<String>,
    },
    List,
    /// Disable a key for good.
    Revoke {
        id: String,
    },
}

#[derive(clap::Subcommand)]
pub enum ReplicaCommand {
    /// Add a running replica (started with `sillok placement --id N --site S --listen A`) as a voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        site: String,
    },
    /// Remove a replica from the voters.
    Remove { id: u64 },
}

fn client(a: &AdminArgs) -> anyhow::Result<(CatalogClient, String)> {
    let timeouts = ClientTimeouts { total: Duration::from_secs(a.timeout_secs.max(1)), ..Default::default() };
    if let Some(path) = &a.cluster {
        let file = super::load_cluster_file(path)?;
        let addrs: Vec<String> = match &a.catalog {
            Some(c) => c.split(',').map(str::to_string).collect(),
            None => file.catalog_replicas.iter().map(|r| r.addr.clone()).collect(),
        };
        if addrs.is_empty() {
            bail!("the cluster file {} lists no catalog replicas (catalog_replicas)", path.display());
        }
        let c = CatalogClient::new(addrs, Signer::new(&file.cluster_secret), timeouts)?;
        return Ok((c, "sillok-internal".into()));
    }
    let Some(catalog) = &a.catalog else {
        bail!(
            "which catalog? set SILLOK_CATALOG (host:port,host:port,...) or pass --catalog or --cluster; with `sillok dev`, `. sillok-dev/cluster.env` sets it"
        );
    };
    let (Some(id), Some(secret)) = (&a.key_id, &a.secret) else {
        bail!(
            "no admin key: set SILLOK_ADMIN_KEY_ID and SILLOK_ADMIN_SECRET (or put key-id and secret in a --config file, or pass --cluster FILE)"
        );
    };
    let c =
        CatalogClient::new(catalog.split(',').map(str::to_string).collect(), Signer::with_key(id, secret), timeouts)?;
    Ok((c, id.clone()))
}

/// Plain aligned columns, two spaces apart.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn parse_node(s: &str) -> anyhow::Result<NodeId> {
    let n = s.trim().trim_start_matches(['n', 'N']);
    Ok(NodeId(n.parse().with_context(|| format!("{s:?} is not a node id (a number, like 3 or n3)"))?))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn time_str(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

/// One replica's answer, or why it did not answer.
#[derive(Serialize)]
struct ReplicaView {
    id: u64,
    site: String,
    addr: String,
    voter: bool,
    reachable: bool,
    role: Option<String>,
    term: Option<u64>,
    applied_index: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct StatusOut {
    #[serde(flatten)]
    status: Status,
    replica_views: Vec<ReplicaView>,
}

async fn status(c: &CatalogClient, json: bool) -> anyhow::Result<()> {
    let s = c.status().await?;
    // Ask every replica too, briefly, so an operator sees which ones answer.
    let probes = s.replicas.iter().map(|r| async move {
        let res = tokio::time::timeout(Duration::from_secs(2), c.status_of(&r.addr)).await;
        let (reachable, st, error) = match res {
            Ok(Ok(st)) => (true, Some(st), None),
            Ok(Err(e)) => (false, None, Some(e.to_string())),
            Err(_) => (false, None, Some("no answer within 2 s".to_string())),
        };
        ReplicaView {
            id: r.id,
            site: r.site.clone(),
            addr: r.addr.clone(),
            voter: r.voter,
            reachable,
            role: st.as_ref().map(|x| x.role.clone()),
            term: st.as_ref().map(|x| x.term),
            applied_index: st.as_ref().map(|x| x.applied_index),
            error,
        }
    });
    let views = futures::future::join_all(probes).await;
    if json {
        return print_json(&StatusOut { status: s, replica_views: views });
    }
    let leader = match (s.leader, &s.leader_site, &s.leader_addr) {
        (Some(l), Some(site), Some(addr)) => format!("replica {l} in {site} ({addr})"),
        _ => "none (election in progress, or no majority)".into(),
    };
    println!("leader:   {leader}, term {}", s.term);
    println!(
        "map:      epoch {}, {} placement groups{}, {}; {} buckets, {} keys",
        s.epoch,
        s.pg_count,
        if s.pg_function == Some(sillok_placement::PgFunction::Modulo) { " (hash mod P)" } else { "" },
        s.profiles.iter().map(|p| format!("{} {}", p.storage_class, p.profile)).collect::<Vec<_>>().join(", "),
        s.buckets,
        s.keys
    );
    println!("answered: replica {} in {} (applied index {})\n", s.replica, s.replica_site, s.applied_index);
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.id.to_string(),
                v.site.clone(),
                v.addr.clone(),
                if v.voter { "voter".into() } else { "learner".into() },
                match &v.role {
                    Some(r) => r.clone(),
                    None => "UNREACHABLE".into(),
                },
                v.applied_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!("{}", table(&["REPLICA", "SITE", "ADDR", "MEMBER", "ROLE", "APPLIED"], &rows));
    println!();
    let rows: Vec<Vec<String>> =
        s.sites.iter().map(|x| vec![x.id.clone(), x.state.clone(), x.nodes.to_string()]).collect();
    print!("{}", table(&["SITE", "STATE", "NODES"], &rows));
    println!();
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            let u = n.usage.as_ref();
            vec![
                n.id.to_string(),
                n.site.clone(),
                n.addr.clone(),
                state_name(n.state).into(),
                format!("{}", n.weight),
                n.slots.to_string(),
                format!("{:.1}%", n.fill_pct),
                u.map_or("-".into(), |u| u.shards.to_string()),
                u.map_or("-".into(), |u| human_bytes(u.shard_bytes)),
                u.map_or("-".into(), |u| format!("{} of {}", human_bytes(u.disk_free), human_bytes(u.disk_total))),
                u.map_or("-".into(), |u| clock_cell(u.clock_offset_ms, u.refusing_writes)),
                u.map_or("never".into(), |u| format!("{:.1} s ago", u.age_ms as f64 / 1000.0)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NODE",
                "SITE",
                "ADDR",
                "STATE",
                "WEIGHT",
                "SLOTS",
                "SLOT SHARE",
                "SHARDS",
                "USED",
                "DISK FREE",
                "CLOCK",
                "REPORTED"
            ],
            &rows
        )
    );
    let changed: Vec<&sillok_catalog::api::NodeStatus> = s.nodes.iter().filter(|n| n.transition.is_some()).collect();
    if !changed.is_empty() || s.repair_hold {
        println!();
        if s.repair_hold {
            println!("repair: HELD (silent nodes are marked down, never out; `sillok admin repair release`)");
        }
        for n in changed {
            if let Some(t) = &n.transition {
                let ago = (sillok_model::clock::wall_ms() - t.at_ms).max(0) as f64 / 1000.0;
                println!("node {}: {} {ago:.0} s ago: {}", n.id, state_name(t.state), t.reason);
            }
        }
    }
    if !s.gateways.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = s
            .gateways
            .iter()
            .map(|g| {
                vec![
                    g.report.gateway.clone(),
                    g.report.epoch.to_string(),
                    clock_cell(g.report.clock_offset_ms, g.report.refusing_writes),
                    format!("{:.1} s ago", g.age_ms as f64 / 1000.0),
                ]
            })
            .collect();
        print!("{}", table(&["GATEWAY", "EPOCH", "CLOCK", "REPORTED"], &rows));
    }
    println!(
        "\nSLOT SHARE: the node's share of the map's slots. SHARDS, USED: its shard files as it last reported them to replica {}.",
        s.replica
    );
    println!(
        "CLOCK: the process's clock minus its peers' (nodes: the other nodes; gateways: the nodes), median; \
         REFUSING WRITES when beyond its --max-clock-offset-ms."
    );
    Ok(())
}

/// A clock offset for the status tables.
fn clock_cell(offset_ms: Option<i64>, refusing: bool) -> String {
    match (offset_ms, refusing) {
        (None, _) => "-".into(),
        (Some(o), false) => format!("{o:+} ms"),
        (Some(o), true) => format!("{o:+} ms REFUSING WRITES"),
    }
}

/// Bytes for people: 1.5 GiB, 200 KiB, 12 B.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

pub(crate) fn report(p: &Proposed, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(p);
    }
    match &p.outcome {
        Outcome::Map { epoch } => println!("done: the map is now at epoch {epoch}"),
        Outcome::NodeAdded { id, epoch } => println!("added node {id}; the map is now at epoch {epoch}"),
        Outcome::BucketCreated { bucket } => println!("created bucket {}", bucket.name),
        Outcome::BucketDeleted { name } => println!("deleted bucket {name} from the catalog"),
        Outcome::KeyRevoked { id } => println!("revoked key {id}"),
        Outcome::KeyCreated { key } => println!("created key {}", key.id),
        Outcome::RepairHold { hold: true } => {
            println!("repair held: silent nodes are marked down but not out until `sillok admin repair release`")
        }
        Outcome::RepairHold { hold: false } => {
            println!("repair released: nodes silent for longer than the catalog's out-after are marked out again")
        }
        Outcome::RepairThrottle { throttle } => {
            println!("{}; nodes apply it with their next report", describe_throttle(throttle))
        }
        Outcome::Staged { staged, node } => {
            if let Some(id) = node {
                println!("staged: the node will be {id} (start it with `sillok node --id {}`)", id.0);
            }
            println!(
                "staged ({staged} change(s) waiting); `sillok admin rebalance plan` shows what they move, \
                 `sillok admin rebalance apply` makes them one map change"
            );
        }
        Outcome::Applied { epoch, changes, added } => {
            println!("applied {changes} change(s): the map is now at epoch {epoch}; data moves in the background");
            for id in added {
                println!("added node {id}");
            }
            println!("`sillok admin rebalance status --watch` follows the moves");
        }
        Outcome::Discarded { changes } => println!("discarded {changes} staged change(s)"),
        Outcome::RebalancePaused { paused: true } => {
            println!("rebalance paused: planned moves wait (rebuilds of lost shards go on)")
        }
        Outcome::RebalancePaused { paused: false } => println!("rebalance resumed"),
        other => println!("done: {other:?}"),
    }
    Ok(())
}

/// A capacity change: staged, applied by `sillok admin rebalance apply`.
fn stage(change: Command) -> Command {
    Command::Stage { change: Box::new(change) }
}

pub(crate) fn describe_throttle(t: &sillok_catalog::api::RepairThrottle) -> String {
    let rate = match t.mib_per_s {
        Some(0) => "unlimited".to_string(),
        Some(r) => format!("{r} MiB/s"),
        None => "its --rebuild-mib-per-s".to_string(),
    };
    let conc = t.concurrency.map_or("its --rebuild-concurrency".to_string(), |c| c.to_string());
    format!("rebuild throttle per node: {rate}, {conc} shards at once")
}

pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::Catalog(CatalogCommand::Export { data, out }) = &a.command {
        return super::catalog::export(data, out);
    }
    let default_tls = a.cluster.as_deref().map(|c| super::internal_tls::default_dir(c, "admin"));
    let internal = super::internal_tls::InternalTlsArgs {
        internal_tls: a.internal_tls.clone(),
        insecure_internal_http: a.insecure_internal_http,
    };
    super::internal_tls::install(&internal, default_tls)?;
    let (c, me) = client(&a)?;
    let json = a.json;
    let propose = |cmd: Command| {
        let c = &c;
        async move { c.propose(cmd).await.map_err(anyhow::Error::from) }
    };
    match a.command {
        AdminCommand::Status => status(&c, json).await?,
        AdminCommand::Node(n) => {
            let cmd = match n {
                NodeCommand::Add { site, addr, weight } => stage(Command::AddNode { site, addr, weight }),
                NodeCommand::Remove { id } => stage(Command::RemoveNode { id: parse_node(&id)? }),
                NodeCommand::SetWeight { id, weight } => stage(Command::SetNodeWeight { id: parse_node(&id)?, weight }),
                NodeCommand::Down { id } => Command::node_state(parse_node(&id)?, NodeState::Down),
                NodeCommand::Up { id } => Command::node_state(parse_node(&id)?, NodeState::Up),
                NodeCommand::Drain { id } => stage(Command::node_state(parse_node(&id)?, NodeState::Draining)),
                NodeCommand::Out { id } => Command::node_state(parse_node(&id)?, NodeState::Out),
            };
            report(&propose(cmd).await?, json)?;
        }
        AdminCommand::Site(s) => {
            let cmd = match s {
                SiteCommand::Add { name } => stage(Command::AddSite { site: name }),
                SiteCommand::Remove { name } => stage(Command::RemoveSite { site: name }),
                SiteCommand::Down { name } => Command::site_state(&name, NodeState::Down),
                SiteCommand::Out { name } => Command::site_state(&name, NodeState::Out),
                SiteCommand::Up { name } => Command::site_state(&name, NodeState::Up),
            };
            report(&propose(cmd).await?, json)?;
        }
        AdminCommand::Pg(PgCommand::Split { count }) => {
            report(&propose(stage(Command::SplitPgs { count })).await?, json)?;
        }
        AdminCommand::Bucket(BucketCommand::Create { name, owner, storage_class }) => {
            let bucket = Bucket {
                name,
                owner: owner.unwrap_or(me),
                created_at: now_secs(),
                storage_class,
                cors: None,
                versioning: Default::default(),
                lifecycle: None,
            };
            report(&propose(Command::CreateBucket { bucket }).await?, json)?;
        }
        AdminCommand::Bucket(BucketCommand::Delete { name, force }) => {
            if !force {
                bail!(
                    "not deleted: the catalog cannot tell whether bucket {name} is empty, and objects left in it would become unreachable. \
                     Delete it through S3 (`aws s3 rb s3://{name}`, which refuses a non-empty bucket), or add --force"
                );
            }
            report(&propose(Command::DeleteBucket { name }).await?, json)?;
        }
        AdminCommand::Bucket(BucketCommand::List) => {
            let view = c.catalog(true).await?;
            if json {
                return print_json(&view.buckets);
            }
            let rows: Vec<Vec<String>> = view
                .buckets
                .iter()
                .map(|b| vec![b.name.clone(), b.owner.clone(), b.storage_class.clone(), time_str(b.created_at)])
                .collect();
            print!("{}", table(&["BUCKET", "OWNER", "CLASS", "CREATED"], &rows));
        }
        AdminCommand::Key(KeyCommand::Create { admin, read_only, id }) => {
            let permissions = if admin {
                vec![Permission::Admin]
            } else if read_only {
                vec![Permission::Read]
            } else {
                vec![Permission::Read, Permission::Write]
            };
            let key = KeyRecord {
                id: id.unwrap_or_else(|| format!("SILLOK{}", super::random_hex(7).to_uppercase())),
                secret: super::random_hex(20),
                permissions: permissions.into_iter().collect(),
                enabled: true,
                created_at: now_secs(),
            };
            let p = propose(Command::CreateKey { key }).await?;
            let Outcome::KeyCreated { key } = &p.outcome else { bail!("unexpected answer: {:?}", p.outcome) };
            if json {
                #[derive(Serialize)]
                struct Created<'a> {
                    access_key_id: &'a str,
                    secret_access_key: &'a str,
                    permissions: Vec<String>,
                }
                return print_json(&Created {
                    access_key_id: &key.id,
                    secret_access_key: &key.secret,
                    permissions: key.permissions.iter().map(|p| p.to_string()).collect(),
                });
            }
            println!(
                "access key: {}\nsecret key: {}  (shown only now; keep it private)\npermissions: {}",
                key.id,
                key.secret,
                key.permissions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
            );
        }
        AdminCommand::Key(KeyCommand::List) => {
            let view = c.catalog(true).await?;
            if json {
                return print_json(&view.keys);
            }
            let rows: Vec<Vec<String>> = view
                .keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.permissions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
                        if k.enabled { "enabled".into() } else { "revoked".into() },
                        time_str(k.created_at),
                    ]
                })
                .collect();
            print!("{}", table(&["KEY", "PERMISSIONS", "STATE", "CREATED"], &rows));
        }
        AdminCommand::Key(KeyCommand::Revoke { id }) => report(&propose(Command::RevokeKey { id }).await?, json)?,
        AdminCommand::Rebalance(r) => super::rebalance::run(&c, r, json).await?,
        AdminCommand::Catalog(CatalogCommand::Backup { out }) => {
            let b = c.backup().await?;
            super::catalog::write_backup(&b, &out)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"file": out, "raft_index": b.raft_index, "version": b.version,
                        "epoch": b.catalog.epoch(), "buckets": b.catalog.buckets.len(), "keys": b.catalog.keys.len()})
                );
            } else {
                println!(
                    "wrote {} (mode 0600: it holds every S3 secret): catalog at index {} from replica {}, map epoch {}, {} buckets, {} keys",
                    out.display(),
                    b.raft_index,
                    b.replica,
                    b.catalog.epoch(),
                    b.catalog.buckets.len(),
                    b.catalog.keys.len()
                );
            }
        }
        AdminCommand::Catalog(CatalogCommand::Export { .. }) => unreachable!("handled before connecting"),
        AdminCommand::Repair(RepairCommand::Hold) => {
            report(&propose(Command::SetRepairHold { hold: true }).await?, json)?
        }
        AdminCommand::Repair(RepairCommand::Release) => {
            report(&propose(Command::SetRepairHold { hold: false }).await?, json)?
        }
        AdminCommand::Repair(RepairCommand::Status { watch }) => super::repair_status::run(&c, json, watch).await?,
        AdminCommand::Repair(RepairCommand::Throttle { mib_per_s: None, concurrency: None }) => {
            let t = c.status().await?.repair_throttle;
            if json {
                return print_json(&t);
            }
            match t {
                None => println!("no throttle set: each node uses its --rebuild-mib-per-s and --rebuild-concurrency"),
                Some(t) => println!("{}", describe_throttle(&t)),
            }
        }
        AdminCommand::Repair(RepairCommand::Throttle { mib_per_s, concurrency }) => {
            report(&propose(Command::SetRepairThrottle { mib_per_s, concurrency }).await?, json)?
        }
        AdminCommand::Replica(ReplicaCommand::Add { id, addr, site }) => {
            let r = c.add_replica(id, &addr, &site).await?;
            if json {
                return print_json(&r);
            }
            println!("replica {id} ({addr}, {site}) is a voter; voters now {:?}", r.voters);
        }
        AdminCommand::Replica(ReplicaCommand::Remove { id }) => {
            let r = c.remove_replica(id).await?;
            if json {
                return print_json(&r);
            }
            println!("replica {id} removed; voters now {:?}", r.voters);
        }
    }
    Ok(())
}
