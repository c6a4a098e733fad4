//! Segment files: one list's index (every tier's segments, retired positions
//! and reference IDs) written once, then memory-mapped by each serving process.
//!
//! A process that starts maps the file instead of rebuilding the list from the
//! store, and every process mapping one file shares its pages through the page
//! cache. A file is written under a temporary name, synced and renamed into
//! place, so it is whole or absent, and never modified afterwards.
//!
//! # Layout (little-endian, this build's byte order)
//!
//! * A 128-byte header: magic, format version, byte-order mark, the list id,
//!   version, epoch and list digest the file holds, where the table of contents
//!   is, the file's length, and an XXH3-64 of the header itself.
//! * Sections, each 64-byte aligned: the arrays in the order they were written,
//!   then one section of `u64` words (sizes and parameters), last.
//! * The table of contents: per section its offset, length and XXH3-64.
//!
//! Reading checks all of it before anything is served: the header's own
//! checksum, format, byte order, the list, version, epoch and digest the
//! caller expects, the length, and every section's checksum. Any mismatch is
//! an error naming what failed; the caller rebuilds from the store.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::CoreError;
use crate::mem::{as_bytes, HugeBuf, Zeroable};

/// Format version written, and the only one read.
pub const FORMAT: u32 = 1;
const MAGIC: [u8; 8] = *b"HMSEGMT\0";
const BYTE_ORDER: u32 = 0x0102_0304;
const HEADER: usize = 128;
const ALIGN: u64 = 64;
/// Bytes of one table-of-contents row: offset, length, checksum.
const TOC_ROW: usize = 24;

/// What a segment file holds: which list, as of which store version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub list_id: u32,
    /// The list's version in the store (every change up to it is in the file).
    pub version: u64,
    /// How many times the list had been reset in the store.
    pub epoch: u64,
    /// The list digest at `version` (the store's sum of entry terms).
    pub digest: [u8; 16],
}

fn bad(why: impl Into<String>) -> CoreError {
    CoreError::Segment(why.into())
}

fn io_err(path: &Path, e: io::Error) -> CoreError {
    bad(format!("{}: {e}", path.display()))
}

/// Writes the sections of one segment file.
pub struct Writer {
    out: BufWriter<File>,
    pos: u64,
    toc: Vec<[u64; 3]>,
    words: Vec<u64>,
}

impl Writer {
    /// One array, as its own section.
    pub fn array<T: Zeroable>(&mut self, items: &[T]) -> io::Result<()> {
        self.section(as_bytes(items))
    }

    /// One number, kept in the words section.
    pub fn word(&mut self, w: u64) {
        self.words.push(w);
    }

    fn section(&mut self, bytes: &[u8]) -> io::Result<()> {
        let pad = self.pos.next_multiple_of(ALIGN) - self.pos;
        self.out.write_all(&[0u8; ALIGN as usize][..pad as usize])?;
        self.pos += pad;
        self.toc
            .push([self.pos, bytes.len() as u64, xxh3_64(bytes)]);
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

fn header(info: &SegmentInfo, toc: [u64; 3], file_len: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&BYTE_ORDER.to_ne_bytes());
    h[16..20].copy_from_slice(&info.list_id.to_le_bytes());
    h[24..32].copy_from_slice(&info.version.to_le_bytes());
    h[32..40].copy_from_slice(&info.epoch.to_le_bytes());
    h[40..56].copy_from_slice(&info.digest);
    h[56..64].copy_from_slice(&toc[0].to_le_bytes());
    h[64..72].copy_from_slice(&toc[1].to_le_bytes());
    h[72..80].copy_from_slice(&toc[2].to_le_bytes());
    h[80..88].copy_from_slice(&file_len.to_le_bytes());
    let sum = xxh3_64(&h[..HEADER - 8]);
    h[HEADER - 8..].copy_from_slice(&sum.to_le_bytes());
    h
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Parses and checks a header; returns what it says and (toc offset, rows,
/// checksum, file length).
fn parse_header(h: &[u8]) -> Result<(SegmentInfo, [u64; 4]), CoreError> {
    if h.len() < HEADER {
        return Err(bad(format!("{} bytes, shorter than a header", h.len())));
    }
    if h[0..8] != MAGIC {
        return Err(bad("not a segment file (no magic number)"));
    }
    let format = le_u32(h, 8);
    if format != FORMAT {
        return Err(bad(format!(
            "format version {format}; this build reads version {FORMAT}"
        )));
    }
    if h[12..16] != BYTE_ORDER.to_ne_bytes() {
        return Err(bad("written with another byte order"));
    }
    if le_u64(h, HEADER - 8) != xxh3_64(&h[..HEADER - 8]) {
        return Err(bad("header checksum does not match (damaged)"));
    }
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&h[40..56]);
    let info = SegmentInfo {
        list_id: le_u32(h, 16),
        version: le_u64(h, 24),
        epoch: le_u64(h, 32),
        digest,
    };
    Ok((
        info,
        [le_u64(h, 56), le_u64(h, 64), le_u64(h, 72), le_u64(h, 80)],
    ))
}

/// Writes a segment file at `path`: `body` writes the sections. The file is
/// written under a temporary name beside `path`, synced, then renamed over
/// `path`, so a crash leaves the previous file (or none) and at most a stray
/// temporary one. Returns the file's size.
pub fn write_file(
    path: &Path,
    info: &SegmentInfo,
    body: impl FnOnce(&mut Writer) -> io::Result<()>,
) -> Result<u64, CoreError> {
    let tmp = temporary_name(path);
    let result = write_to(&tmp, info, body).and_then(|size| {
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename is durable once the directory is.
            File::open(dir)?.sync_all()?;
        }
        Ok(size)
    });
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path, e)
    })
}

/// `path` with `.tmp-<pid>-<n>` appended: unique per write, also between two
/// writers of one process.
fn temporary_name(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    PathBuf::from(name)
}

fn write_to(
    tmp: &Path,
    info: &SegmentInfo,
    body: impl FnOnce(&mut Writer) -> io::Result<()>,
) -> io::Result<u64> {
    let file = File::create(tmp)?;
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        pos: HEADER as u64,
        toc: Vec::new(),
        words: Vec::new(),
    };
    w.out.write_all(&[0u8; HEADER])?;
    body(&mut w)?;
    let words = std::mem::take(&mut w.words);
    w.array(&words)?;
    let pad = w.pos.next_multiple_of(ALIGN) - w.pos;
    w.out.write_all(&[0u8; ALIGN as usize][..pad as usize])?;
    w.pos += pad;
    let toc_at = w.pos;
    let toc: Vec<u8> = w
        .toc
        .iter()
        .flat_map(|row| row.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    w.out.write_all(&toc)?;
    let file_len = toc_at + toc.len() as u64;
    let head = header(info, [toc_at, w.toc.len() as u64, xxh3_64(&toc)], file_len);
    let mut file = w.out.into_inner().map_err(|e| e.into_error())?;
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&head)?;
    file.sync_all()?;
    Ok(file_len)
}

/// What the header of the segment file at `path` says (the rest unchecked).
pub fn read_info(path: &Path) -> Result<SegmentInfo, CoreError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(HEADER);
    File::open(path)
        .and_then(|f| f.take(HEADER as u64).read_to_end(&mut head))
        .map_err(|e| io_err(path, e))?;
    Ok(parse_header(&head)?.0)
}

/// Reads the sections of one mapped, checked segment file, in written order.
pub struct Reader {
    map: Arc<Mmap>,
    sections: Vec<(usize, usize)>,
    next: usize,
    words: HugeBuf<u64>,
    next_word: usize,
}

impl Reader {
    /// Maps the file at `path` and checks it all (see the module docs): it must
    /// hold `expect`.
    pub fn open(path: &Path, expect: &SegmentInfo) -> Result<Reader, CoreError> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        // SAFETY: the mapping is read-only and private to this process's view;
        // segment files are only ever created whole under a temporary name and
        // renamed into place, never written or truncated afterwards (a file
        // replaced by a newer one keeps its old inode alive while mapped).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        let (info, [toc_at, rows, toc_sum, file_len]) = parse_header(&map)?;
        if info != *expect {
            return Err(bad(format!(
                "holds list {} version {} epoch {} digest {}, expected list {} version {} epoch {} \
                 digest {}",
                info.list_id,
                info.version,
                info.epoch,
                hex(&info.digest),
                expect.list_id,
                expect.version,
                expect.epoch,
                hex(&expect.digest)
            )));
        }
        if file_len != map.len() as u64 {
            return Err(bad(format!(
                "{} bytes, but its header says {file_len} (truncated or extended)",
                map.len()
            )));
        }
        let toc_len = rows.checked_mul(TOC_ROW as u64);
        let toc = toc_len
            .and_then(|n| toc_at.checked_add(n).filter(|&end| end == file_len))
            .map(|_| &map[toc_at as usize..])
            .ok_or_else(|| bad("table of contents out of bounds"))?;
        if xxh3_64(toc) != toc_sum {
            return Err(bad("table of contents checksum does not match (damaged)"));
        }
        let mut sections = Vec::with_capacity(rows as usize);
        let mut sums = Vec::with_capacity(rows as usize);
        for row in toc.chunks_exact(TOC_ROW) {
            let (at, len) = (le_u64(row, 0), le_u64(row, 8));
            if at < HEADER as u64 || at.checked_add(len).is_none_or(|end| end > toc_at) {
                return Err(bad("a section lies outside the file"));
            }
            sections.push((at as usize, len as usize));
            sums.push(le_u64(row, 16));
        }
        check_sections(&file, &sections, &sums)?;
        let map = Arc::new(map);
        let &(at, len) = sections.last().ok_or_else(|| bad("no sections"))?;
        let words = HugeBuf::mapped(&map, at, len / 8)
            .filter(|_| len % 8 == 0)
            .ok_or_else(|| bad("words section misaligned"))?;
        sections.pop();
        Ok(Reader {
            map,
            sections,
            next: 0,
            words,
            next_word: 0,
        })
    }

    /// The next array.
    pub fn array<T: Zeroable>(&mut self) -> Result<HugeBuf<T>, CoreError> {
        let &(at, len) = self
            .sections
            .get(self.next)
            .ok_or_else(|| bad("fewer sections than its contents need"))?;
        self.next += 1;
        let size = std::mem::size_of::<T>();
        if len % size != 0 {
            return Err(bad(format!(
                "section {} has a partial element",
                self.next - 1
            )));
        }
        HugeBuf::mapped(&self.map, at, len / size)
            .ok_or_else(|| bad(format!("section {} misaligned", self.next - 1)))
    }

    /// The next array, which must hold `n` elements.
    pub fn array_of<T: Zeroable>(&mut self, n: usize) -> Result<HugeBuf<T>, CoreError> {
        let a = self.array::<T>()?;
        if a.len() != n {
            return Err(bad(format!(
                "section {} holds {} elements, expected {n}",
                self.next - 1,
                a.len()
            )));
        }
        Ok(a)
    }

    /// The next word.
    pub fn word(&mut self) -> Result<u64, CoreError> {
        let w = self
            .words
            .get(self.next_word)
            .copied()
            .ok_or_else(|| bad("fewer words than its contents need"))?;
        self.next_word += 1;
        Ok(w)
    }

    /// The next word, which must be at most `max`.
    pub fn word_at_most(&mut self, max: u64, what: &str) -> Result<u64, CoreError> {
        let w = self.word()?;
        if w > max {
            return Err(bad(format!("{what} is {w}, above {max}")));
        }
        Ok(w)
    }

    /// Fails unless every section and word was read.
    pub fn finish(self) -> Result<(), CoreError> {
        if self.next != self.sections.len() || self.next_word != self.words.len() {
            return Err(bad("more sections or words than its contents need"));
        }
        Ok(())
    }
}

/// Checks every section's checksum, on up to two threads (the largest
/// sections are hundreds of MiB each at 100 M entries).
///
/// The bytes are read with `pread`, not through the mapping: the check then
/// fills the page cache but not this process's resident set, which holds only
/// the pages its searches touch (at 100 M entries, ~9.5 GB resident right after
/// a start instead of what the queries use).
fn check_sections(file: &File, sections: &[(usize, usize)], sums: &[u64]) -> Result<(), CoreError> {
    let check = |i: usize| -> Result<(), CoreError> {
        let (at, len) = sections[i];
        let sum = checksum(file, at as u64, len).map_err(|e| bad(format!("reading: {e}")))?;
        if sum != sums[i] {
            return Err(bad(format!(
                "section {i} checksum does not match (damaged)"
            )));
        }
        Ok(())
    };
    let mut order: Vec<usize> = (0..sections.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sections[i].1));
    // Greedy split by size: each thread takes the next largest section.
    let (mut a, mut b, mut load) = (Vec::new(), Vec::new(), [0usize; 2]);
    for i in order {
        let side = usize::from(load[1] < load[0]);
        load[side] += sections[i].1;
        if side == 0 {
            a.push(i)
        } else {
            b.push(i)
        }
    }
    std::thread::scope(|s| {
        let other = s.spawn(|| b.iter().try_for_each(|&i| check(i)));
        let mine = a.iter().try_for_each(|&i| check(i));
        let theirs = other
            .join()
            .unwrap_or_else(|_| Err(bad("checksum thread failed")));
        mine.and(theirs)
    })
}

/// XXH3-64 of `len` bytes of `file` from `at`, read in blocks.
fn checksum(file: &File, at: u64, len: usize) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const BLOCK: usize = 4 << 20;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; BLOCK.min(len)];
    let mut done = 0usize;
    while done < len {
        let n = BLOCK.min(len - done);
        file.read_exact_at(&mut buf[..n], at + done as u64)?;
        hasher.update(&buf[..n]);
        done += n;
    }
    Ok(hasher.digest())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value that a segment file can hold.
pub trait Persist: Sized {
    fn write_to(&self, w: &mut Writer) -> io::Result<()>;
    fn read_from(r: &mut Reader) -> Result<Self, CoreError>;
}

/// Checks a directory of offsets read from a file: `cells + 1` non-decreasing
/// offsets from 0 to `n`. (Cheap beside the checksum of the arrays it indexes.)
pub fn check_offsets(offsets: &[u32], n: usize, what: &str) -> Result<(), CoreError> {
    let ok = offsets.first() == Some(&0)
        && offsets.last().map(|&x| x as usize) == Some(n)
        && offsets.windows(2).all(|w| w[0] <= w[1]);
    if ok {
        Ok(())
    } else {
        Err(bad(format!("{what}: offsets out of order")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SegmentInfo {
        SegmentInfo {
            list_id: 7,
            version: 42,
            epoch: 1,
            digest: [9; 16],
        }
    }

    fn write(dir: &Path) -> PathBuf {
        let path = dir.join("s.seg");
        write_file(&path, &info(), |w| {
            w.word(3);
            w.array(&[1u32, 2, 3])?;
            w.array::<u64>(&[])?;
            w.array(&[[5u8; 20]; 2])
        })
        .unwrap();
        path
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hashcore-persist-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip() {
        let d = tempdir("rt");
        let path = write(&d);
        assert_eq!(read_info(&path).unwrap(), info());
        let mut r = Reader::open(&path, &info()).unwrap();
        assert_eq!(r.word().unwrap(), 3);
        assert_eq!(&*r.array::<u32>().unwrap(), &[1, 2, 3]);
        assert!(r.array::<u64>().unwrap().is_empty());
        let a = r.array_of::<[u8; 20]>(2).unwrap();
        assert!(a.is_mapped());
        assert_eq!(a[1], [5u8; 20]);
        r.finish().unwrap();
        let leftovers: Vec<_> = fs::read_dir(&d).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        fs::remove_dir_all(&d).unwrap();
    }

    /// Which bytes of a good file some check covers (header, sections, table
    /// of contents): the rest is padding, never read.
    fn covered(good: &[u8]) -> Vec<bool> {
        let (_, [toc_at, rows, _, len]) = parse_header(good).unwrap();
        let mut c = vec![false; len as usize];
        c[..HEADER].fill(true);
        c[toc_at as usize..].fill(true);
        for r in 0..rows as usize {
            let row = &good[toc_at as usize + r * TOC_ROW..];
            let (at, n) = (le_u64(row, 0) as usize, le_u64(row, 8) as usize);
            c[at..at + n].fill(true);
        }
        c
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let d = tempdir("flip");
        let path = write(&d);
        let good = fs::read(&path).unwrap();
        let covered = covered(&good);
        assert!(covered.iter().filter(|&&c| !c).count() < good.len() / 2);
        for (i, _) in covered.iter().enumerate().filter(|(_, &c)| c) {
            let mut bytes = good.clone();
            bytes[i] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let err = Reader::open(&path, &info())
                .err()
                .unwrap_or_else(|| panic!("byte {i} flipped was accepted"));
            assert!(matches!(err, CoreError::Segment(_)));
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn truncated_other_version_or_other_list_is_refused() {
        let d = tempdir("trunc");
        let path = write(&d);
        let good = fs::read(&path).unwrap();
        for cut in [0, 10, HEADER, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(Reader::open(&path, &info()).is_err(), "cut at {cut}");
        }
        fs::write(&path, &good).unwrap();
        for other in [
            SegmentInfo {
                version: 41,
                ..info()
            },
            SegmentInfo { epoch: 2, ..info() },
            SegmentInfo {
                list_id: 8,
                ..info()
            },
            SegmentInfo {
                digest: [0; 16],
                ..info()
            },
        ] {
            let err = Reader::open(&path, &other).err().unwrap().to_string();
            assert!(err.contains("expected list"), "{err}");
        }
        let mut bytes = good.clone();
        bytes[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = Reader::open(&path, &info()).err().unwrap().to_string();
        assert!(err.contains("format version 2"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }
}
