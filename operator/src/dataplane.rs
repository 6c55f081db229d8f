//! The `DataPlane` kind: one Deployment per component (`traffic`, `postback`, `ingest`) running the
//! DataPlane's image, a Service in front of `traffic` and `postback`, and a status with each component's
//! replicas. Written with server-side apply and owned by the DataPlane (deleting it deletes them).
//!
//! Replicas: the Deployments are applied without `replicas`; the operator sets them through the scale
//! subresource (as field manager `traffoflex-autoscaler`), from the request rate the ready pods of
//! `traffic` and `postback` report in `/metrics`, between `minReplicas` and `maxReplicas`, stabilised (see
//! [`crate::autoscale`]). The ingester runs `minReplicas`. Every scale interval the status shows each
//! component's replicas, the observed rate and the configuration revision each ready pod serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, SecretEnvSource,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use traffoflex_crds::status::{READY, SYNCED, set_condition};
use traffoflex_crds::{
    Component, ComponentStatus, ConditionStatus, DataPlane, DataPlaneStatus, PodStatus, StatusCondition, Validate,
    ValidationContext,
};

use crate::controller::{Context, Error, FIELD_MANAGER};
use crate::metrics::OutcomeLabels;

/// Condition reason: the Deployments are applied and every component has its replicas ready.
pub const REASON_AVAILABLE: &str = "Available";
/// Condition reason: the Deployments are applied; some replicas are not ready yet.
pub const REASON_PROGRESSING: &str = "Progressing";
/// Condition reason: the Deployments and Services are as the spec says.
pub const REASON_APPLIED: &str = "Applied";

/// The port each component listens on (its public port, or its ops port for the ingester).
pub fn port(component: Component) -> i32 {
    match component {
        Component::Traffic => 8081,
        Component::Postback => 8082,
        Component::Ingest => 8083,
    }
}

/// `<dataplane>-<component>`: the name of the component's Deployment and Service.
pub fn object_name(dp: &DataPlane, component: Component) -> String {
    format!("{}-{}", dp.name_any(), component.as_str())
}

fn labels(dp: &DataPlane, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "traffoflex".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), dp.name_any()),
        ("app.kubernetes.io/component".to_owned(), component.as_str().to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), crate::CONTROLLER_NAME.to_owned()),
    ])
}

fn metadata(dp: &DataPlane, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(dp, component)),
        namespace: dp.namespace(),
        labels: Some(labels(dp, component)),
        owner_references: dp.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The Deployment of one component, as the spec says (Pure.)
pub fn deployment(dp: &DataPlane, component: Component) -> Deployment {
    let resolved = dp.spec.resolved(component);
    let port = port(component);
    let listen_env = format!("TRAFFOFLEX_{}_LISTEN", component.as_str().to_uppercase());
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    };
    let container = Container {
        name: component.as_str().to_owned(),
        image: Some(dp.spec.image.clone()),
        image_pull_policy: dp.spec.image_pull_policy.clone(),
        args: Some(vec![component.as_str().to_owned()]),
        env: Some(vec![
            EnvVar { name: listen_env, value: Some(format!("0.0.0.0:{port}")), ..EnvVar::default() },
            EnvVar { name: "TRAFFOFLEX_LOG_FORMAT".into(), value: Some("json".into()), ..EnvVar::default() },
        ]),
        env_from: dp.spec.env_secret_ref.as_ref().map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: s.name.clone(), optional: Some(false) }),
                ..EnvFromSource::default()
            }]
        }),
        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: port, ..Default::default() }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: resolved.resources,
        ..Container::default()
    };
    Deployment {
        metadata: metadata(dp, component),
        spec: Some(DeploymentSpec {
            // Set through the scale subresource (see the module docs), so applying never resets it.
            replicas: None,
            selector: LabelSelector { match_labels: Some(labels(dp, component)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(dp, component)), ..ObjectMeta::default() }),
                spec: Some(PodSpec { containers: vec![container], ..PodSpec::default() }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Service in front of a public component (`traffic`, `postback`); the ingester has none. (Pure.)
pub fn service(dp: &DataPlane, component: Component) -> Option<Service> {
    if component == Component::Ingest {
        return None;
    }
    let port = port(component);
    Some(Service {
        metadata: metadata(dp, component),
        spec: Some(ServiceSpec {
            selector: Some(labels(dp, component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// What the operator measured of one component this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The replicas it asked for.
    pub desired: i32,
    /// The component's request rate, when measured.
    pub rate: Option<f64>,
    /// The ready pods it reached.
    pub pods: Vec<PodStatus>,
}

/// The status from the Deployments as they are (`None`: not there yet) and what was measured. (Pure.)
pub fn status_for(
    dp: &DataPlane,
    deployments: &[(Component, Option<Deployment>, Observed)],
    invalid: Option<String>,
) -> DataPlaneStatus {
    let mut status = dp.status.clone().unwrap_or_default();
    let generation = dp.meta().generation;
    status.observed_generation = generation;
    let mut all_ready = true;
    for (component, deployment, measured) in deployments {
        let desired = measured.desired;
        let observed = deployment.as_ref().and_then(|d| d.status.clone()).unwrap_or_default();
        let ready = observed.ready_replicas.unwrap_or(0);
        all_ready &= ready >= desired;
        let component_status = ComponentStatus {
            desired_replicas: desired,
            replicas: observed.replicas.unwrap_or(0),
            ready_replicas: ready,
            observed_requests_per_second: measured.rate.map(|r| (r * 100.0).round() / 100.0),
            pods: measured.pods.clone(),
        };
        match component {
            Component::Traffic => status.traffic = Some(component_status),
            Component::Postback => status.postback = Some(component_status),
            Component::Ingest => status.ingest = Some(component_status),
        }
    }
    let conditions = match invalid {
        Some(message) => {
            let message = format!("the spec is invalid, fix these fields: {message}");
            [
                (SYNCED, ConditionStatus::False, "InvalidSpec", message.clone()),
                (READY, ConditionStatus::False, "InvalidSpec", message),
            ]
        }
        None => {
            let synced = (
                SYNCED,
                ConditionStatus::True,
                REASON_APPLIED,
                "the Deployments and Services are as the spec says".to_owned(),
            );
            let ready = if all_ready {
                (READY, ConditionStatus::True, REASON_AVAILABLE, "every component has its replicas ready".to_owned())
            } else {
                let waiting: Vec<String> = deployments
                    .iter()
                    .filter_map(|(c, _, _)| {
                        let s = match c {
                            Component::Traffic => status.traffic.as_ref(),
                            Component::Postback => status.postback.as_ref(),
                            Component::Ingest => status.ingest.as_ref(),
                        }?;
                        (s.ready_replicas < s.desired_replicas)
                            .then(|| format!("{} {}/{} ready", c.as_str(), s.ready_replicas, s.desired_replicas))
                    })
                    .collect();
                (
                    READY,
                    ConditionStatus::False,
                    REASON_PROGRESSING,
                    format!("waiting for replicas: {}", waiting.join(", ")),
                )
            };
            [synced, ready]
        }
    };
    for (type_, state, reason, message) in conditions {
        let mut condition = StatusCondition::new(type_, state, reason, message);
        condition.observed_generation = generation;
        set_condition(&mut status.conditions, condition);
    }
    status
}

/// Runs the DataPlane controller until `stop`; Deployment changes (e.g. replicas becoming ready) re-run it.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>, stop: CancellationToken) {
    let client = &ctx.client;
    let (dataplanes, deployments): (Api<DataPlane>, Api<Deployment>) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=traffoflex-operator");
    Controller::new(dataplanes, watcher::Config::default().any_semantic())
        .owns(deployments, owned)
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(kind = "DataPlane", %error, "reconciliation not finished");
            }
        })
        .await;
}

/// After every change that reached the store, tells each ready `traffic` and `postback` pod of every
/// DataPlane to reload (changes within 200 ms are one signal). The pods also poll the store's revision every
/// second, so a signal that fails only delays a change by that second.
pub async fn push_reloads(ctx: Arc<Context>, namespace: Option<&str>, stop: CancellationToken) {
    let dataplanes: Api<DataPlane> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    loop {
        tokio::select! {
            () = ctx.reload_wanted.notified() => {}
            () = stop.cancelled() => return,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list = match dataplanes.list(&kube::api::ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list DataPlanes to send reload signals; the pods' own polling picks the change up");
                continue;
            }
        };
        let mut targets = Vec::new();
        for dp in &list {
            let Some(ns) = dp.namespace() else { continue };
            for component in [Component::Traffic, Component::Postback] {
                let service = object_name(dp, component);
                match crate::pods::ready_endpoints(&ctx.client, &ns, &service).await {
                    Ok(endpoints) => targets.extend(endpoints),
                    Err(e) => tracing::warn!(%service, error = %e, "cannot list the service's endpoints"),
                }
            }
        }
        let token = ctx.dataplane.reload_token.as_deref();
        let results = futures::future::join_all(targets.iter().map(|e| crate::pods::reload(e.addr, token))).await;
        for (endpoint, result) in targets.iter().zip(results) {
            let kind = match result {
                Ok(revision) => {
                    tracing::debug!(pod = %endpoint.name, %revision, "reload signal sent");
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(pod = %endpoint.name, error = %e, "reload signal failed; the pod's polling picks the change up");
                    "error"
                }
            };
            ctx.metrics.reload_pushes.get_or_create(&crate::metrics::KindLabel { kind }).inc();
        }
    }
}

fn error_policy(dp: Arc<DataPlane>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = "DataPlane", name = %dp.name_any(), %error, "reconciliation failed; retrying");
    ctx.metrics.errors.get_or_create(&crate::metrics::KindLabel { kind: "DataPlane" }).inc();
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(dp: Arc<DataPlane>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = dp.namespace().ok_or_else(|| Error::NoNamespace(dp.name_any()))?;
    let client = &ctx.client;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let errors = dp.spec.validate(ValidationContext::Kubernetes);
    let (deployments, invalid) = if errors.is_empty() {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
        let mut applied = Vec::new();
        for component in Component::ALL {
            let name = object_name(&dp, component);
            let deployment = api.patch(&name, &params, &Patch::Apply(&deployment(&dp, component))).await?;
            if let Some(svc) = service(&dp, component) {
                services.patch(&name, &params, &Patch::Apply(&svc)).await?;
            }
            let observed = scale(&dp, component, &deployment, &api, &ctx, &namespace).await?;
            applied.push((component, Some(deployment), observed));
        }
        (applied, None)
    } else {
        let list: Vec<String> = errors.into_iter().map(|e| e.under("spec").to_string()).collect();
        (Vec::new(), Some(list.join("; ")))
    };
    let outcome = if invalid.is_some() { "InvalidSpec" } else { REASON_APPLIED };
    ctx.metrics.reconciliations.get_or_create(&OutcomeLabels { kind: "DataPlane", outcome }).inc();
    let status = status_for(&dp, &deployments, invalid);
    if crate::conditions::says_more(dp.status.as_ref(), &status, |s| &mut s.conditions) {
        let patch = json!({"apiVersion": DataPlane::api_version(&()), "kind": "DataPlane", "status": status});
        let api: Api<DataPlane> = Api::namespaced(client.clone(), &namespace);
        api.patch_status(&dp.name_any(), &params, &Patch::Apply(&patch)).await?;
    }
    Ok(Action::requeue(ctx.dataplane.scale_interval))
}

/// The request counter a component's pods report, if it scales on one.
fn request_counter(component: Component) -> Option<&'static str> {
    match component {
        Component::Traffic => Some("traffoflex_traffic_requests_total"),
        Component::Postback => Some("traffoflex_postback_requests_total"),
        Component::Ingest => None,
    }
}

/// The gauge whose `revision` label is the configuration a pod serves.
pub const REVISION_METRIC: &str = "traffoflex_config_loaded_revision";

/// Measures one component and sets its replicas through the scale subresource when they should change.
async fn scale(
    dp: &DataPlane,
    component: Component,
    deployment: &Deployment,
    api: &Api<Deployment>,
    ctx: &Context,
    namespace: &str,
) -> Result<Observed, Error> {
    let name = object_name(dp, component);
    let resolved = dp.spec.resolved(component);
    let current = deployment.spec.as_ref().and_then(|s| s.replicas);
    let key = (dp.uid().unwrap_or_default(), component.as_str());
    let now = std::time::Instant::now();
    {
        // Other events (a status write, a Deployment change) re-run the reconcile between rounds; measure once
        // per interval so every rate spans one.
        let states = ctx.scalers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.get(&key)
            && state
                .measured_at
                .is_some_and(|at| now.saturating_duration_since(at) < ctx.dataplane.scale_interval * 4 / 5)
            && current == Some(state.last.desired)
        {
            return Ok(state.last.clone());
        }
    }
    let mut pods = Vec::new();
    let mut totals = BTreeMap::new();
    if let Some(counter) = request_counter(component) {
        let endpoints = crate::pods::ready_endpoints(&ctx.client, namespace, &name).await.unwrap_or_else(|e| {
            tracing::warn!(service = %name, error = %e, "cannot list the service's endpoints");
            Vec::new()
        });
        let scraped = futures::future::join_all(endpoints.iter().map(|e| crate::pods::metrics(e.addr))).await;
        for (endpoint, text) in endpoints.into_iter().zip(scraped) {
            let config_revision = match text {
                Ok(text) => {
                    if let Some(total) = crate::autoscale::counter_total(&text, counter) {
                        totals.insert(endpoint.name.clone(), total);
                    }
                    crate::autoscale::label_of(&text, REVISION_METRIC, "revision")
                }
                Err(e) => {
                    tracing::debug!(pod = %endpoint.name, error = %e, "cannot read the pod's metrics");
                    None
                }
            };
            pods.push(PodStatus { name: endpoint.name, config_revision });
        }
    }
    let bounds = crate::autoscale::Bounds {
        min: resolved.min_replicas,
        max: resolved.max_replicas,
        target_per_pod: resolved.target_requests_per_second as f64,
    };
    let (rate, desired) = {
        let mut states = ctx.scalers.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(key.clone()).or_default();
        let rate = if request_counter(component).is_some() { state.scaler.observe(&totals, now) } else { None };
        let start = current.unwrap_or(resolved.min_replicas);
        (rate, state.scaler.desired(rate, start, bounds, ctx.dataplane.scale_down_window, now))
    };
    if current != Some(desired) {
        let patch = json!({"spec": {"replicas": desired}});
        let params = PatchParams { field_manager: Some(SCALER_MANAGER.to_owned()), ..PatchParams::default() };
        api.patch_scale(&name, &params, &Patch::Merge(&patch)).await?;
        tracing::info!(deployment = %name, from = ?current, to = desired, rate = ?rate, "scaled");
        ctx.metrics.scalings.get_or_create(&crate::metrics::KindLabel { kind: component.as_str() }).inc();
    }
    let observed = Observed { desired, rate, pods };
    let mut states = ctx.scalers.lock().unwrap_or_else(|p| p.into_inner());
    let state = states.entry(key).or_default();
    state.measured_at = Some(now);
    state.last = observed.clone();
    Ok(observed)
}

/// What the scaler keeps of one component between reconciles.
#[derive(Debug, Default)]
pub struct ScaleState {
    scaler: crate::autoscale::ComponentScaler,
    measured_at: Option<std::time::Instant>,
    last: Observed,
}

/// The field manager of the replicas the operator sets.
pub const SCALER_MANAGER: &str = "traffoflex-autoscaler";

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use traffoflex_crds::{ComponentSpec, DataPlaneSpec};

    use crate::testing::{answers, context, seen};

    use super::*;

    fn dataplane() -> DataPlane {
        let spec = DataPlaneSpec {
            image: "ghcr.io/acme/traffoflex:0.1.0".into(),
            image_pull_policy: None,
            env_secret_ref: Some(traffoflex_crds::ObjectRef { name: "backends".into() }),
            traffic: Some(ComponentSpec { min_replicas: Some(3), ..ComponentSpec::default() }),
            postback: None,
            ingest: None,
        };
        let mut dp = DataPlane::new("prod", spec);
        dp.metadata.namespace = Some("shop".into());
        dp.metadata.uid = Some("uid-1".into());
        dp.metadata.generation = Some(1);
        dp
    }

    #[test]
    fn each_component_runs_its_role_with_its_replicas_and_the_backend_secret() {
        let dp = dataplane();
        let d = deployment(&dp, Component::Traffic);
        assert_eq!(d.metadata.name.as_deref(), Some("prod-traffic"));
        let owner = d.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner.len(), 1);
        assert_eq!((owner[0].kind.as_str(), owner[0].controller), ("DataPlane", Some(true)));
        let spec = d.spec.unwrap_or_default();
        assert_eq!(spec.replicas, None, "replicas are set through the scale subresource, never applied");
        let pod = spec.template.spec.unwrap_or_default();
        let c = &pod.containers[0];
        assert_eq!(c.args, Some(vec!["traffic".to_owned()]));
        assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/traffoflex:0.1.0"));
        let env = c.env.clone().unwrap_or_default();
        assert!(
            env.iter().any(|e| e.name == "TRAFFOFLEX_TRAFFIC_LISTEN" && e.value.as_deref() == Some("0.0.0.0:8081"))
        );
        let from = c.env_from.clone().unwrap_or_default();
        assert_eq!(from[0].secret_ref.as_ref().map(|s| s.name.as_str()), Some("backends"));
        // Defaults where the spec says nothing: postback 1 to 5, ingest 1 to 3.
        assert_eq!(
            (dp.spec.resolved(Component::Postback).min_replicas, dp.spec.resolved(Component::Postback).max_replicas),
            (1, 5)
        );
        assert!(service(&dp, Component::Ingest).is_none());
        let svc = service(&dp, Component::Postback).and_then(|s| s.spec).unwrap_or_default();
        assert_eq!(svc.ports.unwrap_or_default()[0].port, 8082);
    }

    #[test]
    fn ready_only_when_every_component_has_its_replicas() {
        let dp = dataplane();
        let with_ready = |ready: i32| {
            let mut d = deployment(&dp, Component::Traffic);
            d.status = Some(DeploymentStatus { replicas: Some(3), ready_replicas: Some(ready), ..Default::default() });
            d
        };
        let three = Observed {
            desired: 3,
            rate: Some(12.345),
            pods: vec![PodStatus { name: "p1".into(), config_revision: Some("r:2".into()) }],
        };
        let status = status_for(&dp, &[(Component::Traffic, Some(with_ready(1)), three.clone())], None);
        let ready =
            status.conditions.iter().find(|c| c.type_ == READY).cloned().unwrap_or_else(|| panic!("{status:?}"));
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::False, REASON_PROGRESSING));
        assert!(ready.message.contains("traffic 1/3 ready"), "{}", ready.message);
        assert_eq!(status.traffic.as_ref().map(|t| (t.desired_replicas, t.ready_replicas)), Some((3, 1)));
        let traffic = status.traffic.clone().unwrap_or_default();
        assert_eq!((traffic.observed_requests_per_second, traffic.pods), (Some(12.35), three.pods.clone()));
        let status = status_for(&dp, &[(Component::Traffic, Some(with_ready(3)), three)], None);
        let ready =
            status.conditions.iter().find(|c| c.type_ == READY).cloned().unwrap_or_else(|| panic!("{status:?}"));
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::True, REASON_AVAILABLE));
        let invalid = status_for(&dp, &[], Some("spec.image: image is required".into()));
        assert!(invalid.conditions.iter().all(|c| c.reason == "InvalidSpec" && c.status == ConditionStatus::False));
    }

    #[tokio::test]
    async fn a_refused_deployment_fails_the_reconcile_and_is_retried_without_a_status_write() {
        let a = answers(vec![("/deployments/", 500)]);
        let (ctx, telemetry) = context(&a, None).await;
        let dp = Arc::new(dataplane());
        let err = reconcile(dp.clone(), ctx.clone()).await.expect_err("the apply was refused");
        assert!(matches!(err, Error::Kube(_)), "{err}");
        assert!(err.to_string().contains("refused by the test (500)"), "{err}");
        assert_eq!(seen(&a, "/status"), 0, "no status from a half-done reconcile");
        assert_eq!(error_policy(dp, &err, ctx), Action::requeue(Duration::from_secs(5)));
        let metrics = telemetry.encode_metrics();
        assert!(metrics.contains("traffoflex_operator_errors_total{kind=\"DataPlane\"} 1"), "{metrics}");
    }

    #[tokio::test]
    async fn a_refused_scale_write_fails_the_reconcile() {
        let a = answers(vec![("/scale", 403)]);
        let (ctx, _) = context(&a, None).await;
        let err = reconcile(Arc::new(dataplane()), ctx).await.expect_err("the scale write was refused");
        assert!(err.to_string().contains("refused by the test (403)"), "{err}");
        assert_eq!(seen(&a, "/status"), 0);
    }

    #[tokio::test]
    async fn unreadable_endpoints_keep_the_replicas_and_the_reconcile_goes_on() {
        let a = answers(vec![("/endpointslices", 403)]);
        let (ctx, _) = context(&a, None).await;
        let action = reconcile(Arc::new(dataplane()), ctx.clone()).await.expect("the reconcile finishes");
        assert_eq!(action, Action::requeue(ctx.dataplane.scale_interval));
        assert_eq!(seen(&a, "/endpointslices"), 2, "traffic and postback asked");
        // The minimum is set through the scale subresource (3 for traffic; postback and ingest are at 1 already).
        assert_eq!(seen(&a, "/deployments/prod-traffic/scale"), 1);
        assert_eq!(seen(&a, "/deployments/prod-postback/scale"), 0);
        assert_eq!(seen(&a, "/dataplanes/prod/status"), 1, "the status is written");
    }
}
