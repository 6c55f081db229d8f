//! The `status` of every custom resource: `observedGeneration` and `Ready`/`Synced` conditions, set by one helper.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the object is valid, its references resolve and the data plane serves it.
pub const READY: &str = "Ready";
/// Condition type: the object is mirrored into the store as it is now.
pub const SYNCED: &str = "Synced";

/// `True`, `False` or `Unknown`, as in every Kubernetes condition.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold; `reason` and `message` say why.
    False,
    /// Not known yet.
    Unknown,
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        })
    }
}

/// One status condition (the shape of `meta/v1.Condition`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    /// `Ready` or `Synced`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// A CamelCase reason, e.g. `InvalidSpec`, `CampaignNotFound`, `Synced`.
    pub reason: String,
    /// What happened and what to do about it, for a person reading `kubectl describe`.
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl StatusCondition {
    /// A condition stamped with the current time.
    pub fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Some(Time(Timestamp::now())),
            observed_generation: None,
        }
    }
}

/// The status of every kind but DataPlane.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Synced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatusCondition>,
    /// The ID of the mirrored object in the store, once synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

impl ResourceStatus {
    /// The condition of type `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&StatusCondition> {
        find(&self.conditions, type_)
    }

    /// Set a condition, replacing the one of the same type (see [`set_condition`]).
    pub fn set_condition(&mut self, condition: StatusCondition) {
        set_condition(&mut self.conditions, condition);
    }
}

/// The condition of type `type_` in `conditions`, if set.
pub fn find<'a>(conditions: &'a [StatusCondition], type_: &str) -> Option<&'a StatusCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Put `condition` into `conditions`, replacing the one of the same type. When its status did not change,
/// the old `lastTransitionTime` is kept, so the time says when the status last changed.
pub fn set_condition(conditions: &mut Vec<StatusCondition>, mut condition: StatusCondition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status && existing.last_transition_time.is_some() {
                condition.last_transition_time = existing.last_transition_time.take();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let mut status = ResourceStatus::default();
        let mut first = StatusCondition::new(READY, ConditionStatus::False, "InvalidSpec", "key is required");
        let then = Time(Timestamp::UNIX_EPOCH);
        first.last_transition_time = Some(then.clone());
        status.set_condition(first);
        status.set_condition(StatusCondition::new(READY, ConditionStatus::False, "InvalidSpec", "name is required"));
        let ready = status.condition(READY).cloned();
        assert_eq!(ready.as_ref().map(|c| c.message.as_str()), Some("name is required"));
        assert_eq!(ready.and_then(|c| c.last_transition_time), Some(then.clone()));
        status.set_condition(StatusCondition::new(READY, ConditionStatus::True, "Ready", "serving"));
        assert_ne!(status.condition(READY).and_then(|c| c.last_transition_time.clone()), Some(then));
        status.set_condition(StatusCondition::new(SYNCED, ConditionStatus::True, "Synced", "in the store"));
        assert_eq!(status.conditions.len(), 2);
    }
}
