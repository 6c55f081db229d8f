//! Visitor location and network from MaxMind databases (`.mmdb`): a country or city database (GeoLite2 /
//! GeoIP2 Country or City, or any database with the same record shape) for `country`, `region` (the first
//! subdivision's ISO code) and `city` (its English name), and an ASN or ISP database for `asn` and `isp` (the
//! ISP name, else the AS organisation). Either is optional. The files are read into memory; a lookup is a walk
//! of the search tree, no I/O. [`GeoIp::reload_if_changed`] reads a file again once it changed (a new inode,
//! size or modification time, as when a weekly update replaces it) and swaps it in between two lookups; a
//! file that does not open keeps the one loaded before.
//!
//! Facts the request already gives — a trusted edge's country header, the traffic source's query parameters
//! (`country`, `geo_asn`, …) — are kept; the databases fill what is still empty.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use maxminddb::Reader;
use serde::Deserialize;

/// The loaded databases.
#[derive(Default)]
pub struct GeoIp {
    location: Option<Source>,
    network: Option<Source>,
}

/// One database file and what was read from it.
struct Source {
    what: &'static str,
    path: PathBuf,
    loaded: ArcSwap<Loaded>,
}

struct Loaded {
    reader: Reader<Vec<u8>>,
    stamp: Stamp,
}

/// What tells a changed file: a replaced file has a new inode, a rewritten one a new size or time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified_ns: i128,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        let modified_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        Ok(Self { inode: m.ino(), len: m.len(), modified_ns })
    }
}

impl Source {
    fn open(path: &Path, what: &'static str) -> Result<Self, String> {
        let loaded = read(path, what)?;
        Ok(Self { what, path: path.to_owned(), loaded: ArcSwap::from_pointee(loaded) })
    }

    /// Reads the file again if it changed since it was loaded; whether it did.
    fn reload_if_changed(&self) -> Result<bool, String> {
        let stamp = Stamp::of(&self.path).map_err(|e| format!("{} {}: {e}", self.what, self.path.display()))?;
        if stamp == self.loaded.load().stamp {
            return Ok(false);
        }
        self.loaded.store(Arc::new(read(&self.path, self.what)?));
        Ok(true)
    }
}

/// Reads a database, stamped as it was before the read (a change during the read shows at the next check).
fn read(path: &Path, what: &str) -> Result<Loaded, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    let stamp = Stamp::of(path).map_err(|e| fail(&e))?;
    let reader = Reader::open_readfile(path).map_err(|e| fail(&e))?;
    Ok(Loaded { reader, stamp })
}

/// What the databases know of one address; empty where they know nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoFacts {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// The first subdivision's ISO code (e.g. `BY` for Bavaria).
    pub region: String,
    /// The city's English name.
    pub city: String,
    pub asn: Option<u32>,
    /// The ISP, else the autonomous system's organisation.
    pub isp: String,
}

#[derive(Deserialize, Default)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct Names<'a> {
    #[serde(borrow, default)]
    names: BTreeMap<&'a str, &'a str>,
}

/// The fields of a Country, City, ASN or ISP record this reads.
#[derive(Deserialize, Default)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: IsoCode<'a>,
    #[serde(borrow, default)]
    subdivisions: Vec<IsoCode<'a>>,
    #[serde(borrow, default)]
    city: Names<'a>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(borrow, default)]
    isp: Option<&'a str>,
}

impl GeoIp {
    /// No databases: every lookup is empty.
    pub fn none() -> Self {
        Self::default()
    }

    /// Opens the location database and the network database, either optional. An unreadable file is an
    /// error naming it.
    pub fn open(location: Option<&Path>, network: Option<&Path>) -> Result<Self, String> {
        Ok(Self {
            location: location.map(|p| Source::open(p, "GeoIP location database")).transpose()?,
            network: network.map(|p| Source::open(p, "GeoIP network database")).transpose()?,
        })
    }

    /// Reads each database file again if it changed since it was loaded, and swaps it in; whether any did. A
    /// file that is gone or does not open (say, halfway through being copied) is an error naming it, and the
    /// database loaded before stays in use; the next check tries again.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let mut changed = false;
        let mut errors = Vec::new();
        for source in [&self.location, &self.network].into_iter().flatten() {
            match source.reload_if_changed() {
                Ok(c) => changed |= c,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(changed) } else { Err(errors.join("; ")) }
    }

    /// Whether any database is loaded.
    pub fn is_enabled(&self) -> bool {
        self.location.is_some() || self.network.is_some()
    }

    /// What the databases say about `ip`.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let mut facts = GeoFacts::default();
        let location = self.location.as_ref().map(|s| s.loaded.load());
        if let Some(r) = record(location.as_ref().map(|l| &l.reader), ip) {
            facts.country = r.country.iso_code.unwrap_or_default().to_ascii_uppercase();
            facts.region = r.subdivisions.first().and_then(|s| s.iso_code).unwrap_or_default().to_owned();
            facts.city = r.city.names.get("en").copied().unwrap_or_default().to_owned();
        }
        let network = self.network.as_ref().map(|s| s.loaded.load());
        if let Some(r) = record(network.as_ref().map(|l| &l.reader), ip) {
            facts.asn = r.autonomous_system_number;
            facts.isp = r.isp.or(r.autonomous_system_organization).unwrap_or_default().to_owned();
        }
        facts
    }
}

/// The record for `ip`, if the database has one (an IPv6 address in an IPv4-only database has none).
fn record(reader: Option<&Reader<Vec<u8>>>, ip: IpAddr) -> Option<Record<'_>> {
    reader?.lookup(ip).ok()?.decode::<Record<'_>>().ok().flatten()
}
