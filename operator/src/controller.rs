//! The controllers: one `reconcile` for every mirrored kind, run by kube's `Controller`.
//!
//! Reconciling an object validates its spec (as a custom resource), resolves its references by name to the
//! store IDs of the objects named (and Secret keys to their values), writes the store document
//! (`managedBy: "kubernetes"`) when it differs from the stored one, bumps the configuration revision the data
//! plane polls, and writes `status` (server-side apply on the status subresource). Failures become
//! `Synced=False`/`Ready=False` conditions with a reason and a Warning Event. A finalizer deletes the document
//! when the object is deleted.
//!
//! A failed reconciliation leaves the last good document in the store: the data plane goes on serving it
//! until the object is fixed (or deleted).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use traffoflex_core::store::{ConfigStore, StoreError};
use traffoflex_crds::{
    AffiliateNetwork, Campaign, Destination, FieldError, PostbackTemplate, Stream, TrafficSource, Validate,
    ValidationContext,
};

use crate::conditions::{Outcome, status_changed, status_for};
use crate::kinds::{Mirrored, store_document, without_store_fields};
use crate::metrics::{KindLabel, Metrics, OutcomeLabels};
use crate::refs::{RefKind, Reference, Resolved, store_id};

/// The finalizer that deletes an object's store document before Kubernetes lets the object go.
pub const FINALIZER: &str = "traffoflex.io/store-cleanup";
/// The field manager of the status the operator writes.
pub const FIELD_MANAGER: &str = "traffoflex-operator";
/// How soon a reconciliation that failed on the Kubernetes API or the store is retried.
const ERROR_RETRY: Duration = Duration::from_secs(5);

/// What every reconciliation needs.
pub struct Context {
    pub client: Client,
    pub store: Arc<dyn ConfigStore>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Scaling and reload settings of the DataPlane controller.
    pub dataplane: crate::DataPlaneSettings,
    /// What the scaler remembers, per DataPlane (UID) and component.
    pub scalers: std::sync::Mutex<std::collections::HashMap<(String, &'static str), crate::dataplane::ScaleState>>,
    /// Woken after a change reached the store: the data-plane pods are told to reload.
    pub reload_wanted: tokio::sync::Notify,
}

/// A reconciliation that could not finish; it is retried after [`ERROR_RETRY`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("configuration store: {0}")]
    Store(#[from] StoreError),
    #[error("the finalizer failed: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("cannot write the store document: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("{0} has no namespace: TraffoFlex kinds are namespaced")]
    NoNamespace(String),
}

/// Runs the six controllers and the DataPlane's until `stop` is cancelled; with `namespace`, only that namespace is watched.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, stop: CancellationToken) {
    let ns = namespace.as_deref();
    futures::join!(
        run_one::<Campaign>(ctx.clone(), ns, stop.clone()),
        run_one::<Stream>(ctx.clone(), ns, stop.clone()),
        run_one::<Destination>(ctx.clone(), ns, stop.clone()),
        run_one::<TrafficSource>(ctx.clone(), ns, stop.clone()),
        run_one::<AffiliateNetwork>(ctx.clone(), ns, stop.clone()),
        run_one::<PostbackTemplate>(ctx.clone(), ns, stop.clone()),
        crate::dataplane::run(ctx.clone(), ns, stop.clone()),
        crate::dataplane::push_reloads(ctx.clone(), ns, stop.clone()),
    );
}

fn scoped<K: Mirrored>(client: &Client, namespace: Option<&str>) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_one<K: Mirrored>(ctx: Arc<Context>, namespace: Option<&str>, stop: CancellationToken) {
    let client = &ctx.client;
    let mut controller = Controller::new(scoped::<K>(client, namespace), watcher::Config::default().any_semantic());
    let reader = controller.store();
    for kind in K::NAMES {
        controller = match kind {
            RefKind::Campaign => on_change_of(controller, reader.clone(), scoped::<Campaign>(client, namespace)),
            RefKind::Stream => on_change_of(controller, reader.clone(), scoped::<Stream>(client, namespace)),
            RefKind::Destination => on_change_of(controller, reader.clone(), scoped::<Destination>(client, namespace)),
            RefKind::TrafficSource => {
                on_change_of(controller, reader.clone(), scoped::<TrafficSource>(client, namespace))
            }
            RefKind::AffiliateNetwork => {
                on_change_of(controller, reader.clone(), scoped::<AffiliateNetwork>(client, namespace))
            }
            RefKind::PostbackTemplate => {
                on_change_of(controller, reader.clone(), scoped::<PostbackTemplate>(client, namespace))
            }
            RefKind::Secret => controller,
        };
    }
    let kind = K::REF_KIND.kind();
    tracing::info!(kind, namespace = namespace.unwrap_or("(all)"), "controller started");
    controller
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(kind, %error, "reconciliation not finished");
            }
        })
        .await;
    tracing::info!(kind, "controller stopped");
}

/// Reconcile the `K` objects that name an `O` object whenever that object changes, so a reference heals (or
/// breaks) as soon as the object it names appears (or goes).
fn on_change_of<K: Mirrored, O: Mirrored>(controller: Controller<K>, reader: Store<K>, api: Api<O>) -> Controller<K> {
    controller.watches(api, watcher::Config::default(), move |changed: O| {
        let (namespace, name) = (changed.namespace(), changed.name_any());
        reader
            .state()
            .into_iter()
            .filter(|k| k.namespace() == namespace)
            .filter(|k| K::references(k.spec()).iter().any(|r| r.kind == O::REF_KIND && r.name == name))
            .map(|k| ObjectRef::from_obj(k.as_ref()))
            .collect::<Vec<_>>()
    })
}

async fn reconcile<K: Mirrored>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().ok_or_else(|| Error::NoNamespace(obj.name_any()))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            finalizer::Event::Apply(obj) => apply(obj, &ctx, &namespace).await,
            finalizer::Event::Cleanup(obj) => cleanup(obj, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy<K: Mirrored>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = K::REF_KIND.kind(), name = %obj.name_any(), %error, "reconciliation failed; retrying");
    ctx.metrics.errors.get_or_create(&KindLabel { kind: K::REF_KIND.kind() }).inc();
    Action::requeue(ERROR_RETRY)
}

async fn apply<K: Mirrored>(obj: Arc<K>, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let name = obj.name_any();
    let kind = K::REF_KIND.kind();
    let outcome = match sync(obj.as_ref(), ctx, namespace).await {
        Ok(outcome) => outcome,
        Err(StoreError::Unavailable(why)) => Outcome::StoreUnavailable(why),
        Err(e @ StoreError::Duplicate { .. }) => Outcome::Conflict(e.to_string()),
        Err(e) => return Err(Error::Store(e)),
    };
    let generation = obj.meta().generation;
    let status = status_for(obj.status(), generation, &outcome);
    let new_status = status_changed(obj.status(), &status);
    if let Outcome::Synced { changed, .. } = outcome {
        if changed {
            ctx.metrics.store_writes.get_or_create(&KindLabel { kind }).inc();
        }
        // Also when only the status is new: if an earlier bump failed after its write, the status was not
        // written either, so this retry still tells the data plane to reload.
        if changed || new_status {
            ctx.store.bump_config_revision().await?;
        }
    }
    ctx.metrics.reconciliations.get_or_create(&OutcomeLabels { kind, outcome: outcome.reason() }).inc();
    match &outcome {
        Outcome::Synced { store_id, changed: true } => tracing::info!(kind, namespace, name, store_id, "synced"),
        Outcome::Synced { store_id, .. } => tracing::debug!(kind, namespace, name, store_id, "in sync"),
        failure => {
            tracing::warn!(kind, namespace, name, reason = failure.reason(), message = %failure.message(), "not synced")
        }
    }

    if new_status {
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        // An Event once per new failure (not on every retry), and one when a change reaches the store.
        let event = match &outcome {
            Outcome::Synced { changed: true, .. } => Some(EventType::Normal),
            Outcome::Synced { .. } => None,
            _ => Some(EventType::Warning),
        };
        if let Some(type_) = event {
            publish(ctx, obj.as_ref(), type_, outcome.reason(), outcome.message()).await;
        }
    }
    Ok(outcome.requeue_after().map_or_else(Action::await_change, Action::requeue))
}

/// Validates, resolves and writes the store document; `Ok` carries every outcome a person can act on.
async fn sync<K: Mirrored>(obj: &K, ctx: &Context, namespace: &str) -> Result<Outcome, StoreError> {
    let spec = obj.spec();
    let errors = spec.validate(ValidationContext::Kubernetes);
    if !errors.is_empty() {
        return Ok(Outcome::InvalidSpec(under_spec(errors)));
    }
    let resolved = resolve::<K>(spec, ctx, namespace).await?;
    if !resolved.missing.is_empty() {
        return Ok(Outcome::MissingReference(resolved.missing_message()));
    }
    let spec = K::resolve(spec, &resolved);
    let errors = spec.validate(ValidationContext::Store);
    if !errors.is_empty() {
        return Ok(Outcome::InvalidSpec(under_spec(errors)));
    }
    let doc = store_document(obj, &spec).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let id = store_id(K::REF_KIND, namespace, &obj.name_any());
    let coll = K::collection();
    let changed = match ctx.store.get(coll, &id).await? {
        Some(stored) => {
            let version = stored.get("version").and_then(serde_json::Value::as_u64);
            if without_store_fields(stored) == doc {
                false
            } else {
                ctx.store.replace(coll, &id, version, doc).await?;
                true
            }
        }
        None => {
            let mut doc = doc;
            doc["id"] = json!(id);
            ctx.store.insert(coll, doc).await?;
            true
        }
    };
    if changed {
        ctx.reload_wanted.notify_one();
    }
    Ok(Outcome::Synced { store_id: id, changed })
}

fn under_spec(errors: Vec<FieldError>) -> Vec<FieldError> {
    errors.into_iter().map(|e| e.under("spec")).collect()
}

/// Finds the store ID of every object the spec names, and the value of every Secret key it names.
async fn resolve<K: Mirrored>(spec: &K::Spec, ctx: &Context, namespace: &str) -> Result<Resolved, StoreError> {
    let mut resolved = Resolved::new();
    for reference in K::references(spec) {
        match reference.kind.collection() {
            Some(coll) => {
                let id = store_id(reference.kind, namespace, &reference.name);
                if ctx.store.get(coll, &id).await?.is_some() {
                    resolved.found(&reference, id);
                } else if exists(&ctx.client, &reference, namespace).await {
                    resolved.not_found(&reference, "exists but is not synced (see its status)");
                } else {
                    resolved.not_found(&reference, format!("does not exist in namespace {namespace}"));
                }
            }
            None => resolve_secret(ctx, &reference, namespace, &mut resolved).await,
        }
    }
    Ok(resolved)
}

async fn resolve_secret(ctx: &Context, reference: &Reference, namespace: &str, resolved: &mut Resolved) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let key = reference.key.clone().unwrap_or_default();
    match api.get_opt(&reference.name).await {
        Ok(Some(secret)) => {
            let value = secret.data.as_ref().and_then(|d| d.get(&key)).map(|v| String::from_utf8(v.0.clone()));
            match value {
                Some(Ok(value)) => resolved.found_secret(reference, value),
                Some(Err(_)) => resolved.not_found(reference, "is not UTF-8 text"),
                None => resolved.not_found(reference, format!("has no key `{key}`")),
            }
        }
        Ok(None) => resolved.not_found(reference, format!("does not exist in namespace {namespace}")),
        Err(e) => resolved.not_found(reference, format!("could not be read: {e}")),
    }
}

/// Whether the object a reference names exists in Kubernetes (an error counts as not existing).
async fn exists(client: &Client, reference: &Reference, namespace: &str) -> bool {
    async fn get<K: Mirrored>(client: &Client, namespace: &str, name: &str) -> bool {
        matches!(Api::<K>::namespaced(client.clone(), namespace).get_opt(name).await, Ok(Some(_)))
    }
    let name = reference.name.as_str();
    match reference.kind {
        RefKind::Campaign => get::<Campaign>(client, namespace, name).await,
        RefKind::Stream => get::<Stream>(client, namespace, name).await,
        RefKind::Destination => get::<Destination>(client, namespace, name).await,
        RefKind::TrafficSource => get::<TrafficSource>(client, namespace, name).await,
        RefKind::AffiliateNetwork => get::<AffiliateNetwork>(client, namespace, name).await,
        RefKind::PostbackTemplate => get::<PostbackTemplate>(client, namespace, name).await,
        RefKind::Secret => false,
    }
}

/// Deletes the store document of a deleted object (the finalizer then lets Kubernetes remove it).
async fn cleanup<K: Mirrored>(obj: Arc<K>, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    let kind = K::REF_KIND.kind();
    let id = store_id(K::REF_KIND, namespace, &obj.name_any());
    match ctx.store.delete(K::collection(), &id, None).await {
        Ok(()) => {
            ctx.metrics.store_writes.get_or_create(&KindLabel { kind }).inc();
            tracing::info!(kind, namespace, name = %obj.name_any(), store_id = id, "deleted from the store");
            ctx.reload_wanted.notify_one();
        }
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Also when the document was already gone: a retry after a failed bump must still reach the data plane.
    ctx.store.bump_config_revision().await?;
    Ok(Action::await_change())
}

/// Kubernetes refuses an Event whose note is over 1 kB.
const MAX_EVENT_NOTE: usize = 1000;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Publishes an Event on the object; a failure to publish is logged, never fatal.
async fn publish<K: Mirrored>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, MAX_EVENT_NOTE)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(kind = K::REF_KIND.kind(), name = %obj.name_any(), %error, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::{RefKind, store_id};
    use crate::testing::{answers, bodies, context, seen};
    use traffoflex_core::store::Collection;
    use traffoflex_crds::Destination;

    fn spec() -> serde_json::Value {
        json!({"name": "Offer A", "url": "https://offer.example/a", "enabled": true})
    }

    fn destination() -> Arc<Destination> {
        let spec = serde_json::from_value(spec()).expect("spec");
        let mut d = Destination::new("offer-a", spec);
        d.metadata.namespace = Some("shop".into());
        d.metadata.uid = Some("uid-1".into());
        d.metadata.generation = Some(1);
        d.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        Arc::new(d)
    }

    #[tokio::test]
    async fn a_refused_status_write_fails_the_reconcile_after_the_store_write() {
        let a = answers(vec![("/status", 500)]);
        let (ctx, _) = context(&a, None).await;
        let err = reconcile(destination(), ctx.clone()).await.expect_err("the status write was refused");
        assert!(err.to_string().contains("refused by the test (500)"), "{err}");
        let id = store_id(RefKind::Destination, "shop", "offer-a");
        let doc =
            ctx.store.get(Collection::Destinations, &id).await.expect("store").expect("written before the status");
        assert_eq!((doc["name"].as_str(), doc["managedBy"].as_str()), (Some("Offer A"), Some("kubernetes")));
        assert_eq!(error_policy(destination(), &err, ctx), Action::requeue(ERROR_RETRY));
    }

    #[tokio::test]
    async fn an_unreachable_store_is_a_condition_and_a_warning_not_a_failure() {
        let a = answers(Vec::new());
        a.lock().unwrap().spec = Some(spec());
        let inner: Arc<dyn ConfigStore> =
            Arc::new(traffoflex_core::store::SqliteStore::open_in_memory().await.expect("store"));
        let store = Arc::new(traffoflex_core::testenv::SwitchableStore::new(inner));
        store.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let (ctx, telemetry) = context(&a, Some(store)).await;
        reconcile(destination(), ctx).await.expect("the outcome is reported in the status");
        let status = bodies(&a, "/destinations/offer-a/status");
        assert_eq!(status.len(), 1, "{status:?}");
        assert!(status[0].contains("StoreUnavailable") && status[0].contains("\"Synced\""), "{}", status[0]);
        assert_eq!(seen(&a, "/events"), 1, "a Warning Event");
        assert!(bodies(&a, "/events")[0].contains("Warning"));
        let metrics = telemetry.encode_metrics();
        assert!(metrics.contains("outcome=\"StoreUnavailable\""), "{metrics}");
    }

    #[test]
    fn event_notes_are_cut_to_the_api_limit_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), MAX_EVENT_NOTE), "short");
        let long = "ü".repeat(700); // 1400 bytes
        let cut = truncate(long, MAX_EVENT_NOTE);
        assert!(cut.len() <= MAX_EVENT_NOTE, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'ü'));
    }
}
