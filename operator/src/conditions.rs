//! What one reconciliation found, and the status, Event and requeue it leads to: one helper builds the
//! `Ready`/`Synced` conditions from every outcome, so each reason reads the same everywhere. Pure.

use std::time::Duration;

use traffoflex_crds::status::{READY, SYNCED};
use traffoflex_crds::{ConditionStatus, FieldError, ResourceStatus, StatusCondition};

/// Condition reason: the object is in the store as its spec says.
pub const REASON_SYNCED: &str = "Synced";
/// Condition reason: the spec names an object that does not exist (or is not synced yet).
pub const REASON_MISSING_REFERENCE: &str = "MissingReference";
/// Condition reason: the spec does not validate; the message lists the fields.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Condition reason: another store object (e.g. one made through the API) already has this key.
pub const REASON_CONFLICT: &str = "Conflict";
/// Condition reason: the configuration store did not answer.
pub const REASON_STORE_UNAVAILABLE: &str = "StoreUnavailable";

/// How long until an object whose references are missing is tried again (their own changes also retry it).
pub const MISSING_REFERENCE_RETRY: Duration = Duration::from_secs(10);
/// How long until a synced object is checked again (store drift, Secret changes).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How long until an object in conflict is tried again.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);

/// What one reconciliation of one object found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// In the store under `store_id`; `changed` when this reconciliation wrote it.
    Synced { store_id: String, changed: bool },
    /// The spec does not validate; paths are from the object's root (`spec.key`).
    InvalidSpec(Vec<FieldError>),
    /// References that did not resolve, as one message.
    MissingReference(String),
    /// The store refused the document (a duplicate key).
    Conflict(String),
    /// The store did not answer.
    StoreUnavailable(String),
}

impl Outcome {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Synced { .. } => REASON_SYNCED,
            Outcome::InvalidSpec(_) => REASON_INVALID_SPEC,
            Outcome::MissingReference(_) => REASON_MISSING_REFERENCE,
            Outcome::Conflict(_) => REASON_CONFLICT,
            Outcome::StoreUnavailable(_) => REASON_STORE_UNAVAILABLE,
        }
    }

    /// What a person reads in `kubectl describe`: what happened and what to do.
    pub fn message(&self) -> String {
        match self {
            Outcome::Synced { store_id, .. } => {
                format!("mirrored into the configuration store as {store_id}; the data plane serves it within seconds")
            }
            Outcome::InvalidSpec(errors) => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                format!("the spec is invalid, fix these fields: {}", list.join("; "))
            }
            Outcome::MissingReference(message) => format!("a referenced object is missing: {message}"),
            Outcome::Conflict(message) => {
                format!("{message}; it was probably made through the API: delete one of the two or change this key")
            }
            Outcome::StoreUnavailable(message) => {
                format!("the configuration store did not answer ({message}); retrying")
            }
        }
    }

    pub fn is_synced(&self) -> bool {
        matches!(self, Outcome::Synced { .. })
    }

    /// When to reconcile again without a change (`None`: only on a change of the object).
    pub fn requeue_after(&self) -> Option<Duration> {
        match self {
            Outcome::Synced { .. } => Some(RESYNC),
            Outcome::InvalidSpec(_) => None,
            Outcome::MissingReference(_) => Some(MISSING_REFERENCE_RETRY),
            Outcome::Conflict(_) => Some(CONFLICT_RETRY),
            Outcome::StoreUnavailable(_) => Some(MISSING_REFERENCE_RETRY),
        }
    }
}

/// The status after `outcome` at `generation`, built on `previous` (so a condition whose status did not
/// change keeps its `lastTransitionTime`). A failure keeps the last store ID: the store still holds the
/// last good version, which the data plane goes on serving.
pub fn status_for(previous: Option<&ResourceStatus>, generation: Option<i64>, outcome: &Outcome) -> ResourceStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let (state, reason, message) = if outcome.is_synced() {
        (ConditionStatus::True, outcome.reason(), outcome.message())
    } else {
        (ConditionStatus::False, outcome.reason(), outcome.message())
    };
    let ready_message = if outcome.is_synced() {
        "valid, references resolved, and in the configuration store".to_owned()
    } else {
        message.clone()
    };
    for (type_, message) in [(SYNCED, message), (READY, ready_message)] {
        let mut condition = StatusCondition::new(type_, state, reason, message);
        condition.observed_generation = generation;
        status.set_condition(condition);
    }
    if let Outcome::Synced { store_id, .. } = outcome {
        status.store_id = Some(store_id.clone());
    }
    status
}

/// Whether `next` says something `previous` does not (times aside): only then is the status written.
pub fn status_changed(previous: Option<&ResourceStatus>, next: &ResourceStatus) -> bool {
    says_more(previous, next, |s| &mut s.conditions)
}

/// Whether the status `next` differs from `previous` once each one's conditions (reached through
/// `conditions`) lose their transition times and are put in type order; every status kind compares so.
pub fn says_more<S: Clone + PartialEq>(
    previous: Option<&S>,
    next: &S,
    conditions: fn(&mut S) -> &mut Vec<StatusCondition>,
) -> bool {
    let Some(previous) = previous else { return true };
    let strip = |s: &S| {
        let mut s = s.clone();
        let list = conditions(&mut s);
        for c in list.iter_mut() {
            c.last_transition_time = None;
        }
        list.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(previous) != strip(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(s: &'a ResourceStatus, type_: &str) -> &'a StatusCondition {
        s.condition(type_).unwrap_or_else(|| panic!("no {type_} condition in {s:?}"))
    }

    #[test]
    fn synced_sets_both_conditions_true_and_the_store_id() {
        let s = status_for(None, Some(3), &Outcome::Synced { store_id: "id-1".into(), changed: true });
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.store_id.as_deref(), Some("id-1"));
        for t in [SYNCED, READY] {
            let c = condition(&s, t);
            assert_eq!(
                (c.status, c.reason.as_str(), c.observed_generation),
                (ConditionStatus::True, "Synced", Some(3))
            );
            assert!(c.last_transition_time.is_some());
        }
    }

    #[test]
    fn a_missing_reference_is_false_with_the_reference_named_and_keeps_the_last_id() {
        let synced = status_for(None, Some(1), &Outcome::Synced { store_id: "id-1".into(), changed: true });
        let missing = Outcome::MissingReference(
            "Destination `offer-b` (at spec.destinations[1].destinationRef) \
                                                 does not exist in namespace shop"
                .into(),
        );
        let s = status_for(Some(&synced), Some(2), &missing);
        let c = condition(&s, SYNCED);
        assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::False, "MissingReference"));
        assert!(c.message.contains("Destination `offer-b`"), "{}", c.message);
        assert_eq!(condition(&s, READY).status, ConditionStatus::False);
        assert_eq!(s.store_id.as_deref(), Some("id-1"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(missing.requeue_after(), Some(MISSING_REFERENCE_RETRY));
    }

    #[test]
    fn an_invalid_spec_lists_the_field_paths_and_waits_for_a_change() {
        let outcome = Outcome::InvalidSpec(vec![
            FieldError::new("key", "key is required").under("spec"),
            FieldError::new("destinations[1].weight", "must be between 0 and 100000 (got -1)").under("spec"),
        ]);
        let s = status_for(None, Some(1), &outcome);
        let c = condition(&s, SYNCED);
        assert_eq!(c.reason, "InvalidSpec");
        assert!(c.message.contains("spec.key: key is required"), "{}", c.message);
        assert!(c.message.contains("spec.destinations[1].weight: must be"), "{}", c.message);
        assert_eq!(outcome.requeue_after(), None);
    }

    #[test]
    fn the_status_is_rewritten_only_when_it_says_something_new() {
        let a = status_for(None, Some(1), &Outcome::Synced { store_id: "id-1".into(), changed: true });
        let mut b = status_for(Some(&a), Some(1), &Outcome::Synced { store_id: "id-1".into(), changed: false });
        assert!(!status_changed(Some(&a), &b));
        b.conditions.reverse();
        assert!(!status_changed(Some(&a), &b));
        let c = status_for(Some(&a), Some(2), &Outcome::Synced { store_id: "id-1".into(), changed: true });
        assert!(status_changed(Some(&a), &c));
        assert!(status_changed(None, &a));
        let d = status_for(Some(&a), Some(1), &Outcome::Conflict("a campaigns document with the same key".into()));
        assert!(status_changed(Some(&a), &d));
        assert_eq!(condition(&d, READY).reason, "Conflict");
    }
}
