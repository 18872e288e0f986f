//! The two workloads: the mixed chat-media workload of WORKLOAD.md and the
//! single-size throughput run (`--objects-only`).
//!
//! The mixed workload is planned by one sequential planner seeded from
//! `--seed`: the n-th operation (its kind, object, size, range) depends only on
//! the seed and n, so two runs issue the same requests (their interleaving
//! across the concurrent workers differs, as it must). A GET or HEAD planned
//! for an object whose PUT is still in flight waits for it (the wait is not
//! counted in the latency); one whose PUT failed is counted as `skipped`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::data::mix;
use crate::s3::{OpError, S3};
use crate::stats::{Outcome, RowKey, Stats};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Deterministic SplitMix64 generator for the planner.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed ^ 0x10ad_6e11))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    pub fn uniform(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        ((a + self.unit() * (b - a)).exp().round() as u64).clamp(lo, hi)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    Thumbnail,
    Photo,
    Voice,
    Video,
}

impl Class {
    pub fn key_part(self) -> &'static str {
        match self {
            Class::Thumbnail => "thumb",
            Class::Photo => "photo",
            Class::Voice => "voice",
            Class::Video => "video",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Class::Thumbnail => "thumbnail",
            Class::Photo => "photo",
            Class::Voice => "voice/file",
            Class::Video => "video",
        }
    }
    fn order(self) -> u8 {
        self as u8
    }
    /// Class by count: 40% / 45% / 10% / 5%, sizes as in WORKLOAD.md.
    fn pick(rng: &mut Rng) -> (Class, u64) {
        let r = rng.unit();
        if r < 0.40 {
            (Class::Thumbnail, rng.uniform(8 * KIB, 32 * KIB))
        } else if r < 0.85 {
            (Class::Photo, rng.log_uniform(100 * KIB, 2 * MIB))
        } else if r < 0.95 {
            (Class::Voice, rng.log_uniform(32 * KIB, 4 * MIB))
        } else {
            (Class::Video, rng.uniform(8 * MIB, 64 * MIB))
        }
    }
}

/// Row kinds, in report order.
#[derive(Clone, Copy)]
pub enum OpKind {
    Put,
    PutMultipart,
    Get,
    GetRange,
    Head,
    Delete,
    List,
}

impl OpKind {
    pub fn label(self) -> &'static str {
        match self {
            OpKind::Put => "PUT",
            OpKind::PutMultipart => "PUT multipart",
            OpKind::Get => "GET",
            OpKind::GetRange => "GET range",
            OpKind::Head => "HEAD",
            OpKind::Delete => "DELETE",
            OpKind::List => "LIST",
        }
    }
    /// Which aggregate ("ALL PUT", "ALL GET", ...) the row belongs to.
    pub fn family(label: &str) -> &'static str {
        match label {
            "PUT" | "PUT multipart" => "PUT",
            "GET" | "GET range" => "GET",
            "HEAD" => "HEAD",
            "DELETE" => "DELETE",
            _ => "LIST",
        }
    }
}

pub fn row_key(class_order: u8, class: &str, op: OpKind) -> RowKey {
    ((class_order, class.to_string()), (op as u8, op.label().to_string()))
}

fn outcome(r: Result<u64, OpError>) -> Outcome {
    match r {
        Ok(bytes) => Outcome::Ok { bytes },
        Err(OpError::Failed(m)) => Outcome::Err(m),
        Err(OpError::Mismatch(m)) => Outcome::Mismatch(m),
    }
}

pub struct Ctx {
    pub s3: S3,
    pub prefix: String,
    pub concurrency: usize,
    pub stop: AtomicBool,
    pub timeout: Duration,
}

// ---------------------------------------------------------------- mixed

const PENDING: u8 = 0;
const WRITTEN: u8 = 1;
const FAILED: u8 = 2;

struct Obj {
    name: String,
    class: Class,
    size: u64,
    state: AtomicU8,
    readers: AtomicU32,
}

/// Held by a planned GET/HEAD until it completes, so a later DELETE of the same
/// object waits for it instead of racing it.
struct Reader(Arc<Obj>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

fn reader(o: &Arc<Obj>) -> Reader {
    o.readers.fetch_add(1, Ordering::AcqRel);
    Reader(o.clone())
}

enum Planned {
    Put(Arc<Obj>),
    Get(Reader, Option<(u64, u64)>),
    Head(Reader),
    Delete(Arc<Obj>),
    List(String),
}

pub struct MixedLimits {
    pub max_ops: Option<u64>,
    pub deadline: Instant,
    pub part_size: u64,
}

struct Planner {
    rng: Rng,
    objects: Vec<Arc<Obj>>,
    /// Indices into `objects` of objects not deleted, oldest first.
    live: Vec<usize>,
    issued: u64,
}

impl Planner {
    fn new_object(&mut self, prefix: &str) -> Planned {
        let (class, size) = Class::pick(&mut self.rng);
        let n = self.objects.len();
        let obj = Arc::new(Obj {
            name: format!("{prefix}{}/{n:08}", class.key_part()),
            class,
            size,
            state: AtomicU8::new(PENDING),
            readers: AtomicU32::new(0),
        });
        self.objects.push(obj.clone());
        self.live.push(n);
        Planned::Put(obj)
    }

    /// A GET target: 80% among the newest 10% of live objects, else uniform.
    fn read_target(&mut self) -> Arc<Obj> {
        let len = self.live.len() as u64;
        let i = if self.rng.unit() < 0.8 {
            let newest = len.div_ceil(10).max(1);
            len - 1 - self.rng.below(newest)
        } else {
            self.rng.below(len)
        };
        self.objects[self.live[i as usize]].clone()
    }

    fn next(&mut self, prefix: &str) -> Planned {
        self.issued += 1;
        let r = self.rng.unit();
        let live = self.live.len();
        if live == 0 {
            return self.new_object(prefix);
        }
        if r < 1.0 / 500.0 {
            // A prefix that selects up to ~100 keys of one class.
            let o = self.read_target();
            let digits = &o.name[o.name.len() - 8..o.name.len() - 2];
            return Planned::List(format!("{prefix}{}/{digits}", o.class.key_part()));
        }
        if r < 1.0 / 500.0 + 1.0 / 200.0 {
            if live < 10 {
                return self.new_object(prefix);
            }
            // An old object: uniform among the older half.
            let i = self.rng.below((live / 2) as u64) as usize;
            let idx = self.live.remove(i);
            return Planned::Delete(self.objects[idx].clone());
        }
        if r < 1.0 / 500.0 + 1.0 / 200.0 + 1.0 / 50.0 {
            let o = self.read_target();
            return Planned::Head(reader(&o));
        }
        // The rest: 1 PUT for every 10 GETs.
        if self.rng.below(11) == 0 {
            return self.new_object(prefix);
        }
        let o = self.read_target();
        let range = if o.class == Class::Video && self.rng.below(10) != 0 {
            let start = self.rng.below(o.size - MIB + 1);
            Some((start, start + MIB))
        } else {
            None
        };
        Planned::Get(reader(&o), range)
    }
}

pub struct Mixed {
    ctx: Arc<Ctx>,
    planner: Mutex<Planner>,
    limits: MixedLimits,
    put_done: Notify,
    pub stats: Arc<Stats>,
}

impl Mixed {
    pub fn new(ctx: Arc<Ctx>, seed: u64, limits: MixedLimits) -> Arc<Self> {
        Arc::new(Mixed {
            ctx,
            planner: Mutex::new(Planner { rng: Rng::new(seed), objects: Vec::new(), live: Vec::new(), issued: 0 }),
            limits,
            put_done: Notify::new(),
            stats: Arc::new(Stats::default()),
        })
    }

    fn plan(&self) -> Option<Planned> {
        if self.ctx.stop.load(Ordering::Relaxed) || Instant::now() >= self.limits.deadline {
            return None;
        }
        let mut p = self.planner.lock().unwrap();
        if self.limits.max_ops.is_some_and(|m| p.issued >= m) {
            return None;
        }
        Some(p.next(&self.ctx.prefix))
    }

    /// Number of objects planned so far (written or not).
    pub fn objects_planned(&self) -> usize {
        self.planner.lock().unwrap().objects.len()
    }

    /// Waits until the PUT of `o` has finished; false if it failed or took too long.
    async fn written(&self, o: &Obj) -> bool {
        let give_up = Instant::now() + self.ctx.timeout * 20;
        loop {
            let notified = self.put_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match o.state.load(Ordering::Acquire) {
                WRITTEN => return true,
                FAILED => return false,
                _ => {}
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return false;
            }
        }
    }

    pub async fn run(self: Arc<Self>) {
        let mut workers = Vec::new();
        for _ in 0..self.ctx.concurrency {
            let me = self.clone();
            workers.push(tokio::spawn(async move {
                while let Some(op) = me.plan() {
                    me.execute(op).await;
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
    }

    async fn execute(&self, op: Planned) {
        let s3 = &self.ctx.s3;
        match op {
            Planned::Put(o) => {
                let kind = if o.class == Class::Video { OpKind::PutMultipart } else { OpKind::Put };
                let t = Instant::now();
                let r = match o.class {
                    Class::Video => s3.put_multipart(&o.name, o.size, self.limits.part_size).await,
                    Class::Photo => s3.put(&o.name, o.size, Some("image/jpeg")).await,
                    _ => s3.put(&o.name, o.size, None).await,
                };
                let elapsed = t.elapsed();
                o.state.store(if r.is_ok() { WRITTEN } else { FAILED }, Ordering::Release);
                self.put_done.notify_waiters();
                self.stats.record(row_key(o.class.order(), o.class.label(), kind), elapsed, outcome(r));
            }
            Planned::Get(rd, range) => {
                let o = &rd.0;
                let kind = if range.is_some() { OpKind::GetRange } else { OpKind::Get };
                let key = row_key(o.class.order(), o.class.label(), kind);
                if !self.written(o).await {
                    self.stats.record(key, Duration::ZERO, Outcome::Skipped);
                    return;
                }
                let t = Instant::now();
                let r = s3.get(&o.name, o.size, range).await;
                self.stats.record(key, t.elapsed(), outcome(r));
            }
            Planned::Head(rd) => {
                let o = &rd.0;
                let key = row_key(o.class.order(), o.class.label(), OpKind::Head);
                if !self.written(o).await {
                    self.stats.record(key, Duration::ZERO, Outcome::Skipped);
                    return;
                }
                let t = Instant::now();
                let r = s3.head(&o.name, o.size).await;
                self.stats.record(key, t.elapsed(), outcome(r));
            }
            Planned::Delete(o) => {
                let key = row_key(o.class.order(), o.class.label(), OpKind::Delete);
                if !self.written(&o).await {
                    self.stats.record(key, Duration::ZERO, Outcome::Skipped);
                    return;
                }
                // Let GETs/HEADs planned before this DELETE finish first.
                let give_up = Instant::now() + self.ctx.timeout * 2;
                while o.readers.load(Ordering::Acquire) > 0 && Instant::now() < give_up {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let t = Instant::now();
                let r = s3.delete(&o.name).await;
                self.stats.record(key, t.elapsed(), outcome(r));
            }
            Planned::List(prefix) => {
                let key = row_key(9, "-", OpKind::List);
                let t = Instant::now();
                let r = s3.list(&prefix).await.map(|_| 0);
                self.stats.record(key, t.elapsed(), outcome(r));
            }
        }
    }
}

// ---------------------------------------------------------------- objects-only

pub struct ObjectsOnly {
    pub ctx: Arc<Ctx>,
    pub size: u64,
    pub label: String,
    pub count: u64,
    pub duration: Option<Duration>,
    /// Use multipart uploads with this part size (objects larger than it).
    pub part_size: Option<u64>,
}

impl ObjectsOnly {
    fn name(&self, i: u64) -> String {
        format!("{}oo-{}/{i:08}", self.ctx.prefix, self.label)
    }

    /// Phase 1: PUT up to `count` objects. Returns the numbers written.
    pub async fn put_phase(self: &Arc<Self>, stats: Arc<Stats>) -> Vec<u64> {
        self.phase(stats, None, false).await
    }

    /// Phase 2: GET (whole) each object written in phase 1.
    pub async fn get_phase(self: &Arc<Self>, stats: Arc<Stats>, written: Vec<u64>) {
        self.phase(stats, Some(Arc::new(written)), false).await;
    }

    /// HEADs every written object (checks Content-Length).
    pub async fn head_phase(self: &Arc<Self>, stats: Arc<Stats>, written: Vec<u64>) {
        self.phase(stats, Some(Arc::new(written)), true).await;
    }

    async fn phase(self: &Arc<Self>, stats: Arc<Stats>, gets: Option<Arc<Vec<u64>>>, heads: bool) -> Vec<u64> {
        let next = Arc::new(AtomicU64::new(0));
        let done = Arc::new(Mutex::new(Vec::new()));
        let deadline = self.duration.map(|d| Instant::now() + d);
        let mut workers = Vec::new();
        for _ in 0..self.ctx.concurrency {
            let (me, next, done, stats, gets) = (self.clone(), next.clone(), done.clone(), stats.clone(), gets.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    if me.ctx.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let s3 = &me.ctx.s3;
                    let t = Instant::now();
                    let (kind, r, n) = match &gets {
                        None => {
                            if i >= me.count {
                                break;
                            }
                            let name = me.name(i);
                            match me.part_size {
                                Some(p) if me.size > p => {
                                    (OpKind::PutMultipart, s3.put_multipart(&name, me.size, p).await, i)
                                }
                                _ => (OpKind::Put, s3.put(&name, me.size, None).await, i),
                            }
                        }
                        Some(list) => {
                            let Some(&n) = list.get(i as usize) else {
                                break;
                            };
                            if heads {
                                (OpKind::Head, s3.head(&me.name(n), me.size).await, n)
                            } else {
                                (OpKind::Get, s3.get(&me.name(n), me.size, None).await, n)
                            }
                        }
                    };
                    let ok = r.is_ok();
                    stats.record(row_key(0, &me.label, kind), t.elapsed(), outcome(r));
                    if ok && gets.is_none() {
                        done.lock().unwrap().push(n);
                    }
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
        let mut v = std::mem::take(&mut *done.lock().unwrap());
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_is_deterministic_and_follows_the_mix() {
        let run = || {
            let mut p = Planner { rng: Rng::new(42), objects: Vec::new(), live: Vec::new(), issued: 0 };
            let mut kinds = [0u32; 5];
            let mut trace = Vec::new();
            for _ in 0..200_000 {
                let (k, s) = match p.next("p/") {
                    Planned::Put(o) => (0, o.name.clone()),
                    Planned::Get(r, range) => (1, format!("{}{range:?}", r.0.name)),
                    Planned::Head(r) => (2, r.0.name.clone()),
                    Planned::Delete(o) => (3, o.name.clone()),
                    Planned::List(pre) => (4, pre),
                };
                kinds[k] += 1;
                if trace.len() < 1000 {
                    trace.push(s);
                }
            }
            (kinds, trace, p.objects.iter().filter(|o| o.class == Class::Video).count(), p.objects.len())
        };
        let (a, ta, videos, objects) = run();
        let (b, tb, _, _) = run();
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        let n = 200_000f64;
        let near = |got: u32, want: f64| ((got as f64) - want).abs() / want < 0.1;
        assert!(near(a[2], n / 50.0), "HEAD {a:?}");
        assert!(near(a[3], n / 200.0), "DELETE {a:?}");
        assert!(near(a[4], n / 500.0), "LIST {a:?}");
        assert!(near(a[1], a[0] as f64 * 10.0), "GET:PUT {a:?}");
        assert!(near(videos as u32, objects as f64 * 0.05), "videos {videos} of {objects}");
    }
}
