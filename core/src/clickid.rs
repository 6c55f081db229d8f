//! Click IDs: unique, URL-safe, time-ordered, self-describing and authenticated.
//!
//! A click ID is 42 bytes written as 56 characters of a URL-safe base-64 alphabet kept in ASCII order, so IDs
//! sort by time as plain strings:
//!
//! | bytes | content |
//! |---|---|
//! | 1 | format version (high 4 bits) and the slot of the key that signed it (low 4 bits) |
//! | 6 | milliseconds since the Unix epoch, big-endian |
//! | 7 | random |
//! | 8 | fingerprint of the campaign ID |
//! | 4 | fingerprint of the stream ID (zero for trafficback) |
//! | 4 | fingerprint of the destination ID (zero for trafficback) |
//! | 12 | HMAC-SHA256 of the 30 bytes above under the server key, truncated |
//!
//! A postback that carries the ID is attributed to its campaign, stream and destination from the ID alone: the
//! fingerprints (the first bytes of SHA-256 of each ID) are resolved against the in-memory configuration
//! snapshot, never the database; the ClickHouse click row enriches it further when present. A forged or altered
//! ID fails the MAC and is recognised as such. Keys rotate through slots: a new key takes a new slot and the old
//! one keeps verifying IDs already in the wild.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const BODY: usize = 30;
const MAC: usize = 12;
const RAW: usize = BODY + MAC;
/// Length of a click ID in characters.
pub const LEN: usize = RAW / 3 * 4;
const ALPHABET: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// What a click ID says about its click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickIdInfo {
    pub ts_millis: i64,
    pub campaign: [u8; 8],
    pub stream: [u8; 4],
    pub destination: [u8; 4],
}

/// Why a string is not a click ID of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickIdError {
    #[error("not a click ID: expected {LEN} characters of [-0-9A-Z_a-z]")]
    Malformed,
    #[error("click ID format version {0} is not known")]
    Version(u8),
    #[error("click ID signed with key slot {0}, which this server does not have")]
    UnknownKey(u8),
    #[error("click ID signature does not match: forged or altered")]
    Forged,
}

/// The first 8 bytes of SHA-256 of an object ID.
pub fn fingerprint8(id: &str) -> [u8; 8] {
    let d = Sha256::digest(id.as_bytes());
    let mut out = [0; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// The first 4 bytes of SHA-256 of an object ID; all zero for an empty ID.
pub fn fingerprint4(id: &str) -> [u8; 4] {
    if id.is_empty() {
        return [0; 4];
    }
    let d = Sha256::digest(id.as_bytes());
    [d[0], d[1], d[2], d[3]]
}

/// Makes and checks click IDs with the server's keys.
#[derive(Clone)]
pub struct ClickIdCodec {
    /// By slot; `None` where no key is configured.
    keys: Vec<Option<Hmac<Sha256>>>,
    current: u8,
}

impl std::fmt::Debug for ClickIdCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickIdCodec").field("current", &self.current).finish_non_exhaustive()
    }
}

impl ClickIdCodec {
    /// A codec that signs with `keys[current]` and verifies with any key given. At most 16 slots.
    pub fn new(keys: &[(u8, &[u8])], current: u8) -> Result<Self, ClickIdError> {
        let mut slots: Vec<Option<Hmac<Sha256>>> = vec![None; 16];
        for (slot, key) in keys {
            let s = usize::from(*slot);
            if s >= 16 {
                return Err(ClickIdError::UnknownKey(*slot));
            }
            slots[s] = Some(<Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| ClickIdError::UnknownKey(*slot))?);
        }
        if slots.get(usize::from(current)).and_then(Option::as_ref).is_none() {
            return Err(ClickIdError::UnknownKey(current));
        }
        Ok(Self { keys: slots, current })
    }

    /// A codec with one key in slot 0.
    pub fn single(key: &[u8]) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
        let mut keys = vec![None; 16];
        keys[0] = Some(mac);
        Self { keys, current: 0 }
    }

    /// A new click ID for a click at `ts_millis`.
    pub fn issue(&self, ts_millis: i64, campaign_id: &str, stream_id: &str, destination_id: &str) -> String {
        let mut raw = [0u8; RAW];
        raw[0] = (VERSION << 4) | self.current;
        let ts = u64::try_from(ts_millis).unwrap_or(0).to_be_bytes();
        raw[1..7].copy_from_slice(&ts[2..8]);
        rand::fill(&mut raw[7..14]);
        raw[14..22].copy_from_slice(&fingerprint8(campaign_id));
        raw[22..26].copy_from_slice(&fingerprint4(stream_id));
        raw[26..30].copy_from_slice(&fingerprint4(destination_id));
        let tag = self.tag(self.current, &raw[..BODY]);
        raw[BODY..].copy_from_slice(&tag);
        encode(&raw)
    }

    /// Checks a click ID and reads what it carries.
    pub fn verify(&self, id: &str) -> Result<ClickIdInfo, ClickIdError> {
        let raw = decode(id).ok_or(ClickIdError::Malformed)?;
        let version = raw[0] >> 4;
        if version != VERSION {
            return Err(ClickIdError::Version(version));
        }
        let slot = raw[0] & 0x0f;
        let mac = self.keys.get(usize::from(slot)).and_then(Option::as_ref).ok_or(ClickIdError::UnknownKey(slot))?;
        let mut mac = mac.clone();
        mac.update(&raw[..BODY]);
        mac.verify_truncated_left(&raw[BODY..]).map_err(|_| ClickIdError::Forged)?;
        let mut ts = [0u8; 8];
        ts[2..8].copy_from_slice(&raw[1..7]);
        let mut info = ClickIdInfo { ts_millis: 0, campaign: [0; 8], stream: [0; 4], destination: [0; 4] };
        info.ts_millis = i64::try_from(u64::from_be_bytes(ts)).unwrap_or(0);
        info.campaign.copy_from_slice(&raw[14..22]);
        info.stream.copy_from_slice(&raw[22..26]);
        info.destination.copy_from_slice(&raw[26..30]);
        Ok(info)
    }

    fn tag(&self, slot: u8, body: &[u8]) -> [u8; MAC] {
        let mut out = [0u8; MAC];
        if let Some(mac) = self.keys.get(usize::from(slot)).and_then(Option::as_ref) {
            let mut mac = mac.clone();
            mac.update(body);
            out.copy_from_slice(&mac.finalize().into_bytes()[..MAC]);
        }
        out
    }
}

/// HMAC-SHA256 accepts keys of any length, so this cannot be reached.
fn unreachable_hmac() -> Hmac<Sha256> {
    unreachable!("HMAC-SHA256 takes keys of any length")
}

fn encode(raw: &[u8; RAW]) -> String {
    let mut out = String::with_capacity(LEN);
    for chunk in raw.chunks_exact(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'-' => 0,
        b'0'..=b'9' => c - b'0' + 1,
        b'A'..=b'Z' => c - b'A' + 11,
        b'_' => 37,
        b'a'..=b'z' => c - b'a' + 38,
        _ => return None,
    };
    Some(u32::from(v))
}

fn decode(s: &str) -> Option<[u8; RAW]> {
    let bytes = s.as_bytes();
    if bytes.len() != LEN {
        return None;
    }
    let mut raw = [0u8; RAW];
    for (i, quad) in bytes.chunks_exact(4).enumerate() {
        let mut n = 0u32;
        for &c in quad {
            n = (n << 6) | value(c)?;
        }
        raw[i * 3] = (n >> 16) as u8;
        raw[i * 3 + 1] = (n >> 8) as u8;
        raw[i * 3 + 2] = n as u8;
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn codec() -> ClickIdCodec {
        ClickIdCodec::single(b"test key")
    }

    #[test]
    fn the_alphabet_is_in_ascii_order_and_decodes_back() {
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
        for (i, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(value(c), Some(i as u32));
        }
    }

    #[test]
    fn an_id_carries_time_and_fingerprints() {
        let id = codec().issue(1_764_000_000_123, "camp", "stream", "dest");
        assert_eq!(id.len(), LEN);
        assert!(id.bytes().all(|c| value(c).is_some()), "URL-safe: {id}");
        let info = codec().verify(&id).unwrap();
        assert_eq!(info.ts_millis, 1_764_000_000_123);
        assert_eq!(info.campaign, fingerprint8("camp"));
        assert_eq!(info.stream, fingerprint4("stream"));
        assert_eq!(info.destination, fingerprint4("dest"));
    }

    #[test]
    fn trafficback_ids_have_empty_stream_and_destination() {
        let info = codec().verify(&codec().issue(1, "camp", "", "")).unwrap();
        assert_eq!((info.stream, info.destination), ([0; 4], [0; 4]));
    }

    #[test]
    fn ids_are_unique_and_sort_by_time() {
        let c = codec();
        let ids: Vec<String> = (0..10_000).map(|i| c.issue(1_764_000_000_000 + i / 10, "c", "s", "d")).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        let later = c.issue(1_764_000_001_001, "c", "s", "d");
        assert!(ids.iter().all(|id| id.as_str() < later.as_str()));
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let c = codec();
        let id = c.issue(1_764_000_000_000, "camp", "s", "d");
        for i in 0..id.len() {
            for &alt in b"-9Zz_" {
                let mut b = id.clone().into_bytes();
                if b[i] == alt {
                    continue;
                }
                b[i] = alt;
                let altered = String::from_utf8(b).unwrap();
                assert!(c.verify(&altered).is_err(), "altered at {i}: {altered}");
            }
        }
    }

    #[test]
    fn another_servers_key_is_a_forgery() {
        let id = ClickIdCodec::single(b"someone else").issue(1, "c", "s", "d");
        assert_eq!(codec().verify(&id), Err(ClickIdError::Forged));
    }

    #[test]
    fn malformed_ids_are_named() {
        for bad in ["", "short", &"!".repeat(LEN), &"a".repeat(LEN + 1)] {
            assert_eq!(codec().verify(bad), Err(ClickIdError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn rotated_keys_keep_old_ids_valid() {
        let old = ClickIdCodec::new(&[(0, b"old")], 0).unwrap();
        let id = old.issue(5, "c", "s", "d");
        let rotated = ClickIdCodec::new(&[(0, b"old"), (1, b"new")], 1).unwrap();
        assert!(rotated.verify(&id).is_ok());
        let fresh = rotated.issue(6, "c", "s", "d");
        assert_eq!(old.verify(&fresh), Err(ClickIdError::UnknownKey(1)));
        assert!(ClickIdCodec::new(&[(0, b"k")], 3).is_err(), "the signing slot needs a key");
    }
}
