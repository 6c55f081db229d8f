//! Positions in the log and the shipper's persisted cursor.
//!
//! A [`Position`] names a record boundary: the segment (by its base sequence number), the byte offset in it and
//! the sequence number of the record found there. The writer publishes the end of what is on disk as one; the
//! shipper's cursor is the position after the last record the sink acknowledged.
//!
//! The cursor lives in `<dir>/cursor` as one line, `v1 <segment> <offset> <seq>`. It is replaced atomically:
//! written to `cursor.tmp`, fsynced, renamed over `cursor`, and the directory fsynced. A crash at any point
//! leaves either the old or the new cursor; the old one only means records are shipped again (at least once).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

const FILE: &str = "cursor";
const TMP: &str = "cursor.tmp";

/// A record boundary in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Position {
    /// The base sequence number of the segment.
    pub segment: u64,
    /// The byte offset in that segment.
    pub offset: u64,
    /// The sequence number of the record at this position.
    pub seq: u64,
}

/// The persisted cursor, if there is a readable one. An unreadable cursor is reported and ignored: the log is
/// then shipped again from its oldest segment.
pub(super) fn load(dir: &Path) -> io::Result<Option<Position>> {
    let text = match std::fs::read_to_string(dir.join(FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
        Err(e) => return Err(e),
    };
    let parsed = parse(&text);
    if parsed.is_none() {
        tracing::warn!(dir = %dir.display(), content = %text.trim(), "unreadable click log cursor; shipping again from the oldest segment");
    }
    Ok(parsed)
}

fn parse(text: &str) -> Option<Position> {
    let mut words = text.split_whitespace();
    if words.next()? != "v1" {
        return None;
    }
    let pos = Position {
        segment: words.next()?.parse().ok()?,
        offset: words.next()?.parse().ok()?,
        seq: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(pos)
}

/// Replaces the cursor with `pos`, durably.
pub(super) fn store(dir: &Path, pos: Position) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut file = File::create(&tmp)?;
    writeln!(file, "v1 {} {} {}", pos.segment, pos.offset, pos.seq)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(FILE))?;
    super::segment::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cursor_loads_back_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let pos = Position { segment: 100, offset: 4096, seq: 137 };
        store(dir.path(), pos).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(pos));
        assert!(!dir.path().join(TMP).exists());
        std::fs::write(dir.path().join(FILE), "v1 100 4096").unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(FILE), b"\xff\xfe").unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }
}
