//! Segment files and the record framing: how records lie on disk, and the one reader that both recovery and the
//! shipper use.
//!
//! A segment is `<dir>/<20-digit base>.seg`, where `base` is the sequence number of its first record (sequence
//! numbers count records from the log's creation and never repeat). It starts with an 8-byte header,
//! `TFCLOG\0` and a format version byte (1), followed by records back to back:
//!
//! ```text
//! u32 LE  len       bytes after this 8-byte frame: 1 + 4 + key length + payload length
//! u32 LE  crc       CRC-32 (crc32fast) of the 4 `len` bytes followed by the `len` bytes of the body
//! u8      topic     1 clicks, 2 conversions, 3 postback logs, 4 destination health
//! u32 LE  key_len
//! [u8]    key
//! [u8]    payload   the event's wire bytes (`traffoflex_core::events::encode`)
//! ```
//!
//! Every record is checked on read: a short frame, an impossible length, a checksum mismatch or an unknown topic
//! ends the readable part of the segment. Recovery cuts the last segment there (that is where a crash tore a
//! write); the shipper, meeting one inside a closed segment (a disk error after the fact), logs it and goes on
//! with the next segment.
//!
//! A segment may be **preallocated**: written full of zeros to its whole size (and synced) before it is used,
//! so that a group commit overwrites blocks that already exist. Its fdatasync then writes the data alone: the
//! file's size and block map stay as they are, and no metadata needs writing. On ext4 that measured a quarter to
//! a third less time per commit, and a third less of the writer's CPU. A frame of eight zero bytes (no record is shorter than five bytes) marks
//! the end of the records; the writer cuts a segment's zero tail off when it closes it.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use traffoflex_core::bus::Topic;

/// The first bytes of every segment: a magic and the format version.
pub(super) const HEADER: [u8; 8] = *b"TFCLOG\0\x01";
/// The header's length: the offset of a segment's first record.
pub(super) const HEADER_LEN: u64 = HEADER.len() as u64;
/// `len` and `crc`.
const FRAME_LEN: usize = 8;
/// `topic` and `key_len`.
const FIXED_LEN: usize = 5;
/// The largest body the format admits; anything longer in a length field is corruption.
pub const MAX_BODY_BYTES: u32 = 64 << 20;

/// The bytes a record takes in a segment, frame included.
pub(super) fn encoded_len(key: &[u8], payload: &[u8]) -> u64 {
    (FRAME_LEN + FIXED_LEN + key.len() + payload.len()) as u64
}

fn topic_byte(topic: Topic) -> u8 {
    match topic {
        Topic::Clicks => 1,
        Topic::Conversions => 2,
        Topic::PostbackLogs => 3,
        Topic::Health => 4,
    }
}

fn topic_from_byte(b: u8) -> Option<Topic> {
    match b {
        1 => Some(Topic::Clicks),
        2 => Some(Topic::Conversions),
        3 => Some(Topic::PostbackLogs),
        4 => Some(Topic::Health),
        _ => None,
    }
}

/// Appends one framed record to `buf`. The caller has checked that the body fits [`MAX_BODY_BYTES`].
pub(super) fn encode_into(buf: &mut Vec<u8>, topic: Topic, key: &[u8], payload: &[u8]) {
    let body_len = (FIXED_LEN + key.len() + payload.len()) as u32;
    let start = buf.len();
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(topic_byte(topic));
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(payload);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[start..start + 4]);
    crc.update(&buf[start + FRAME_LEN..]);
    buf[start + 4..start + FRAME_LEN].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// The path of the segment whose first record is `base`.
pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The bases of every segment in `dir`, oldest first.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(base) = parse_segment_name(&entry?.file_name()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Makes creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Deletes a segment a little at a time: shrinks it by a megabyte with a pause after each step, then removes
/// it; returns the bytes freed. Freeing a 64 MiB file at once (its blocks discarded on a filesystem mounted with
/// `discard`) held the disk for 25–30 ms, and every group commit's fdatasync waited behind it: those were the
/// longest redirects in `durable` mode, once per segment. In megabyte steps with 1 ms pauses (measured on a
/// virtio disk) no commit beside it took 10 ms, and a 64 MiB segment goes in about 0.1 s. A crash midway leaves
/// the start of a segment the cursor is already past, which recovery deletes.
pub(super) fn remove_gently(path: &Path) -> io::Result<u64> {
    const STEP: u64 = 1 << 20;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut left = len;
    while left > STEP {
        left -= STEP;
        file.set_len(left)?;
        std::thread::sleep(PAUSE);
    }
    drop(file);
    std::fs::remove_file(path)?;
    Ok(len)
}

/// Creates (or, after a failed earlier attempt, recreates empty) the segment starting at `base`, with its
/// header on disk and its directory entry durable. Returns the file positioned after the header.
pub(super) fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(segment_path(dir, base))?;
    file.write_all(&HEADER)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Whether every byte of `file` from `offset` to its end is zero (the tail of a preallocated segment).
pub(super) fn zero_from(file: &mut File, offset: u64) -> io::Result<bool> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// One record as the reader found it: its topic and where its key and payload lie in the caller's buffer.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub topic: Topic,
    pub key: Range<usize>,
    pub payload: Range<usize>,
}

/// What reading at the current offset gave.
#[derive(Debug)]
pub(super) enum Next {
    /// A whole, checked record; the reader moved past it.
    Record(Found),
    /// Nothing more before the limit.
    End,
    /// The bytes at the current offset are not a whole record; the reader stays put.
    Corrupt(&'static str),
}

/// Reads records one after another from one segment.
///
/// It reads ahead into a buffer of its own, but never past the limit it is given: beyond the writer's committed
/// end a preallocated segment holds zeros that later become records, and a read-ahead there would keep them.
pub(super) struct SegmentReader {
    file: File,
    offset: u64,
    file_len: Option<u64>,
    /// Bytes of the file from `ahead_at` on.
    ahead: Vec<u8>,
    ahead_at: u64,
}

/// How much the reader reads at once.
const READ_AHEAD: usize = 256 << 10;

impl SegmentReader {
    /// Opens the segment starting at `base` and positions it at `offset` (at least the first record).
    /// A file without the segment header is refused as `InvalidData`.
    pub fn open(dir: &Path, base: u64, offset: u64) -> io::Result<Self> {
        let mut file = File::open(segment_path(dir, base))?;
        let mut header = [0u8; HEADER.len()];
        file.read_exact(&mut header)?;
        if header != HEADER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a click log segment (bad header)"));
        }
        let offset = offset.max(HEADER_LEN);
        Ok(Self { file, offset, file_len: None, ahead: Vec::new(), ahead_at: offset })
    }

    /// The offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The `n` bytes at `at`, all before `limit` (the caller checked), read ahead up to `limit`.
    fn bytes(&mut self, at: u64, n: usize, limit: u64) -> io::Result<&[u8]> {
        let held = self.ahead_at..self.ahead_at + self.ahead.len() as u64;
        if at < held.start || at + n as u64 > held.end {
            let want = (limit - at).min(n.max(READ_AHEAD) as u64) as usize;
            self.ahead.resize(want, 0);
            self.ahead_at = at;
            let mut got = 0;
            while got < want {
                match self.file.read_at(&mut self.ahead[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.ahead.clear();
                        return Err(e);
                    }
                }
            }
            self.ahead.truncate(got);
            if got < n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the segment ended inside a record"));
            }
        }
        let from = (at - self.ahead_at) as usize;
        Ok(&self.ahead[from..from + n])
    }

    /// Reads the next record into `buf` (appending its key and payload), stopping at `limit` bytes into the
    /// segment, or at the end of the file when `limit` is `None` (a closed segment).
    pub fn next(&mut self, limit: Option<u64>, buf: &mut Vec<u8>) -> io::Result<Next> {
        let limit = match limit {
            Some(l) => l,
            None => match self.file_len {
                Some(l) => l,
                None => *self.file_len.insert(self.file.metadata()?.len()),
            },
        };
        if self.offset >= limit {
            return Ok(Next::End);
        }
        let left = limit - self.offset;
        if left < FRAME_LEN as u64 {
            return Ok(Next::Corrupt("truncated record frame"));
        }
        let frame: [u8; FRAME_LEN] = self.bytes(self.offset, FRAME_LEN, limit)?.try_into().expect("a frame");
        if frame == [0; FRAME_LEN] {
            // The zero tail of a preallocated segment.
            return Ok(Next::End);
        }
        let len_bytes = [frame[0], frame[1], frame[2], frame[3]];
        let body_len = u32::from_le_bytes(len_bytes);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if (body_len as usize) < FIXED_LEN || body_len > MAX_BODY_BYTES {
            return Ok(Next::Corrupt("impossible record length"));
        }
        if left < (FRAME_LEN as u64) + u64::from(body_len) {
            return Ok(Next::Corrupt("truncated record"));
        }
        let body = self.bytes(self.offset + FRAME_LEN as u64, body_len as usize, limit)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&len_bytes);
        hasher.update(body);
        let topic = topic_from_byte(body[0]);
        let key_len = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let problem = if hasher.finalize() != crc {
            "checksum mismatch"
        } else if FIXED_LEN + key_len > body.len() {
            "key longer than the record"
        } else if let Some(topic) = topic {
            let start = buf.len();
            buf.extend_from_slice(body);
            self.offset += (FRAME_LEN as u64) + u64::from(body_len);
            let key = start + FIXED_LEN..start + FIXED_LEN + key_len;
            let payload = key.end..buf.len();
            return Ok(Next::Record(Found { topic, key, payload }));
        } else {
            "unknown topic"
        };
        Ok(Next::Corrupt(problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_removed_gently_is_gone_and_its_size_counted() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1000, (3 << 20) + 17] {
            let path = segment_path(dir.path(), len);
            std::fs::write(&path, vec![7u8; len as usize]).unwrap();
            assert_eq!(remove_gently(&path).unwrap(), len);
            assert!(!path.exists(), "a segment of {len} bytes is removed");
        }
        let missing = remove_gently(&segment_path(dir.path(), 99)).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_record_reads_back_and_any_flipped_bit_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = HEADER.to_vec();
        encode_into(&mut bytes, Topic::Conversions, b"net/tx", b"{\"v\":1}");
        let record_len = bytes.len() - HEADER.len();
        assert_eq!(record_len as u64, encoded_len(b"net/tx", b"{\"v\":1}"));
        std::fs::write(segment_path(dir.path(), 7), &bytes).unwrap();

        let mut reader = SegmentReader::open(dir.path(), 7, 0).unwrap();
        let mut buf = Vec::new();
        let Next::Record(found) = reader.next(None, &mut buf).unwrap() else { panic!("a record") };
        assert_eq!(found.topic, Topic::Conversions);
        assert_eq!(&buf[found.key], b"net/tx");
        assert_eq!(&buf[found.payload], b"{\"v\":1}");
        assert!(matches!(reader.next(None, &mut buf).unwrap(), Next::End));

        for i in HEADER.len()..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            std::fs::write(segment_path(dir.path(), 7), &bad).unwrap();
            let mut reader = SegmentReader::open(dir.path(), 7, 0).unwrap();
            let mut buf = Vec::new();
            let next = reader.next(None, &mut buf).unwrap();
            assert!(matches!(next, Next::Corrupt(_)), "byte {i} flipped was not caught: {next:?}");
            assert!(buf.is_empty());
            assert_eq!(reader.offset(), HEADER_LEN);
        }
    }

    #[test]
    fn a_zero_frame_ends_the_records_and_the_reader_stays_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = HEADER.to_vec();
        encode_into(&mut bytes, Topic::Clicks, b"k", b"first");
        let end = bytes.len() as u64;
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(segment_path(dir.path(), 0), &bytes).unwrap();

        let mut reader = SegmentReader::open(dir.path(), 0, 0).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(reader.next(None, &mut buf).unwrap(), Next::Record(_)));
        for _ in 0..2 {
            assert!(matches!(reader.next(None, &mut buf).unwrap(), Next::End));
            assert_eq!(reader.offset(), end);
        }
    }

    #[test]
    fn only_twenty_digit_seg_names_are_segments() {
        assert_eq!(parse_segment_name(OsStr::new("00000000000000000042.seg")), Some(42));
        assert_eq!(parse_segment_name(OsStr::new("42.seg")), None);
        assert_eq!(parse_segment_name(OsStr::new("00000000000000000042.seg.tmp")), None);
        assert_eq!(parse_segment_name(OsStr::new("cursor")), None);
    }
}
