//! Visitor location and network from MaxMind databases (`.mmdb`): a country or city database (GeoLite2 /
//! GeoIP2 Country or City, or any database with the same record shape) for `country`, `region` (the first
//! subdivision's ISO code) and `city` (its English name), and an ASN or ISP database for `asn` and `isp` (the
//! ISP name, else the AS organisation). Either is optional. The files are read into memory once at start;
//! a lookup is a walk of the search tree, no I/O.
//!
//! Facts the request already gives — a trusted edge's country header, the traffic source's query parameters
//! (`country`, `geo_asn`, …) — are kept; the databases fill what is still empty.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::Reader;
use serde::Deserialize;

/// The loaded databases.
#[derive(Default)]
pub struct GeoIp {
    location: Option<Reader<Vec<u8>>>,
    network: Option<Reader<Vec<u8>>>,
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

fn open(path: &Path, what: &str) -> Result<Reader<Vec<u8>>, String> {
    Reader::open_readfile(path).map_err(|e| format!("{what} {}: {e}", path.display()))
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
            location: location.map(|p| open(p, "GeoIP location database")).transpose()?,
            network: network.map(|p| open(p, "GeoIP network database")).transpose()?,
        })
    }

    /// Whether any database is loaded.
    pub fn is_enabled(&self) -> bool {
        self.location.is_some() || self.network.is_some()
    }

    /// What the databases say about `ip`.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let mut facts = GeoFacts::default();
        if let Some(r) = record(self.location.as_ref(), ip) {
            facts.country = r.country.iso_code.unwrap_or_default().to_ascii_uppercase();
            facts.region = r.subdivisions.first().and_then(|s| s.iso_code).unwrap_or_default().to_owned();
            facts.city = r.city.names.get("en").copied().unwrap_or_default().to_owned();
        }
        if let Some(r) = record(self.network.as_ref(), ip) {
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
