//! Shard files on the node's disk.
//!
//! Owns: `<data>/shards/` (one file per shard) and `<data>/tmp/` (uploads in
//! progress). Everything here is synchronous, block-at-a-time I/O; the server
//! runs it on the blocking pool.
//!
//! Layout: shard `<object_id>.<index>` lives at
//! `<data>/shards/<object_id[0..2]>/<object_id>.<index>`. A file is a 64-byte
//! header followed by the shard's blocks as frames (see `frame`):
//!
//! ```text
//! offset size  field
//!  0      8    magic "SLKSHRD1"
//!  8      2    format version, u16 LE (1)
//! 10      1    k
//! 11      1    m
//! 12      1    shard index
//! 13      3    reserved, zero
//! 16      4    block_size, u32 LE
//! 20      4    block count, u32 LE
//! 24      8    data_len (sum of the blocks' lengths), u64 LE
//! 32     16    object id (the 32 hex digits as 16 raw bytes)
//! 48     12    codec id, ASCII, zero-padded (e.g. "rs-gf8-v1")
//! 60      4    first 4 bytes of blake3(bytes 0..60)
//! 64      ...  records: [len u32 LE][blake3(data) 32][data]
//! ```
//!
//! Invariants:
//! - Every record but the last holds exactly `block_size` bytes and the last at
//!   most `block_size`, so record i starts at `64 + i * (36 + block_size)` and
//!   the file is exactly `64 + blocks * 36 + data_len` bytes long.
//! - A file exists under `shards/` only if it is complete: it was written in
//!   `tmp/` under a unique name, every frame's hash was checked as it arrived,
//!   the block count and sizes matched the declaration, the header was written,
//!   the file fsynced, renamed into place (atomic), and the directory fsynced.
//!   Any failure or abort before that removes the temporary file
//!   ([`ShardWriter`]'s `Drop`). Concurrent writers of one shard never share a
//!   file; the last rename wins, and either result is a whole, valid shard.
//! - A block is handed out only after its blake3 hash matched again
//!   ([`ShardReader::read_block`]); a mismatch is [`NodeError::Corrupt`], never
//!   the bad bytes.
//! - Memory is bounded by one block (plus one network chunk) per reader/writer.
//! - `tmp/` holds nothing worth keeping: [`ShardStore::open`] empties it.
//! - [`ShardStore::usage`] counts the shard files and their bytes: counted
//!   once at open, then kept by every commit (replacing a file counts the
//!   difference) and delete. It is a report, not a limit.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::api::{PgSelector, PgShard, PgShardList, ShardId, ShardInfo, ShardList};
use crate::error::NodeError;
use sillok_model::frame::{FRAME_HEADER_LEN, Frame, FrameDecoder, FrameDigest, FrameError, MAX_BLOCK_LEN};
use sillok_model::placement;

pub const MAGIC: &[u8; 8] = b"SLKSHRD1";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
/// Longest codec id the header can hold.
pub const CODEC_ID_MAX: usize = 12;
/// Most blocks one shard may declare (a sanity bound: 2^24 blocks of 256 KiB is 4 TiB).
pub const MAX_BLOCKS: u32 = 1 << 24;
/// Longest page [`ShardStore::list`] returns.
pub const MAX_LIST: u32 = 10_000;
pub const DEFAULT_LIST: u32 = 1_000;

/// What an upload declares about its shard (from the `x-sillok-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    pub codec: String,
    pub k: u8,
    pub m: u8,
    pub block_size: u32,
    pub blocks: u32,
}

impl ShardMeta {
    pub fn check(&self, index: u8) -> Result<(), NodeError> {
        let bad = |s: String| Err(NodeError::BadRequest(s));
        if self.codec.is_empty()
            || self.codec.len() > CODEC_ID_MAX
            || !self.codec.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return bad(format!("codec id must be 1-{CODEC_ID_MAX} characters of [A-Za-z0-9._-]"));
        }
        if self.k == 0 {
            return bad("k must be at least 1".into());
        }
        let width = u16::from(self.k) + u16::from(self.m);
        if width > 255 {
            return bad("k+m must be at most 255".into());
        }
        if u16::from(index) >= width {
            return bad(format!("shard index {index} is not below k+m={width}"));
        }
        if self.block_size == 0 || self.block_size as usize > MAX_BLOCK_LEN {
            return bad(format!("block size must be 1..={MAX_BLOCK_LEN}"));
        }
        if self.blocks > MAX_BLOCKS {
            return bad(format!("at most {MAX_BLOCKS} blocks per shard"));
        }
        Ok(())
    }
}

/// The decoded header of a shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    pub id: ShardId,
    pub meta: ShardMeta,
    pub data_len: u64,
}

impl ShardHeader {
    pub fn info(&self) -> ShardInfo {
        ShardInfo {
            id: self.id.clone(),
            blocks: self.meta.blocks,
            block_size: self.meta.block_size,
            data_len: self.data_len,
        }
    }

    /// Bytes from the start of one record to the start of the next.
    fn stride(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.meta.block_size)
    }

    /// Offset of record `i` in the file.
    pub fn record_offset(&self, i: u32) -> u64 {
        HEADER_LEN as u64 + u64::from(i) * self.stride()
    }

    /// Data length of block `i` (`i < blocks`).
    pub fn block_len(&self, i: u32) -> u64 {
        let bs = u64::from(self.meta.block_size);
        if i + 1 < self.meta.blocks { bs } else { self.data_len - bs * u64::from(self.meta.blocks - 1) }
    }

    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.meta.blocks) * FRAME_HEADER_LEN as u64 + self.data_len
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[10] = self.meta.k;
        h[11] = self.meta.m;
        h[12] = self.id.index;
        h[16..20].copy_from_slice(&self.meta.block_size.to_le_bytes());
        h[20..24].copy_from_slice(&self.meta.blocks.to_le_bytes());
        h[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        hex::decode_to_slice(&self.id.object_id, &mut h[32..48]).expect("object id validated as 32 hex digits");
        h[48..48 + self.meta.codec.len()].copy_from_slice(self.meta.codec.as_bytes());
        let sum = blake3::hash(&h[..60]);
        h[60..64].copy_from_slice(&sum.as_bytes()[..4]);
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, String> {
        if &h[0..8] != MAGIC {
            return Err("not a shard file (bad magic)".into());
        }
        if blake3::hash(&h[..60]).as_bytes()[..4] != h[60..64] {
            return Err("header checksum mismatch".into());
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != FORMAT_VERSION {
            return Err(format!("unknown shard format version {version}"));
        }
        let codec_len = h[48..60].iter().position(|&b| b == 0).unwrap_or(CODEC_ID_MAX);
        let codec = std::str::from_utf8(&h[48..48 + codec_len]).map_err(|_| "codec id is not ASCII")?.to_string();
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let meta = ShardMeta { codec, k: h[10], m: h[11], block_size: u32_at(16), blocks: u32_at(20) };
        let header = ShardHeader {
            id: ShardId { object_id: hex::encode(&h[32..48]), index: h[12] },
            meta,
            data_len: u64::from_le_bytes(h[24..32].try_into().expect("8 bytes")),
        };
        header.meta.check(header.id.index).map_err(|e| format!("header fields out of range: {e}"))?;
        let bs = u64::from(header.meta.block_size);
        let blocks = u64::from(header.meta.blocks);
        // Blocks are at most 2^24 and sizes at most 2^24: no overflow.
        let ok_len = if blocks == 0 {
            header.data_len == 0
        } else {
            header.data_len >= bs * (blocks - 1) && header.data_len <= bs * blocks
        };
        if !ok_len {
            return Err("data length does not fit the block count and size".into());
        }
        Ok(header)
    }
}

/// Parses a shard file name `<32 hex>.<index>`.
pub fn parse_file_name(name: &str) -> Option<ShardId> {
    let (oid, idx) = name.split_once('.')?;
    if !ShardId::is_valid_object_id(oid) || idx.is_empty() || idx.len() > 3 || !idx.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if idx.len() > 1 && idx.starts_with('0') {
        return None;
    }
    let index: u8 = idx.parse().ok()?;
    Some(ShardId { object_id: oid.to_string(), index })
}

fn check_id(id: &ShardId) -> Result<(), NodeError> {
    if ShardId::is_valid_object_id(&id.object_id) {
        Ok(())
    } else {
        Err(NodeError::BadRequest("object id must be 32 lowercase hex digits".into()))
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The shard files of one node.
#[derive(Debug, Clone)]
pub struct ShardStore {
    shards: PathBuf,
    tmp: PathBuf,
    usage: std::sync::Arc<Usage>,
}

/// How much the shard files hold (see the invariants).
#[derive(Debug, Default)]
pub struct Usage {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Usage {
    /// `(shard files, bytes)`.
    pub fn get(&self) -> (u64, u64) {
        (self.files.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    fn added(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn removed(&self, bytes: u64) {
        let _ = self.files.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(bytes)));
    }
}

/// Counts the files under `shards/` (`<xy>/<name>`) and their bytes.
fn count_usage(shards: &Path) -> Result<Usage, NodeError> {
    let usage = Usage::default();
    for dir in fs::read_dir(shards)? {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        for f in fs::read_dir(dir.path())? {
            let f = f?;
            let meta = f.metadata()?;
            if meta.is_file() {
                usage.added(meta.len());
            }
        }
    }
    Ok(usage)
}

impl ShardStore {
    /// Opens (creating if needed) the shard store under `data_dir` and removes
    /// every leftover temporary file.
    pub fn open(data_dir: &Path) -> Result<Self, NodeError> {
        let shards = data_dir.join("shards");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&shards)?;
        fs::create_dir_all(&tmp)?;
        let mut removed = 0usize;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            let path = entry.path();
            let res = if entry.file_type()?.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            match res {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove stale temporary file"),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed stale temporary shard files");
            fsync_dir(&tmp)?;
        }
        fsync_dir(data_dir)?;
        let usage = std::sync::Arc::new(count_usage(&shards)?);
        Ok(ShardStore { shards, tmp, usage })
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// What the shard files hold now.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    pub fn usage_handle(&self) -> std::sync::Arc<Usage> {
        self.usage.clone()
    }

    fn dir_of(&self, id: &ShardId) -> PathBuf {
        self.shards.join(&id.object_id[..2])
    }

    pub fn path_of(&self, id: &ShardId) -> PathBuf {
        self.dir_of(id).join(id.file_name())
    }

    /// Starts an upload into a fresh temporary file.
    pub fn begin_write(&self, id: &ShardId, meta: ShardMeta) -> Result<ShardWriter, NodeError> {
        check_id(id)?;
        meta.check(id.index)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path =
            self.tmp.join(format!("{}.{:016x}.{}.{n}.tmp", id.file_name(), rand::random::<u64>(), std::process::id()));
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp_path)?;
        let mut w = ShardWriter {
            out: Some(BufWriter::with_capacity(64 << 10, file)),
            tmp_path,
            dir: self.dir_of(id),
            shards_root: self.shards.clone(),
            final_path: self.path_of(id),
            header: ShardHeader { id: id.clone(), meta, data_len: 0 },
            decoder: FrameDecoder::default(),
            digest: FrameDigest::default(),
            received: 0,
            done: false,
            usage: self.usage.clone(),
        };
        // Room for the header, written last.
        w.out.as_mut().expect("open").write_all(&[0u8; HEADER_LEN])?;
        Ok(w)
    }

    /// The shard's header, `None` if there is no such shard.
    pub fn stat(&self, id: &ShardId) -> Result<Option<ShardInfo>, NodeError> {
        Ok(self.open_read(id)?.map(|r| r.header.info()))
    }

    /// Opens a shard for reading; `None` if absent. The header is checked
    /// (magic, checksum, identity, file length).
    pub fn open_read(&self, id: &ShardId) -> Result<Option<ShardReader>, NodeError> {
        check_id(id)?;
        let path = self.path_of(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut raw = [0u8; HEADER_LEN];
        let corrupt = |why: String| NodeError::Corrupt(format!("shard {}: {why}", id.file_name()));
        if let Err(e) = file.read_exact(&mut raw) {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt("file shorter than its header".into())
            } else {
                e.into()
            });
        }
        let header = ShardHeader::decode(&raw).map_err(corrupt)?;
        if &header.id != id {
            return Err(corrupt(format!("header names shard {}", header.id.file_name())));
        }
        let len = file.metadata()?.len();
        if len != header.file_len() {
            return Err(corrupt(format!("file is {len} bytes, header says {}", header.file_len())));
        }
        Ok(Some(ShardReader { file, header, next: 0 }))
    }

    /// Removes a shard; absent is fine.
    pub fn delete(&self, id: &ShardId) -> Result<(), NodeError> {
        check_id(id)?;
        let path = self.path_of(id);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.usage.removed(len);
                fsync_dir(&self.dir_of(id))?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Shards whose file name sorts strictly after `after`, in file-name order,
    /// at most `limit` (0 means [`DEFAULT_LIST`]; capped at [`MAX_LIST`]).
    /// Files whose header cannot be read are logged and skipped.
    pub fn list(&self, after: Option<&str>, limit: u32) -> Result<ShardList, NodeError> {
        let limit = if limit == 0 { DEFAULT_LIST } else { limit.min(MAX_LIST) } as usize;
        let after = after.unwrap_or("");
        let mut dirs: Vec<String> = Vec::new();
        for entry in fs::read_dir(&self.shards)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 2 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                // File names in dir `xy` all start with `xy`: a dir before
                // `after`'s first two characters holds nothing after it.
                if name < after.get(..2).unwrap_or(after) {
                    continue;
                }
                dirs.push(name.to_string());
            }
        }
        dirs.sort();
        let mut out = Vec::new();
        for d in dirs {
            for (name, id) in self.names_in(&d, after, |_| true)? {
                if out.len() == limit {
                    return Ok(ShardList { shards: out, truncated: true });
                }
                match self.stat(&id) {
                    Ok(Some(info)) => out.push(info),
                    Ok(None) => {} // deleted meanwhile
                    Err(e) => tracing::warn!(shard = %name, error = %e, "skipping unreadable shard in listing"),
                }
            }
        }
        Ok(ShardList { shards: out, truncated: false })
    }

    /// The shard files of one PG (by the placement hash their object ids
    /// carry: `model::placement`), in file-name order after `after`, at most
    /// `limit` (capped at [`MAX_LIST`]), with their data length (from the
    /// header) and age (from the file's modification time, which is when it
    /// was committed). Files whose ids carry no hash (written before ids did)
    /// belong to no PG and are never listed here. Under
    /// `PgFunction::TopBits` with 256 PGs or more, a PG lies in one `xy`
    /// directory.
    pub fn list_pg(&self, sel: PgSelector, after: Option<&str>, limit: u32) -> Result<PgShardList, NodeError> {
        let limit = limit.clamp(1, MAX_LIST) as usize;
        let after = after.unwrap_or("");
        let (first, last) = match sel.function.hash_range(sel.pg, sel.pg_count) {
            Some((lo, hi)) => ((lo >> 56) as u8, (hi >> 56) as u8),
            None => (0, 255),
        };
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for d in first..=last {
            let d = format!("{d:02x}");
            if d.as_str() < after.get(..2).unwrap_or(after) {
                continue;
            }
            let names = self.names_in(&d, after, |id| {
                placement::object_id_hash(&id.object_id).is_some_and(|h| sel.holds_hash(h))
            })?;
            for (_, id) in names {
                if out.len() == limit {
                    let next = out.last().map(|s: &PgShard| s.id.file_name());
                    return Ok(PgShardList { shards: out, next });
                }
                if let Some(held) = self.held(id, now)? {
                    out.push(held);
                }
            }
        }
        Ok(PgShardList { shards: out, next: None })
    }

    /// The shard files of directory `d` (two hex digits) named after `after`
    /// whose ids pass `keep`, sorted by name; a missing directory holds none.
    fn names_in(
        &self,
        d: &str,
        after: &str,
        keep: impl Fn(&ShardId) -> bool,
    ) -> Result<Vec<(String, ShardId)>, NodeError> {
        let entries = match fs::read_dir(self.shards.join(d)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name <= after {
                continue;
            }
            if let Some(id) = parse_file_name(name)
                && id.object_id.starts_with(d)
                && keep(&id)
            {
                names.push((name.to_string(), id));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every shard file in directory `xy` (`dir` as two hex digits) whose id
    /// carries a placement hash, with its data length and age: what the
    /// collector walks, one directory at a time.
    pub fn list_dir(&self, dir: u8) -> Result<Vec<PgShard>, NodeError> {
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for (_, id) in
            self.names_in(&format!("{dir:02x}"), "", |id| placement::object_id_hash(&id.object_id).is_some())?
        {
            if let Some(s) = self.held(id, now)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Every shard file in directory `xy` whose id carries a placement hash,
    /// header read or not (the scrub's list).
    pub fn ids_in_dir(&self, dir: u8) -> Result<Vec<ShardId>, NodeError> {
        let names =
            self.names_in(&format!("{dir:02x}"), "", |id| placement::object_id_hash(&id.object_id).is_some())?;
        Ok(names.into_iter().map(|(_, id)| id).collect())
    }

    /// Reads shard `id` whole, checking its header and every block against
    /// its blake3: the bytes read, `None` if absent, `NodeError::Corrupt` if
    /// anything fails its check. `each` is called with each block's length.
    pub fn verify(&self, id: &ShardId, mut each: impl FnMut(usize)) -> Result<Option<u64>, NodeError> {
        let Some(mut r) = self.open_read(id)? else { return Ok(None) };
        let mut bytes = 0u64;
        while let Some(f) = r.read_block()? {
            bytes += f.data.len() as u64;
            each(f.data.len());
        }
        Ok(Some(bytes))
    }

    /// A shard as listed (`None` if it vanished meanwhile or its header does
    /// not read, which is logged: the scrubber's business, not a listing's).
    fn held(&self, id: ShardId, now: std::time::SystemTime) -> Result<Option<PgShard>, NodeError> {
        let modified = match fs::metadata(self.path_of(&id)).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match self.stat(&id) {
            Ok(Some(info)) => Ok(Some(PgShard {
                id,
                data_len: info.data_len,
                age_ms: now.duration_since(modified).unwrap_or_default().as_millis() as u64,
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(shard = %id.file_name(), error = %e, "skipping unreadable shard in listing");
                Ok(None)
            }
        }
    }
}

/// An upload in progress. Feed it the request body with [`push`](Self::push),
/// then [`commit`](Self::commit). Dropped without a successful commit, it
/// removes its temporary file and nothing is stored.
pub struct ShardWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    dir: PathBuf,
    shards_root: PathBuf,
    final_path: PathBuf,
    header: ShardHeader,
    decoder: FrameDecoder,
    /// Of every frame appended, in order: what the upload's seal covers.
    digest: FrameDigest,
    received: u32,
    done: bool,
    usage: std::sync::Arc<Usage>,
}

impl ShardWriter {
    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Takes the next piece of the body: every whole frame in it is checked
    /// (hash, size, count) and appended.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), NodeError> {
        self.decoder.push(chunk);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(FrameError::HashMismatch) => {
                    return Err(NodeError::Corrupt(format!(
                        "block {} of the upload failed its blake3 check",
                        self.received
                    )));
                }
                Err(e) => return Err(NodeError::BadRequest(format!("block {}: {e}", self.received))),
            };
            self.append(&frame)?;
        }
    }

    /// Appends one already verified frame.
    pub fn append(&mut self, frame: &Frame) -> Result<(), NodeError> {
        let i = self.received;
        let meta = &self.header.meta;
        if i >= meta.blocks {
            return Err(NodeError::BadRequest(format!("more than the {} declared blocks", meta.blocks)));
        }
        let len = frame.data.len();
        let last = i + 1 == meta.blocks;
        if (!last && len != meta.block_size as usize) || (last && len > meta.block_size as usize) {
            return Err(NodeError::BadRequest(format!(
                "block {i} holds {len} bytes; blocks must be {} bytes (the last at most that)",
                meta.block_size
            )));
        }
        let out = self.out.as_mut().expect("writer open until commit");
        out.write_all(&frame.header())?;
        out.write_all(&frame.data)?;
        self.digest.add(frame);
        self.received += 1;
        self.header.data_len += len as u64;
        Ok(())
    }

    /// The digest of the frames appended so far ([`FrameDigest`]).
    pub fn digest(&self) -> [u8; 32] {
        self.digest.digest()
    }

    /// Ends the upload: checks that exactly the declared blocks arrived, writes
    /// the header, fsyncs the file, renames it into place and fsyncs the
    /// directory. Only after this returns Ok is the shard durable.
    pub fn commit(mut self) -> Result<ShardInfo, NodeError> {
        self.decoder.finish().map_err(|e| NodeError::BadRequest(format!("after block {}: {e}", self.received)))?;
        if self.received != self.header.meta.blocks {
            return Err(NodeError::BadRequest(format!(
                "{} blocks declared but {} sent",
                self.header.meta.blocks, self.received
            )));
        }
        let file = self.out.take().expect("writer open until commit").into_inner().map_err(|e| e.into_error())?;
        file.write_all_at(&self.header.encode(), 0)?;
        file.sync_all()?;
        drop(file);
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir)?;
            fsync_dir(&self.shards_root)?;
        }
        let replaced = fs::metadata(&self.final_path).ok().filter(|m| m.is_file()).map(|m| m.len());
        fs::rename(&self.tmp_path, &self.final_path)?;
        self.done = true;
        if let Some(old) = replaced {
            self.usage.removed(old);
        }
        self.usage.added(self.header.file_len());
        fsync_dir(&self.dir)?;
        Ok(self.header.info())
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if !self.done {
            self.out = None;
            if let Err(e) = fs::remove_file(&self.tmp_path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.tmp_path.display(), error = %e, "could not remove aborted upload");
            }
        }
    }
}

/// Reads the blocks of one shard in order, checking each against its hash.
pub struct ShardReader {
    file: File,
    header: ShardHeader,
    next: u32,
}

impl ShardReader {
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    pub fn info(&self) -> ShardInfo {
        self.header.info()
    }

    /// Positions the reader at block `i` (`i <= blocks`).
    pub fn seek_block(&mut self, i: u32) -> Result<(), NodeError> {
        if i > self.header.meta.blocks {
            return Err(NodeError::BadRequest(format!(
                "block {i} is past the shard's {} blocks",
                self.header.meta.blocks
            )));
        }
        self.file.seek(SeekFrom::Start(self.header.record_offset(i)))?;
        self.next = i;
        Ok(())
    }

    /// Index of the block the next [`read_block`](Self::read_block) returns.
    pub fn position(&self) -> u32 {
        self.next
    }

    /// The next block, verified; `None` past the last one. A block whose bytes
    /// do not match its hash is `NodeError::Corrupt` (and the reader stays on it).
    pub fn read_block(&mut self) -> Result<Option<Frame>, NodeError> {
        let i = self.next;
        if i >= self.header.meta.blocks {
            return Ok(None);
        }
        let corrupt = |why: &str| NodeError::Corrupt(format!("shard {} block {i}: {why}", self.header.id.file_name()));
        let want = self.header.block_len(i) as usize;
        let mut fh = [0u8; FRAME_HEADER_LEN];
        self.file.read_exact(&mut fh).map_err(|e| eof_is_corrupt(e, &corrupt))?;
        let len = u32::from_le_bytes(fh[..4].try_into().expect("4 bytes")) as usize;
        if len != want {
            // Rewind so that a retry sees the same state.
            self.file.seek(SeekFrom::Start(self.header.record_offset(i)))?;
            return Err(corrupt("record length does not match the header"));
        }
        // Read into uninitialised capacity (no memset of a block that the
        // read overwrites whole).
        let mut data = Vec::with_capacity(len);
        let got = (&mut self.file).take(len as u64).read_to_end(&mut data)?;
        if got < len {
            return Err(eof_is_corrupt(std::io::ErrorKind::UnexpectedEof.into(), &corrupt));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&fh[4..]);
        let frame = Frame { hash, data: Bytes::from(data) };
        if frame.verify().is_err() {
            self.file.seek(SeekFrom::Start(self.header.record_offset(i)))?;
            return Err(corrupt("blake3 mismatch"));
        }
        self.next = i + 1;
        Ok(Some(frame))
    }
}

fn eof_is_corrupt(e: std::io::Error, corrupt: &dyn Fn(&str) -> NodeError) -> NodeError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { corrupt("file ends early") } else { e.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> ShardId {
        ShardId { object_id: "0123456789abcdef0123456789abcdef".into(), index: i }
    }

    fn meta(block_size: u32, blocks: u32) -> ShardMeta {
        ShardMeta { codec: sillok_model::codec::CODEC_ID.into(), k: 4, m: 2, block_size, blocks }
    }

    fn frames(block_size: usize, last: usize, n: usize) -> Vec<Frame> {
        (0..n)
            .map(|i| {
                let len = if i + 1 == n { last } else { block_size };
                Frame::new(Bytes::from((0..len).map(|j| (i * 7 + j) as u8).collect::<Vec<_>>()))
            })
            .collect()
    }

    fn wire(fs: &[Frame]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in fs {
            v.extend_from_slice(&f.header());
            v.extend_from_slice(&f.data);
        }
        v
    }

    fn tmp_is_empty(store: &ShardStore) -> bool {
        fs::read_dir(store.tmp_dir()).unwrap().next().is_none()
    }

    #[test]
    fn header_round_trip_and_checksum() {
        let h = ShardHeader { id: id(5), meta: meta(1000, 3), data_len: 2500 };
        let raw = h.encode();
        assert_eq!(ShardHeader::decode(&raw).unwrap(), h);
        assert_eq!(h.record_offset(2), 64 + 2 * 1036);
        assert_eq!(h.block_len(2), 500);
        assert_eq!(h.file_len(), 64 + 3 * 36 + 2500);
        for i in 0..HEADER_LEN {
            let mut bad = raw;
            bad[i] ^= 0x10;
            assert!(ShardHeader::decode(&bad).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn write_read_in_odd_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let fs_ = frames(1000, 333, 4);
        let mut w = store.begin_write(&id(1), meta(1000, 4)).unwrap();
        for c in wire(&fs_).chunks(777) {
            w.push(Bytes::copy_from_slice(c)).unwrap();
        }
        let info = w.commit().unwrap();
        assert_eq!(info.data_len, 3333);
        assert!(tmp_is_empty(&store));
        assert_eq!(store.stat(&id(1)).unwrap().unwrap(), info);
        let mut r = store.open_read(&id(1)).unwrap().unwrap();
        r.seek_block(2).unwrap();
        assert_eq!(r.read_block().unwrap().unwrap(), fs_[2]);
        assert_eq!(r.read_block().unwrap().unwrap(), fs_[3]);
        assert!(r.read_block().unwrap().is_none());
        assert!(store.stat(&id(2)).unwrap().is_none());
    }

    #[test]
    fn bad_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let fs_ = frames(100, 50, 3);
        // Too few blocks.
        let mut w = store.begin_write(&id(0), meta(100, 4)).unwrap();
        w.push(wire(&frames(100, 100, 3)).into()).unwrap();
        assert!(matches!(w.commit(), Err(NodeError::BadRequest(_))));
        // Too many.
        let mut w = store.begin_write(&id(0), meta(100, 2)).unwrap();
        assert!(matches!(w.push(wire(&fs_).into()), Err(NodeError::BadRequest(_))));
        drop(w);
        // A short block that is not the last.
        let mut w = store.begin_write(&id(0), meta(100, 3)).unwrap();
        let mut odd = fs_.clone();
        odd.swap(1, 2);
        assert!(matches!(w.push(wire(&odd).into()), Err(NodeError::BadRequest(_))));
        drop(w);
        // A corrupt block on the wire.
        let mut w = store.begin_write(&id(0), meta(100, 3)).unwrap();
        let mut bytes = wire(&fs_);
        bytes[FRAME_HEADER_LEN + 5] ^= 1;
        assert!(matches!(w.push(bytes.into()), Err(NodeError::Corrupt(_))));
        drop(w);
        // Ends inside a frame.
        let mut w = store.begin_write(&id(0), meta(100, 3)).unwrap();
        let bytes = wire(&fs_);
        w.push(Bytes::copy_from_slice(&bytes[..bytes.len() - 1])).unwrap();
        assert!(matches!(w.commit(), Err(NodeError::BadRequest(_))));
        // Abandoned half way.
        let mut w = store.begin_write(&id(0), meta(100, 3)).unwrap();
        w.push(Bytes::copy_from_slice(&bytes[..150])).unwrap();
        drop(w);
        assert!(store.stat(&id(0)).unwrap().is_none());
        assert!(tmp_is_empty(&store));
        // Bad declarations.
        assert!(store.begin_write(&id(6), meta(100, 3)).is_err());
        assert!(store.begin_write(&id(0), meta(0, 3)).is_err());
        assert!(store.begin_write(&id(0), meta(MAX_BLOCK_LEN as u32 + 1, 3)).is_err());
        assert!(store.begin_write(&id(0), ShardMeta { codec: "../x".into(), ..meta(100, 3) }).is_err());
        assert!(store.begin_write(&ShardId { object_id: "../../etc/passwd".into(), index: 0 }, meta(100, 3)).is_err());
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn flipped_byte_on_disk_is_corrupt_for_that_block_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let fs_ = frames(100, 100, 3);
        let mut w = store.begin_write(&id(3), meta(100, 3)).unwrap();
        w.push(wire(&fs_).into()).unwrap();
        w.commit().unwrap();
        let path = store.path_of(&id(3));
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + 136 + FRAME_HEADER_LEN + 10] ^= 0x40; // block 1
        fs::write(&path, &bytes).unwrap();
        let mut r = store.open_read(&id(3)).unwrap().unwrap();
        assert_eq!(r.read_block().unwrap().unwrap(), fs_[0]);
        assert!(matches!(r.read_block(), Err(NodeError::Corrupt(_))));
        r.seek_block(2).unwrap();
        assert_eq!(r.read_block().unwrap().unwrap(), fs_[2]);
        // A truncated file is refused at open.
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(store.open_read(&id(3)), Err(NodeError::Corrupt(_))));
    }

    #[test]
    fn list_delete_and_stale_temp_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        let oids = [
            "ff00000000000000000000000000000a",
            "0a00000000000000000000000000000b",
            "0a00000000000000000000000000000c",
        ];
        for oid in oids {
            for index in [0u8, 1, 10] {
                let sid = ShardId { object_id: oid.into(), index };
                let mut w = store.begin_write(&sid, ShardMeta { k: 8, m: 4, ..meta(10, 1) }).unwrap();
                w.push(wire(&frames(10, 7, 1)).into()).unwrap();
                w.commit().unwrap();
            }
        }
        let all = store.list(None, 0).unwrap();
        assert!(!all.truncated);
        let names: Vec<String> = all.shards.iter().map(|s| s.id.file_name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 9);
        let page = store.list(Some(&names[2]), 4).unwrap();
        assert!(page.truncated);
        assert_eq!(page.shards.iter().map(|s| s.id.file_name()).collect::<Vec<_>>(), names[3..7]);
        let rest = store.list(Some(&names[6]), 4).unwrap();
        assert!(!rest.truncated);
        assert_eq!(rest.shards.len(), 2);

        let gone = parse_file_name(&names[0]).unwrap();
        store.delete(&gone).unwrap();
        store.delete(&gone).unwrap();
        assert!(store.stat(&gone).unwrap().is_none());
        assert_eq!(store.list(None, 100).unwrap().shards.len(), 8);

        fs::write(store.tmp_dir().join("leftover.tmp"), b"junk").unwrap();
        let store = ShardStore::open(dir.path()).unwrap();
        assert!(tmp_is_empty(&store));
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name("0123456789abcdef0123456789abcdef.12").unwrap().index, 12);
        for bad in [
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef.",
            "0123456789abcdef0123456789abcdef.256",
            "0123456789abcdef0123456789abcdef.01",
            "0123456789ABCDEF0123456789abcdef.1",
            "x.1",
        ] {
            assert!(parse_file_name(bad).is_none(), "{bad}");
        }
    }
}
