//! Opening a log directory after a clean stop or a crash.
//!
//! Only the last segment can hold a torn write: the writer fsyncs a segment before it starts the next one. So
//! recovery reads the last segment record by record, checking every checksum, and cuts the file at the first
//! record that is not whole (a crash mid-write) — everything before it stays. A write the writer never
//! completed was never acknowledged, so nothing acknowledged is lost. The sequence number after the last good
//! record is where appending continues. When nothing but zeros follows the last record, that is the unused
//! rest of a preallocated segment: it stays, and appending goes on into it. Anything else there is cut, zeros
//! and all, so that no leftover of a torn write can ever be read as a record.
//!
//! The shipper starts at the persisted cursor; without one (or with one naming a segment that is gone) it
//! starts at the oldest segment, shipping everything again. Segments wholly before the cursor are what a
//! crash between persisting the cursor and deleting them left behind; they are deleted here.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::ClickLogError;
use super::cursor::{self, Position};
use super::segment::{self, HEADER, HEADER_LEN, Next, SegmentReader};

/// The state of a log directory, ready for the writer and the shipper.
pub(super) struct Recovered {
    /// The last segment, open for appending at `end.offset`.
    pub file: File,
    /// The end of the recovered records: where the next record goes.
    pub end: Position,
    /// Where the shipper starts.
    pub start: Position,
    /// The bytes of every segment kept.
    pub disk_bytes: u64,
    /// The last segment's length: more than `end.offset` when it is preallocated.
    pub room: u64,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> ClickLogError + '_ {
    move |source| ClickLogError::Io { path: path.to_owned(), source }
}

/// Recovers `dir` (which exists and is locked by the caller).
pub(super) fn recover(dir: &Path) -> Result<Recovered, ClickLogError> {
    for leftover in ["cursor.tmp", super::spare::NAME] {
        match std::fs::remove_file(dir.join(leftover)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(dir)(e)),
            _ => {}
        }
    }
    let mut bases = segment::list_segments(dir).map_err(at(dir))?;
    let cursor = cursor::load(dir).map_err(at(dir))?;
    if bases.is_empty() {
        // A new log, or one whose segments were all shipped and removed: numbering goes on after the cursor.
        let base = cursor.map_or(0, |c| c.seq);
        segment::create_segment(dir, base).map_err(at(&segment::segment_path(dir, base)))?;
        bases.push(base);
    }
    let (first, last) = (bases[0], bases[bases.len() - 1]);
    let (file, len, count, room) = repair_last(dir, last)?;
    let end = Position { segment: last, offset: len, seq: last + count };
    let oldest = Position { segment: first, offset: HEADER_LEN, seq: first };
    let start = match cursor {
        Some(c) if c.segment == last && (c.offset > len || c.seq > end.seq) => end,
        Some(c) if bases.contains(&c.segment) => Position { offset: c.offset.max(HEADER_LEN), ..c },
        Some(c) => {
            tracing::warn!(dir = %dir.display(), segment = c.segment, "the click log cursor names a missing segment; shipping again from the oldest");
            oldest
        }
        None => oldest,
    };

    let mut disk_bytes = 0;
    let mut removed = false;
    for &base in &bases {
        let path = segment::segment_path(dir, base);
        if base < start.segment {
            std::fs::remove_file(&path).map_err(at(&path))?;
            removed = true;
        } else if base == last {
            // Its records; a zero tail is not counted until the writer cuts it off.
            disk_bytes += len;
        } else {
            disk_bytes += std::fs::metadata(&path).map_err(at(&path))?.len();
        }
    }
    if removed {
        segment::sync_dir(dir).map_err(at(dir))?;
    }
    tracing::info!(
        dir = %dir.display(),
        segments = bases.iter().filter(|&&b| b >= start.segment).count(),
        unshipped = end.seq.saturating_sub(start.seq),
        next_seq = end.seq,
        "click log opened"
    );
    Ok(Recovered { file, end, start, disk_bytes, room })
}

/// Checks every record of the last segment and cuts it after the last whole one, unless only a preallocated
/// zero tail follows. Returns the file positioned there, that offset, how many records it holds, and the file's
/// length.
fn repair_last(dir: &Path, base: u64) -> Result<(File, u64, u64, u64), ClickLogError> {
    let path = segment::segment_path(dir, base);
    let mut file = OpenOptions::new().read(true).write(true).open(&path).map_err(at(&path))?;
    let file_len = file.metadata().map_err(at(&path))?.len();
    if file_len < HEADER_LEN {
        // Torn while being created: it never held a record.
        file.set_len(0).map_err(at(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(at(&path))?;
        file.write_all(&HEADER).map_err(at(&path))?;
        file.sync_all().map_err(at(&path))?;
        return Ok((file, HEADER_LEN, 0, HEADER_LEN));
    }
    let mut reader = SegmentReader::open(dir, base, HEADER_LEN).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => ClickLogError::NotASegment { path: path.clone() },
        _ => ClickLogError::Io { path: path.clone(), source: e },
    })?;
    let mut buf = Vec::new();
    let mut count = 0;
    let torn = loop {
        match reader.next(None, &mut buf).map_err(at(&path))? {
            Next::Record(_) => {
                count += 1;
                buf.clear();
            }
            Next::End => break None,
            Next::Corrupt(why) => break Some(why),
        }
    };
    let good = reader.offset();
    let zero_tail = good < file_len && segment::zero_from(&mut file, good).map_err(at(&path))?;
    if good < file_len && !zero_tail {
        tracing::warn!(
            segment = %path.display(),
            kept_records = count,
            cut_bytes = file_len - good,
            why = torn.unwrap_or("trailing bytes"),
            "click log tail was torn (a crash mid-write); cutting it after the last whole record"
        );
        file.set_len(good).map_err(at(&path))?;
        file.sync_all().map_err(at(&path))?;
    }
    file.seek(SeekFrom::Start(good)).map_err(at(&path))?;
    Ok((file, good, count, if zero_tail { file_len } else { good }))
}
