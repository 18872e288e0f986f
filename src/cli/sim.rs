//! `sillok sim`: the placement at scale, without processes (issue 17, part 3).
//!
//! Owns: the command line of the simulation, the grid of configurations it
//! runs, one child process per configuration (this binary again with the
//! hidden `--child SPEC`, so that each configuration's peak RSS is its own,
//! less a baseline child that builds nothing), the time budget per child
//! (`--max-secs`: a child still running then is stopped and reported as not
//! finished, with the stages it got through), and the output: markdown
//! tables on stdout and in `<out>/results.md`, every report in
//! `<out>/results.json`, and SVG plots in `<out>/`. The measuring is
//! `crate::sim`'s.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sillok_placement::EcProfile;

use crate::sim::plot::{Plot, Series};
use crate::sim::{Change, Config, Report, measure, peak_rss_kib};

#[derive(clap::Args)]
pub struct SimArgs {
    /// Site counts to simulate (comma-separated). Default: 3,5,10 (quick: 3,5).
    #[arg(long, value_delimiter = ',')]
    pub sites: Vec<usize>,
    /// Nodes per site (comma-separated). Default: 10,30,100 (quick: 10).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// PG counts, powers of two (comma-separated). Default: 4096,16384,65536 (quick: 4096).
    #[arg(long, value_delimiter = ',')]
    pub pgs: Vec<u32>,
    /// EC profiles (comma-separated). Default: 4+2,6+3,8+4,10+5 (quick: 4+2,8+4).
    #[arg(long, value_delimiter = ',')]
    pub profiles: Vec<EcProfile>,
    /// The small grid (defaults above in parentheses), for a first look.
    #[arg(long)]
    pub quick: bool,
    /// Time budget of one configuration, in seconds: a configuration still
    /// running then is stopped and reported as not finished, and larger
    /// ones of the same sites and profile are skipped.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// Where the tables, the JSON reports and the SVG plots go.
    #[arg(long, default_value = "docs/scale")]
    pub out: PathBuf,
    /// Gateways per site, counted with the nodes as map followers.
    #[arg(long, default_value_t = 4)]
    pub gateways_per_site: usize,
    /// Seed of the node weights.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// The PG count of the plots against cluster size (default: the largest run).
    #[arg(long)]
    pub plot_pgs: Option<u32>,
    /// Run nothing: write the tables and plots again from an earlier run's
    /// `results.json` (e.g. with another `--plot-pgs`).
    #[arg(long)]
    pub replot: Option<PathBuf>,
    /// Internal: measure one configuration (SITESxNODES:PGS:K+M:SEED, or
    /// `baseline`) and print its report as JSON lines.
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Internal: changes the child skips (`node-add`, `node-remove`, `site-add`).
    #[arg(long, hide = true, value_delimiter = ',')]
    pub child_skip: Vec<String>,
}

/// How a configuration ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    Done {
        report: Report,
    },
    /// Stopped at the time budget; `report` holds the stages finished.
    NotFinished {
        after_s: u64,
        report: Option<Report>,
    },
    Failed {
        error: String,
        report: Option<Report>,
    },
    /// Not run: a smaller configuration of the same sites and profile did not finish.
    Skipped,
}

impl Outcome {
    fn report(&self) -> Option<&Report> {
        match self {
            Outcome::Done { report } => Some(report),
            Outcome::NotFinished { report, .. } | Outcome::Failed { report, .. } => report.as_ref(),
            Outcome::Skipped => None,
        }
    }

    /// The stage a configuration stopped in at its time budget.
    fn stuck_in(&self) -> Option<&'static str> {
        match self {
            Outcome::NotFinished { report, .. } => {
                // The stage after the last one finished (skipped ones are not in `stages`).
                let last = report.as_ref().and_then(|r| r.stages.last());
                let next = last.and_then(|l| crate::sim::STAGES.iter().position(|s| s == l)).map_or(0, |i| i + 1);
                Some(crate::sim::STAGES.get(next).copied().unwrap_or("site add"))
            }
            Outcome::Skipped => Some("skipped"),
            _ => None,
        }
    }

    fn status(&self) -> String {
        match self {
            Outcome::Done { .. } => "done".into(),
            Outcome::NotFinished { after_s, report } => {
                let last = report.as_ref().and_then(|r| r.stages.last().cloned()).unwrap_or_else(|| "nothing".into());
                format!("**not finished** in {after_s} s (done: {last})")
            }
            Outcome::Failed { error, .. } => format!("failed: {}", error.lines().last().unwrap_or("").trim()),
            Outcome::Skipped => "skipped (a smaller one did not finish)".into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Row {
    config: Config,
    #[serde(flatten)]
    outcome: Outcome,
}

pub fn run(a: &SimArgs) -> anyhow::Result<()> {
    if let Some(spec) = &a.child {
        let skip: Vec<Change> =
            Change::ALL.into_iter().filter(|c| a.child_skip.iter().any(|s| s == c.flag())).collect();
        return child(spec, &a.out, &skip);
    }
    if let Some(file) = &a.replot {
        #[derive(Deserialize)]
        struct Earlier {
            baseline_rss_kib: u64,
            rows: Vec<Row>,
        }
        let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let earlier: Earlier =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a sim results file", file.display()))?;
        std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
        write_outputs(&earlier.rows, earlier.baseline_rss_kib, a)?;
        print!("{}", tables(&earlier.rows, earlier.baseline_rss_kib, a));
        return Ok(());
    }
    let grid = grid(a);
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let baseline = match run_child(&exe, "baseline", &[], &a.out, a.max_secs) {
        Outcome::Done { report } => report.rss_peak_kib,
        other => bail!("the baseline child did not run: {}", other.status()),
    };
    eprintln!("sim: {} configurations, baseline RSS {} KiB", grid.len(), baseline);
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for c in grid {
        // The stages smaller configurations of the same sites and profile
        // were stuck in when their budget ran out: skipped here.
        let stuck: Vec<&str> = rows
            .iter()
            .filter(|r| {
                r.config.sites == c.sites
                    && r.config.profile == c.profile
                    && r.config.nodes_per_site <= c.nodes_per_site
                    && r.config.pgs <= c.pgs
            })
            .filter_map(|r| r.outcome.stuck_in())
            .collect();
        let skip: Vec<Change> = Change::ALL.into_iter().filter(|ch| stuck.contains(&ch.name())).collect();
        let outcome = if stuck.iter().any(|s| *s == "assign" || *s == "size" || *s == "skipped") {
            Outcome::Skipped
        } else {
            run_child(&exe, &c.spec(), &skip, &a.out, a.max_secs)
        };
        eprintln!("sim: {} {} ({:.0} s so far)", c.spec(), outcome.status(), started.elapsed().as_secs_f64());
        rows.push(Row { config: c, outcome });
        // Written after every configuration, so an interrupted run keeps what it measured.
        write_outputs(&rows, baseline, a)?;
    }
    print!("{}", tables(&rows, baseline, a));
    Ok(())
}

fn write_outputs(rows: &[Row], baseline: u64, a: &SimArgs) -> anyhow::Result<()> {
    std::fs::write(a.out.join("results.md"), tables(rows, baseline, a))?;
    let json = serde_json::json!({ "baseline_rss_kib": baseline, "seed": a.seed, "rows": rows });
    std::fs::write(a.out.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    for (name, plot) in plots(rows, baseline, a) {
        std::fs::write(a.out.join(name), plot.to_svg())?;
    }
    Ok(())
}

/// The configurations to run, cheapest first (so a time budget is met by the
/// small ones before the large ones try it).
fn grid(a: &SimArgs) -> Vec<Config> {
    let pick = |given: &[usize], full: &[usize], quick: &[usize]| -> Vec<usize> {
        if !given.is_empty() {
            given.to_vec()
        } else if a.quick {
            quick.to_vec()
        } else {
            full.to_vec()
        }
    };
    let sites = pick(&a.sites, &[3, 5, 10], &[3, 5]);
    let nodes = pick(&a.nodes, &[10, 30, 100], &[10]);
    let pgs: Vec<u32> = if !a.pgs.is_empty() {
        a.pgs.clone()
    } else if a.quick {
        vec![4096]
    } else {
        vec![4096, 16384, 65536]
    };
    let profiles: Vec<EcProfile> = if !a.profiles.is_empty() {
        a.profiles.clone()
    } else if a.quick {
        vec![EcProfile { k: 4, m: 2 }, EcProfile { k: 8, m: 4 }]
    } else {
        [(4, 2), (6, 3), (8, 4), (10, 5)].iter().map(|&(k, m)| EcProfile { k, m }).collect()
    };
    let mut out = Vec::new();
    for &s in &sites {
        for &n in &nodes {
            for &p in &pgs {
                for &profile in &profiles {
                    out.push(Config { sites: s, nodes_per_site: n, pgs: p, profile, seed: a.seed });
                }
            }
        }
    }
    out.sort_by_key(|c| (c.nodes() as u64 * u64::from(c.pgs) * c.profile.width() as u64, c.spec()));
    out
}

/// The child's side: measure one configuration, one JSON line per stage.
fn child(spec: &str, scratch: &Path, skip: &[Change]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if spec == "baseline" {
        let r = Report { spec: spec.into(), rss_peak_kib: peak_rss_kib(), ..Report::default() };
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
        return Ok(());
    }
    let c = Config::parse_spec(spec)?;
    let mut failed = None;
    let mut progress = |r: &Report| {
        let line = serde_json::to_string(r).map_err(std::io::Error::other);
        if let Err(e) = line.and_then(|l| writeln!(out, "{l}").and_then(|()| out.flush())) {
            failed.get_or_insert(e);
        }
    };
    measure(&c, scratch, skip, &mut progress)?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Runs one child to its end or its time budget.
fn run_child(exe: &Path, spec: &str, skip: &[Change], scratch: &Path, max_secs: u64) -> Outcome {
    let mut cmd = Command::new(exe);
    cmd.args(["sim", "--child", spec, "--out"]).arg(scratch);
    if !skip.is_empty() {
        cmd.arg("--child-skip").arg(skip.iter().map(|c| c.flag()).collect::<Vec<_>>().join(","));
    }
    let spawned = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut proc = match spawned {
        Ok(p) => p,
        Err(e) => return Outcome::Failed { error: format!("cannot start {}: {e}", exe.display()), report: None },
    };
    let mut stdout = proc.stdout.take().expect("piped");
    let mut stderr = proc.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let status = loop {
        match proc.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                // Our own child, by its handle.
                let _ = proc.kill();
                let _ = proc.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Outcome::Failed { error: format!("waiting for the child: {e}"), report: None },
        }
    };
    let text = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let report = text.lines().rev().find_map(|l| serde_json::from_str::<Report>(l).ok());
    match (status, report) {
        (None, report) => Outcome::NotFinished { after_s: max_secs, report },
        (Some(s), Some(report)) if s.success() => Outcome::Done { report },
        (Some(s), report) => Outcome::Failed { error: format!("{s}: {}", err.trim()), report },
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn kib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1024.0)
}

fn human(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn followers(c: &Config, a: &SimArgs) -> usize {
    c.nodes() + c.sites * a.gateways_per_site
}

fn change_of(r: &Report, change: Change) -> Option<&crate::sim::ChangeReport> {
    r.changes.iter().find(|ch| ch.change == change)
}

fn moved_cell(r: &Report, change: Change) -> String {
    match change_of(r, change) {
        None => "-".into(),
        Some(ch) if ch.error.as_deref() == Some(crate::sim::SKIPPED) => {
            "skipped (a smaller one ran out of time)".into()
        }
        Some(ch) if ch.error.is_some() => "refused".into(),
        Some(ch) => format!("{} / {:.0} = {:.2}", ch.moves.moved, ch.moves.minimum, ch.moves.ratio()),
    }
}

/// The three markdown tables: time, memory and balance; moves; map size and following.
fn tables(rows: &[Row], baseline: u64, a: &SimArgs) -> String {
    let mut s = String::new();
    let line = |s: &mut String, cells: &[String]| {
        s.push_str("| ");
        s.push_str(&cells.join(" | "));
        s.push_str(" |\n");
    };
    let head = |s: &mut String, cols: &[&str]| {
        line(s, &cols.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        line(s, &cols.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
    };
    let id = |r: &Row| {
        vec![
            format!("{}×{}", r.config.sites, r.config.nodes_per_site),
            r.config.nodes().to_string(),
            r.config.pgs.to_string(),
            r.config.profile.to_string(),
        ]
    };
    s.push_str(&format!(
        "Seed {}; weights 1-4 per node; followers per map change = nodes + {} gateways per site; RSS is the \
         child's peak (VmHWM) less a baseline child's ({} KiB).\n\n",
        a.seed, a.gateways_per_site, baseline
    ));
    s.push_str("### Assignment: time, memory, balance\n\n");
    head(
        &mut s,
        &[
            "sites×nodes",
            "nodes",
            "PGs",
            "profile",
            "status",
            "assign wall s",
            "assign CPU s",
            "validate s",
            "RSS after assign MiB",
            "peak RSS MiB",
            "slots per node (min-max)",
            "worst deviation from weight share %",
            "nodes beyond ±5%",
        ],
    );
    for r in rows {
        let mut cells = id(r);
        cells.push(r.outcome.status());
        match r.outcome.report().filter(|rep| !rep.stages.is_empty()) {
            Some(rep) => {
                cells.push(format!("{:.3}", rep.assign_wall_s));
                cells.push(format!("{:.3}", rep.assign_cpu_s));
                cells.push(format!("{:.3}", rep.validate_s));
                cells.push(format!("{:.1}", mib(rep.rss_assign_kib.saturating_sub(baseline))));
                cells.push(format!("{:.1}", mib(rep.rss_peak_kib.saturating_sub(baseline))));
                cells.push(format!("{}-{}", rep.balance.min_slots, rep.balance.max_slots));
                cells.push(format!("{:.2}", rep.balance.worst_pct));
                cells.push(format!("{} of {}", rep.balance.beyond, rep.balance.nodes));
            }
            None => cells.extend(std::iter::repeat_n("-".to_string(), 8)),
        }
        line(&mut s, &cells);
    }
    s.push_str("\n### Moves per change (slots moved / least possible = ratio; worst balance after the change)\n\n");
    head(
        &mut s,
        &[
            "sites×nodes",
            "nodes",
            "PGs",
            "profile",
            "node add",
            "node remove",
            "site add",
            "rows changed (add / remove / site)",
            "change wall s (add / remove / site)",
            "worst deviation after, % (add / remove / site)",
        ],
    );
    for r in rows {
        let Some(rep) = r.outcome.report().filter(|rep| !rep.changes.is_empty()) else { continue };
        let mut cells = id(r);
        for ch in Change::ALL {
            cells.push(moved_cell(rep, ch));
        }
        let per = |f: &dyn Fn(&crate::sim::ChangeReport) -> String| {
            Change::ALL
                .iter()
                .map(|c| change_of(rep, *c).filter(|ch| ch.error.is_none()).map(f).unwrap_or_else(|| "-".into()))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        cells.push(per(&|ch| ch.moves.rows_changed.to_string()));
        cells.push(per(&|ch| format!("{:.2}", ch.wall_s)));
        cells.push(per(&|ch| format!("{:.2}", ch.balance.worst_pct)));
        line(&mut s, &cells);
    }
    s.push_str("\n### Map size and epoch propagation\n\n");
    head(
        &mut s,
        &[
            "sites×nodes",
            "nodes",
            "PGs",
            "profile",
            "map JSON KiB (wire = disk)",
            "after node add KiB (with earlier rows)",
            "compact KiB (4 B/slot)",
            "follower decode+validate ms",
            "write+fsync ms",
            "followers",
            "bytes per change, whole map to all",
            "bytes per change, changed rows only",
            "node add as a delta KiB (what a follower receives)",
            "follower delta decode+apply ms",
        ],
    );
    for r in rows {
        let Some(rep) = r.outcome.report().filter(|rep| rep.stages.iter().any(|s| s == "size")) else { continue };
        let mut cells = id(r);
        let n = followers(&r.config, a);
        let add = change_of(rep, Change::NodeAdd).filter(|ch| ch.error.is_none());
        let width = r.config.profile.width() as f64;
        cells.push(format!("{} = {}", kib(rep.json_bytes), kib(rep.disk_bytes)));
        cells.push(add.map(|ch| kib(ch.json_bytes)).unwrap_or_else(|| "-".into()));
        cells.push(kib(rep.compact_bytes));
        cells.push(format!("{:.1}", rep.decode_validate_s * 1e3));
        cells.push(format!("{:.1}", rep.write_fsync_s * 1e3));
        cells.push(n.to_string());
        cells.push(add.map(|ch| human(ch.json_bytes as f64 * n as f64)).unwrap_or_else(|| "-".into()));
        cells.push(
            add.map(|ch| human(ch.moves.rows_changed as f64 * width * 4.0 * n as f64)).unwrap_or_else(|| "-".into()),
        );
        // Reports made before deltas existed have none.
        let delta = add.filter(|ch| ch.delta_bytes > 0);
        cells.push(delta.map(|ch| kib(ch.delta_bytes)).unwrap_or_else(|| "-".into()));
        cells.push(delta.map(|ch| format!("{:.1}", ch.delta_apply_s * 1e3)).unwrap_or_else(|| "-".into()));
        line(&mut s, &cells);
    }
    let done: Vec<&Row> = rows.iter().filter(|r| matches!(r.outcome, Outcome::Done { .. })).collect();
    let largest = done.iter().max_by_key(|r| {
        (r.config.nodes() as u64 * u64::from(r.config.pgs) * r.config.profile.width() as u64, r.config.nodes())
    });
    s.push_str("\n### Largest and limits\n\n");
    if let Some(r) = largest {
        s.push_str(&format!(
            "- Largest configuration finished: {} sites × {} nodes, {} PGs, {} ({} slots).\n",
            r.config.sites,
            r.config.nodes_per_site,
            r.config.pgs,
            r.config.profile,
            u64::from(r.config.pgs) * r.config.profile.width() as u64
        ));
    }
    for r in rows.iter().filter(|r| !matches!(r.outcome, Outcome::Done { .. })) {
        s.push_str(&format!("- {}: {}\n", r.config.spec(), r.outcome.status()));
    }
    s
}

/// The plots: name → plot.
fn plots(rows: &[Row], baseline: u64, a: &SimArgs) -> Vec<(String, Plot)> {
    let max_pgs = a.plot_pgs.unwrap_or_else(|| rows.iter().map(|r| r.config.pgs).max().unwrap_or(0));
    let max_nodes = rows.iter().map(|r| r.config.nodes_per_site).max().unwrap_or(0);
    // One series per (sites, profile): x = total nodes at the largest PG count.
    let by_nodes = |f: &dyn Fn(&Row, &Report) -> Option<f64>| -> Vec<Series> {
        let mut series: BTreeMap<(usize, u8, u8), Vec<(f64, f64)>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.config.pgs == max_pgs) {
            let key = (r.config.sites, r.config.profile.k, r.config.profile.m);
            let entry = series.entry(key).or_default();
            if let Some(y) = r.outcome.report().and_then(|rep| f(r, rep)) {
                entry.push((r.config.nodes() as f64, y));
            }
        }
        series.into_iter().map(|((s, k, m), points)| Series { name: format!("{k}+{m}, {s} sites"), points }).collect()
    };
    let by_pgs = |f: &dyn Fn(&Row, &Report) -> Option<f64>| -> Vec<Series> {
        let mut series: BTreeMap<(usize, u8, u8), Vec<(f64, f64)>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.config.nodes_per_site == max_nodes) {
            let key = (r.config.sites, r.config.profile.k, r.config.profile.m);
            let entry = series.entry(key).or_default();
            if let Some(y) = r.outcome.report().and_then(|rep| f(r, rep)) {
                entry.push((f64::from(r.config.pgs), y));
            }
        }
        series
            .into_iter()
            .map(|((s, k, m), points)| Series { name: format!("{k}+{m}, {s}×{max_nodes} nodes"), points })
            .collect()
    };
    let assigned = |rep: &Report| rep.stages.iter().any(|s| s == "assign");
    let moved = |change: Change| {
        move |_: &Row, rep: &Report| change_of(rep, change).filter(|ch| ch.error.is_none()).map(|ch| ch.moves.ratio())
    };
    let plot = |title: String, x: &str, y: &str, y_log: bool, series: Vec<Series>| Plot {
        title,
        x_label: x.into(),
        y_label: y.into(),
        y_log,
        series,
    };
    let nodes_x = "nodes in the cluster";
    let at = format!("{max_pgs} PGs");
    vec![
        (
            "assign-time.svg".into(),
            plot(
                format!("Assignment wall time, first map ({at})"),
                nodes_x,
                "seconds",
                true,
                by_nodes(&|_, rep| assigned(rep).then_some(rep.assign_wall_s)),
            ),
        ),
        (
            "assign-time-vs-pgs.svg".into(),
            plot(
                format!("Assignment wall time against PG count ({max_nodes} nodes per site)"),
                "placement groups",
                "seconds",
                true,
                by_pgs(&|_, rep| assigned(rep).then_some(rep.assign_wall_s)),
            ),
        ),
        (
            "memory.svg".into(),
            plot(
                format!("Peak RSS above baseline, map + three changes ({at})"),
                nodes_x,
                "MiB",
                true,
                by_nodes(&|_, rep| assigned(rep).then_some(mib(rep.rss_peak_kib.saturating_sub(baseline)))),
            ),
        ),
        (
            "balance.svg".into(),
            plot(
                format!("Worst node deviation from its weight share, first map ({at})"),
                nodes_x,
                "percent",
                false,
                by_nodes(&|_, rep| assigned(rep).then_some(rep.balance.worst_pct)),
            ),
        ),
        (
            "moves-node-add.svg".into(),
            plot(
                format!("Node add: slots moved / minimum ({at})"),
                nodes_x,
                "ratio",
                false,
                by_nodes(&moved(Change::NodeAdd)),
            ),
        ),
        (
            "moves-node-remove.svg".into(),
            plot(
                format!("Node remove: slots moved / minimum ({at})"),
                nodes_x,
                "ratio",
                false,
                by_nodes(&moved(Change::NodeRemove)),
            ),
        ),
        (
            "moves-site-add.svg".into(),
            plot(
                format!("Site add: slots moved / minimum ({at})"),
                nodes_x,
                "ratio",
                false,
                by_nodes(&moved(Change::SiteAdd)),
            ),
        ),
        (
            "map-size.svg".into(),
            plot(
                format!("Map as JSON, bytes on the wire and on disk ({at})"),
                nodes_x,
                "bytes",
                true,
                by_nodes(&|_, rep| (rep.json_bytes > 0).then_some(rep.json_bytes as f64)),
            ),
        ),
        (
            "propagation.svg".into(),
            plot(
                format!("Epoch propagation: bytes to all followers per map change ({at})"),
                nodes_x,
                "bytes",
                true,
                by_nodes(&|r, rep| {
                    change_of(rep, Change::NodeAdd)
                        .filter(|ch| ch.error.is_none())
                        .map(|ch| ch.json_bytes as f64 * followers(&r.config, a) as f64)
                }),
            ),
        ),
        (
            "follower-decode.svg".into(),
            plot(
                format!("One follower's decode + validate of a new map ({at})"),
                nodes_x,
                "milliseconds",
                true,
                by_nodes(&|_, rep| (rep.json_bytes > 0).then_some(rep.decode_validate_s * 1e3)),
            ),
        ),
    ]
}
