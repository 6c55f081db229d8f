//! The collections of the configuration store and the indexes each one declares.
//!
//! Both backends build their indexes from [`INDEXES`]; add a line there to add an index. A field path is a
//! dotted camelCase path into the document (`costModel.type`). The fields of a unique index are required:
//! the store refuses a document in which one is missing or `null` (MongoDB would index a missing field as
//! `null` and let only one such document in, while SQLite and FerretDB let any number in), so every backend
//! behaves the same.

use std::fmt;
use std::str::FromStr;

/// A named collection of JSON documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    Campaigns,
    Streams,
    Destinations,
    TrafficSources,
    AffiliateNetworks,
    PostbackTemplates,
    Users,
    Sessions,
    ApiTokens,
    Teams,
    Conversions,
    OutboundPostbacks,
    DestinationHealth,
    AuditLog,
    Meta,
}

impl Collection {
    /// Every collection, in a stable order.
    pub const ALL: [Collection; 15] = [
        Collection::Campaigns,
        Collection::Streams,
        Collection::Destinations,
        Collection::TrafficSources,
        Collection::AffiliateNetworks,
        Collection::PostbackTemplates,
        Collection::Users,
        Collection::Sessions,
        Collection::ApiTokens,
        Collection::Teams,
        Collection::Conversions,
        Collection::OutboundPostbacks,
        Collection::DestinationHealth,
        Collection::AuditLog,
        Collection::Meta,
    ];

    /// The collection's name in MongoDB and its table name in SQLite (camelCase).
    pub const fn name(self) -> &'static str {
        match self {
            Collection::Campaigns => "campaigns",
            Collection::Streams => "streams",
            Collection::Destinations => "destinations",
            Collection::TrafficSources => "trafficSources",
            Collection::AffiliateNetworks => "affiliateNetworks",
            Collection::PostbackTemplates => "postbackTemplates",
            Collection::Users => "users",
            Collection::Sessions => "sessions",
            Collection::ApiTokens => "apiTokens",
            Collection::Teams => "teams",
            Collection::Conversions => "conversions",
            Collection::OutboundPostbacks => "outboundPostbacks",
            Collection::DestinationHealth => "destinationHealth",
            Collection::AuditLog => "auditLog",
            Collection::Meta => "meta",
        }
    }

    /// The indexes declared for this collection.
    pub fn indexes(self) -> impl Iterator<Item = &'static IndexSpec> {
        INDEXES.iter().filter(move |i| i.collection == self)
    }

    /// The unique indexes declared for this collection.
    pub fn unique_indexes(self) -> impl Iterator<Item = &'static IndexSpec> {
        self.indexes().filter(|i| i.unique)
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Collection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Collection::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| format!("unknown collection `{s}`"))
    }
}

/// One index of one collection. Fields are ascending; the name is the same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    pub collection: Collection,
    /// Unique across the whole store (SQLite index names are global), e.g. `campaigns_key`.
    pub name: &'static str,
    /// Dotted field paths, in index order.
    pub fields: &'static [&'static str],
    pub unique: bool,
}

impl IndexSpec {
    /// What a person reads in a duplicate-key error: the fields joined by `", "`.
    pub fn describe(&self) -> String {
        self.fields.join(", ")
    }

    /// The declared index with this name, if any.
    pub fn by_name(name: &str) -> Option<&'static IndexSpec> {
        INDEXES.iter().find(|i| i.name == name)
    }
}

const fn unique(collection: Collection, name: &'static str, fields: &'static [&'static str]) -> IndexSpec {
    IndexSpec { collection, name, fields, unique: true }
}

const fn plain(collection: Collection, name: &'static str, fields: &'static [&'static str]) -> IndexSpec {
    IndexSpec { collection, name, fields, unique: false }
}

use Collection as C;

/// Every declared index. `id` is always unique and needs no line here.
pub static INDEXES: &[IndexSpec] = &[
    unique(C::Campaigns, "campaigns_key", &["key"]),
    plain(C::Campaigns, "campaigns_status", &["status"]),
    plain(C::Streams, "streams_campaignId", &["campaignId"]),
    unique(C::TrafficSources, "trafficSources_key", &["key"]),
    unique(C::AffiliateNetworks, "affiliateNetworks_key", &["key"]),
    unique(C::Users, "users_email", &["email"]),
    unique(C::Sessions, "sessions_tokenHash", &["tokenHash"]),
    plain(C::Sessions, "sessions_userId", &["userId"]),
    unique(C::ApiTokens, "apiTokens_tokenHash", &["tokenHash"]),
    plain(C::ApiTokens, "apiTokens_userId", &["userId"]),
    unique(C::Conversions, "conversions_networkId_transactionId", &["networkId", "transactionId"]),
    plain(C::Conversions, "conversions_clickId", &["clickId"]),
    plain(C::Conversions, "conversions_updatedAt", &["updatedAt"]),
    unique(C::OutboundPostbacks, "outboundPostbacks_conversionId_target", &["conversionId", "target"]),
    plain(C::OutboundPostbacks, "outboundPostbacks_status", &["status"]),
    plain(C::OutboundPostbacks, "outboundPostbacks_status_nextAttemptAt", &["status", "nextAttemptAt"]),
    plain(C::DestinationHealth, "destinationHealth_destinationId", &["destinationId"]),
    plain(C::AuditLog, "auditLog_objectId", &["objectId"]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::validate_path;

    #[test]
    fn names_round_trip_and_are_unique() {
        for c in Collection::ALL {
            assert_eq!(c.name().parse::<Collection>(), Ok(c));
        }
        let mut names: Vec<_> = INDEXES.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INDEXES.len(), "index names must be unique");
    }

    #[test]
    fn every_index_field_is_a_valid_path() {
        for i in INDEXES {
            assert!(!i.fields.is_empty(), "{}", i.name);
            for f in i.fields {
                assert!(validate_path(f).is_ok(), "{}: {f}", i.name);
                assert_ne!(*f, "id", "{}: `id` is always unique", i.name);
            }
        }
    }
}
