//! Segment files and core directories: naming, which directories a core adopts, the lock
//! that keeps a second relay out, and the DmaFile operations on whole segments (create,
//! prepare a written free file, read back, delete).
//!
//! Layout: `<dir>/core-<N>/seg-<seq:016x>.log`, `<dir>/core-<N>/free-<seq:016x>.log` (a
//! reclaimed segment kept for reuse, or a file written full of zeros ahead of need: its
//! blocks are already written, so writing over them needs no metadata change at
//! fdatasync) and `<dir>/core-<N>/lock`. Files with other names are left alone, so an
//! operator's notes or a stray temp file never confuse recovery.

use std::fs::{File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{Directory, DmaFile, OpenOptions};

use super::SpoolError;
use super::index::SegKey;
use super::record::BLOCK_BYTES;

/// Recovery reads a segment in pieces of this size.
const READ_CHUNK_BYTES: usize = 4 << 20;

pub fn core_dir(base: &Path, core: usize) -> PathBuf {
    base.join(format!("core-{core}"))
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:016x}.log"))
}

fn parse_core_dir(name: &str) -> Option<usize> {
    let n = name.strip_prefix("core-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Where a reclaimed segment waits for reuse; named after the segment it was.
pub fn free_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("free-{seq:016x}.log"))
}

/// The sequence number in a free file's name.
pub fn free_seq(path: &Path) -> Option<u64> {
    parse_seq_name(path.file_name()?.to_str()?, "free-")
}

fn parse_seq_name(name: &str, prefix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The core directories core `core` of `cores` owns: every `core-<j>` with
/// `j % cores == core`, its own included (created if missing), sorted by `j`.
pub fn adopted_dirs(base: &Path, core: usize, cores: usize) -> io::Result<Vec<(usize, PathBuf)>> {
    let own = core_dir(base, core);
    let fresh = !own.is_dir();
    std::fs::create_dir_all(&own)?;
    if fresh {
        // The new directory's entry must survive a crash before any record is acked in it.
        File::open(base)?.sync_all()?;
    }
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(base)? {
        let entry = entry?;
        let Some(j) = entry.file_name().to_str().and_then(parse_core_dir) else {
            continue;
        };
        if j % cores == core && entry.file_type()?.is_dir() {
            dirs.push((j, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("lock")
}

/// Takes the directory's lock (an advisory `flock`, released when the file is dropped or
/// the process dies), so two relays never write the same spool. The lock file then holds
/// the owner's pid, padded to one block (see [`prime_iopoll_probe`] for why a block).
pub fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(dir))
        .map_err(SpoolError::Io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.to_path_buf())),
        Err(TryLockError::Error(e)) => return Err(SpoolError::Io(e)),
    }
    let mut content = format!("{}\n", std::process::id()).into_bytes();
    content.resize(BLOCK_BYTES, b' ');
    file.write_all(&content).map_err(SpoolError::Io)?;
    Ok(file)
}

/// Works around a glommio 0.9 trap (DataDog/glommio#605, #670): the first `DmaFile` opened
/// on an executor thread probes whether the device supports polled I/O by reading a block
/// of that file, and caches the answer per thread. On an empty file the read "succeeds"
/// without reaching the device, polled I/O is wrongly cached as supported, and every later
/// read fails with EOPNOTSUPP. Opening a file with a real block first (the lock file) makes
/// the probe honest. This must run before any other `DmaFile` is opened on the thread.
pub async fn prime_iopoll_probe(dir: &Path) -> io::Result<()> {
    let file = DmaFile::open(lock_path(dir)).await?;
    Ok(file.close().await?)
}

/// The segment sequence numbers in a directory, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    list_seq_names(dir, "seg-")
}

/// The free (reusable) files in a directory, by the sequence they had, ascending.
pub fn list_free(dir: &Path) -> io::Result<Vec<u64>> {
    list_seq_names(dir, "free-")
}

fn list_seq_names(dir: &Path, prefix: &str) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(seq) = entry?
            .file_name()
            .to_str()
            .and_then(|n| parse_seq_name(n, prefix))
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// One segment file the spool knows about.
pub struct SegmentFile {
    pub key: SegKey,
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
    /// The next write offset (always aligned) = the bytes in the file.
    pub size_bytes: u64,
    /// Never written again: recovered from a previous run, rotated away from, or a write or
    /// sync on it failed (its tail is then unknown).
    pub sealed: bool,
    /// A write or sync on it failed: it is deleted rather than reused.
    pub failed: bool,
}

/// Opens a recovered segment for reading.
pub async fn open_for_read(path: &Path) -> io::Result<DmaFile> {
    Ok(DmaFile::open(path).await?)
}

/// Creates a new segment, read-write (reads serve `load`). The caller syncs the directory
/// before any record in it is acknowledged.
pub async fn create(path: &Path) -> io::Result<DmaFile> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .dma_open(path)
        .await?)
}

/// Opens a free file for reuse as a segment, read-write.
pub async fn open_for_reuse(path: &Path) -> io::Result<DmaFile> {
    Ok(OpenOptions::new().read(true).write(true).dma_open(path).await?)
}

/// A prepared free file is written in DMA writes of this size: small enough that a commit
/// of the other stream never waits long behind one at the device.
pub const PREPARE_CHUNK_BYTES: usize = 256 << 10;

/// Writes a new free file at `path`: `len` bytes (rounded up to whole chunks) of zeros, then
/// an fdatasync, so its blocks are allocated and written and a segment made from it commits
/// without any metadata change. The name need not be durable: a file lost in a crash was
/// only ever spare space, and one cut short by a crash is still a valid (shorter) free file.
pub async fn prepare(path: &Path, len: u64) -> io::Result<()> {
    let file = create(path).await?;
    let written = async {
        let mut at = 0u64;
        while at < len {
            let mut buf = file.alloc_dma_buffer(PREPARE_CHUNK_BYTES);
            // The pool hands out recycled memory.
            buf.as_bytes_mut().fill(0);
            if file.write_at(buf, at).await? < PREPARE_CHUNK_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short write to a free file",
                ));
            }
            at += PREPARE_CHUNK_BYTES as u64;
        }
        Ok(file.fdatasync().await?)
    }
    .await;
    let closed = file.close().await;
    written?;
    Ok(closed?)
}

/// Renames a file within its directory and makes the rename durable.
pub async fn rename(dir: &Directory, from: &Path, to: &Path) -> io::Result<()> {
    glommio::io::rename(from, to).await?;
    Ok(dir.sync().await?)
}

/// Reads a whole segment into memory (bounded by the segment size plus one batch).
pub async fn read_all(file: &DmaFile) -> io::Result<Vec<u8>> {
    let size = file.file_size().await? as usize;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let want = READ_CHUNK_BYTES.min(size - out.len());
        let got = file.read_at(out.len() as u64, want).await?;
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    Ok(out)
}

/// Opens a directory handle for syncing entries.
pub async fn open_dir(path: &Path) -> io::Result<Rc<Directory>> {
    Ok(Rc::new(Directory::open(path).await?))
}

/// Deletes a segment file and makes the deletion durable before the next one, so the set
/// of segments on disk stays a suffix even across a crash (see `index`).
pub async fn delete(dir: &Directory, path: &Path) -> io::Result<()> {
    match glommio::io::remove(path).await {
        Ok(()) => {}
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
        }
    }
    Ok(dir.sync().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let p = segment_path(Path::new("/s/core-1"), 0x2a);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "seg-000000000000002a.log");
        assert_eq!(parse_seq_name(name, "seg-"), Some(0x2a));
        assert_eq!(parse_seq_name("seg-2a.log", "seg-"), None);
        assert_eq!(parse_seq_name("seg-000000000000002a.log.tmp", "seg-"), None);
        let f = free_path(Path::new("/s"), 7);
        assert_eq!(
            parse_seq_name(f.file_name().unwrap().to_str().unwrap(), "free-"),
            Some(7)
        );
        assert_eq!(parse_seq_name("free-0000000000000007.log", "seg-"), None);
        assert_eq!(parse_core_dir("core-12"), Some(12));
        assert_eq!(parse_core_dir("core-+1"), None);
        assert_eq!(parse_core_dir("core-"), None);
    }

    #[test]
    fn a_core_adopts_the_directories_of_its_residue_class() {
        let base = tempfile::tempdir().unwrap();
        for j in [0, 1, 2, 3, 5] {
            std::fs::create_dir_all(core_dir(base.path(), j)).unwrap();
        }
        std::fs::write(base.path().join("core-7"), b"a file, not a directory").unwrap();
        let got: Vec<usize> = adopted_dirs(base.path(), 1, 2)
            .unwrap()
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        assert_eq!(got, vec![1, 3, 5]);
        let got: Vec<usize> = adopted_dirs(base.path(), 4, 6)
            .unwrap()
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        assert_eq!(got, vec![4], "the own directory is created");
    }
}
