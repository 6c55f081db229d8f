//! References between custom resources, and the store IDs of mirrored objects.
//!
//! **IDs.** A mirrored object's store ID is a name-based UUID (v5) of its kind, namespace and name, not of its
//! UID: deleting and re-applying a manifest (as GitOps tools do on a replace) keeps the ID, so clicks,
//! conversions and reports recorded under the old object stay attached to the new one, and a reference by
//! name resolves to an ID without reading the referenced object. The price: two clusters that mirror objects
//! of the same kind, namespace and name into one store would share a document; give each cluster its own
//! store (or its own namespaces).

use std::collections::BTreeMap;
use std::fmt;

use traffoflex_core::store::Collection;

/// The kinds a spec can name, and the Secret an affiliate network can take its credential from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Campaign,
    Stream,
    Destination,
    TrafficSource,
    AffiliateNetwork,
    PostbackTemplate,
    Secret,
}

impl RefKind {
    /// The Kubernetes kind.
    pub const fn kind(self) -> &'static str {
        match self {
            RefKind::Campaign => "Campaign",
            RefKind::Stream => "Stream",
            RefKind::Destination => "Destination",
            RefKind::TrafficSource => "TrafficSource",
            RefKind::AffiliateNetwork => "AffiliateNetwork",
            RefKind::PostbackTemplate => "PostbackTemplate",
            RefKind::Secret => "Secret",
        }
    }

    /// The store collection the kind is mirrored into (`None` for Secrets, which are read, not mirrored).
    pub const fn collection(self) -> Option<Collection> {
        match self {
            RefKind::Campaign => Some(Collection::Campaigns),
            RefKind::Stream => Some(Collection::Streams),
            RefKind::Destination => Some(Collection::Destinations),
            RefKind::TrafficSource => Some(Collection::TrafficSources),
            RefKind::AffiliateNetwork => Some(Collection::AffiliateNetworks),
            RefKind::PostbackTemplate => Some(Collection::PostbackTemplates),
            RefKind::Secret => None,
        }
    }
}

impl fmt::Display for RefKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// The namespace of every store ID of a mirrored object (a fixed random UUID, so IDs are TraffoFlex's own).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_2d4e_8a3b_4c5d_9e0f_1a2b_3c4d_5e6f);

/// The store ID of the object of `kind` named `name` in `namespace`: the same for every apply of the manifest.
pub fn store_id(kind: RefKind, namespace: &str, name: &str) -> String {
    let key = format!("traffoflex.io/{}/{namespace}/{name}", kind.kind());
    uuid::Uuid::new_v5(&ID_NAMESPACE, key.as_bytes()).to_string()
}

/// One object a spec names: what kind, its name, and where in the spec (`spec.destinations[1].destinationRef`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub kind: RefKind,
    pub name: String,
    /// For a Secret: the key in its data.
    pub key: Option<String>,
    /// The path of the reference in the custom resource, from `spec`.
    pub path: String,
}

impl Reference {
    pub fn new(kind: RefKind, name: &str, path: impl Into<String>) -> Self {
        Self { kind, name: name.to_owned(), key: None, path: path.into() }
    }

    pub fn secret(name: &str, key: &str, path: impl Into<String>) -> Self {
        Self { kind: RefKind::Secret, name: name.to_owned(), key: Some(key.to_owned()), path: path.into() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{} `{}` (key `{key}`, at {})", self.kind, self.name, self.path),
            None => write!(f, "{} `{}` (at {})", self.kind, self.name, self.path),
        }
    }
}

/// What resolving a spec's references found: the store ID of every object found, the value of every Secret key
/// found, and the references that could not be resolved, each with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    ids: BTreeMap<(RefKind, String), String>,
    secrets: BTreeMap<(String, String), String>,
    pub missing: Vec<Missing>,
}

/// A reference that did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub reference: Reference,
    pub why: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.reference, self.why)
    }
}

impl Resolved {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the store ID of the object `reference` names.
    pub fn found(&mut self, reference: &Reference, id: String) {
        self.ids.insert((reference.kind, reference.name.clone()), id);
    }

    /// Records the value of the Secret key `reference` names.
    pub fn found_secret(&mut self, reference: &Reference, value: String) {
        let key = reference.key.clone().unwrap_or_default();
        self.secrets.insert((reference.name.clone(), key), value);
    }

    /// Records a reference that did not resolve, and why (`does not exist in namespace shop`).
    pub fn not_found(&mut self, reference: &Reference, why: impl Into<String>) {
        self.missing.push(Missing { reference: reference.clone(), why: why.into() });
    }

    /// The store ID of the `kind` object named `name`, if found.
    pub fn id(&self, kind: RefKind, name: &str) -> Option<String> {
        self.ids.get(&(kind, name.to_owned())).cloned()
    }

    /// The value of key `key` of Secret `name`, if found.
    pub fn secret(&self, name: &str, key: &str) -> Option<String> {
        self.secrets.get(&(name.to_owned(), key.to_owned())).cloned()
    }

    /// One line naming every unresolved reference, for a condition message and an Event.
    pub fn missing_message(&self) -> String {
        let list: Vec<String> = self.missing.iter().map(ToString::to_string).collect();
        format!("{}; it is retried, and synced once the referenced objects exist", list.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = store_id(RefKind::Destination, "shop", "offer-a");
        assert_eq!(a, store_id(RefKind::Destination, "shop", "offer-a"));
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
        assert_ne!(a, store_id(RefKind::Destination, "shop", "offer-b"));
        assert_ne!(a, store_id(RefKind::Destination, "other", "offer-a"));
        assert_ne!(a, store_id(RefKind::Campaign, "shop", "offer-a"));
        // `a/b` + `c` and `a` + `b/c` cannot collide: names and namespaces have no slash.
        assert_eq!(store_id(RefKind::Campaign, "ns", "x"), store_id(RefKind::Campaign, "ns", "x"));
    }

    #[test]
    fn the_missing_message_names_kind_name_and_path() {
        let mut r = Resolved::new();
        let dest = Reference::new(RefKind::Destination, "offer-b", "spec.destinations[1].destinationRef");
        r.not_found(&dest, "does not exist in namespace shop");
        let secret = Reference::secret("neta-auth", "token", "spec.auth.secretRef");
        r.not_found(&secret, "has no such key");
        let msg = r.missing_message();
        assert!(
            msg.starts_with(
                "Destination `offer-b` (at spec.destinations[1].destinationRef) does not exist in namespace shop; \
                 Secret `neta-auth` (key `token`, at spec.auth.secretRef) has no such key"
            ),
            "{msg}"
        );
    }

    #[test]
    fn found_ids_and_secrets_are_looked_up_by_name() {
        let mut r = Resolved::new();
        r.found(&Reference::new(RefKind::Campaign, "summer", "spec.campaignRef"), "id-1".into());
        r.found_secret(&Reference::secret("auth", "token", "spec.auth.secretRef"), "s3cret".into());
        assert_eq!(r.id(RefKind::Campaign, "summer").as_deref(), Some("id-1"));
        assert_eq!(r.id(RefKind::Destination, "summer"), None);
        assert_eq!(r.secret("auth", "token").as_deref(), Some("s3cret"));
        assert_eq!(r.secret("auth", "secret"), None);
        assert!(r.missing.is_empty());
    }
}
