//! The operator tests' harness: a namespace of their own on the test API server (`TRAFFOFLEX_TEST_KUBECONFIG`),
//! a database of their own on the MongoDB-wire server (`TRAFFOFLEX_TEST_MONGO_URI`), the CRDs applied, and
//! operators running in-process against both.
//!
//! The test API server has no controller-manager, so a namespace is never emptied after a test: each test
//! makes a fresh one, and `scripts/deps.sh start` starts from an empty etcd.

#![allow(dead_code)] // each test file uses part of it

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use traffoflex_core::store::{Collection, ConfigStore, MongoStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_crds::status::{READY, SYNCED};
use traffoflex_crds::{ResourceStatus, StatusCondition};
use traffoflex_operator::refs::{RefKind, store_id};
use traffoflex_operator::{DataPlaneSettings, LeaseSettings, Settings};

/// The reload token the test operators send to data-plane pods.
pub const RELOAD_TOKEN: &str = "test-reload-token";

pub const WAIT: Duration = Duration::from_secs(30);

/// One test's world.
pub struct Env {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub mongo: MongoStore,
    pub store: Arc<dyn ConfigStore>,
}

/// The environment, or `None` (the test is skipped, outside CI only) when a server is not configured.
pub async fn env() -> Option<Env> {
    let kubeconfig = testenv::kubeconfig()?;
    let mongo_uri = testenv::mongo_uri()?;
    let client =
        traffoflex_operator::client(Some(Path::new(&kubeconfig))).await.expect("a client for the test API server");
    install_crds(&client).await;
    let namespace = testenv::unique_name("tf").replace('_', "-").to_lowercase();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create the namespace");
    let mongo = MongoStore::connect(&mongo_uri, Some(&testenv::unique_name("tf_operator"))).await.expect("MongoDB");
    mongo.ensure_indexes().await.expect("indexes");
    let store: Arc<dyn ConfigStore> = Arc::new(mongo.clone());
    Some(Env { client, kubeconfig: PathBuf::from(kubeconfig), namespace, mongo, store })
}

/// Applies every CRD (server-side, so repeated applies by parallel tests agree) and waits until each is
/// Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in traffoflex_crds::all_crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("traffoflex-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(WAIT, established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
    }
}

impl Env {
    /// Drops the test's database (the namespace stays, see the module docs).
    pub async fn finish(self) {
        let _ = self.mongo.drop_database().await;
    }

    /// Starts an operator scoped to this namespace, with a short lease so tests see takeovers quickly.
    pub fn operator(&self, identity: &str) -> Operator {
        self.operator_as(self.client.clone(), identity)
    }

    /// A client that acts as `user` (impersonation), to test RBAC rules.
    pub async fn client_as(&self, user: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
        config.auth_info.impersonate = Some(user.to_owned());
        Client::try_from(config).expect("an impersonating client")
    }

    /// Starts an operator that talks to Kubernetes through `client`.
    pub fn operator_as(&self, client: Client, identity: &str) -> Operator {
        let telemetry = Telemetry::new();
        let stop = CancellationToken::new();
        let mut lease = LeaseSettings::new(&self.namespace, "traffoflex-operator", identity);
        lease.lease_duration = Duration::from_secs(4);
        lease.renew_deadline = Duration::from_secs(2);
        lease.retry_period = Duration::from_millis(250);
        let dataplane = DataPlaneSettings {
            scale_interval: Duration::from_millis(500),
            scale_down_window: Duration::from_secs(3),
            reload_token: Some(RELOAD_TOKEN.to_owned()),
        };
        let settings = Settings { namespace: Some(self.namespace.clone()), lease, dataplane };
        let task = tokio::spawn(traffoflex_operator::run(
            settings,
            client,
            self.store.clone(),
            telemetry.clone(),
            stop.clone(),
        ));
        Operator { telemetry, stop, task }
    }

    /// Server-side applies one manifest (a YAML document of examples/k8s or inline YAML) in the namespace.
    pub async fn apply_yaml(&self, yaml: &str) -> DynamicObject {
        let mut value: Value = serde_yaml::from_str(yaml).expect("manifest YAML");
        value["metadata"]["namespace"] = json!(self.namespace);
        let api = self.dynamic_api(&value);
        let name = value["metadata"]["name"].as_str().expect("metadata.name").to_owned();
        api.patch(&name, &PatchParams::apply("traffoflex-tests").force(), &Patch::Apply(&value))
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"))
    }

    /// Applies a cluster-scoped manifest (server-side).
    pub async fn apply_cluster_yaml(&self, value: &Value) -> DynamicObject {
        let api_version = value["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = value["kind"].as_str().expect("kind");
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let name = value["metadata"]["name"].as_str().expect("metadata.name").to_owned();
        api.patch(&name, &PatchParams::apply("traffoflex-tests").force(), &Patch::Apply(value))
            .await
            .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"))
    }

    /// Applies examples/k8s/`file`.
    pub async fn apply_example(&self, file: &str) -> DynamicObject {
        self.apply_yaml(&example(file)).await
    }

    /// Deletes the object of `kind` named `name`.
    pub async fn delete(&self, kind: &str, name: &str) {
        let api = self.kind_api(kind);
        api.delete(name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("delete {kind} {name}: {e}"));
    }

    /// The object of `kind` named `name`, if it exists.
    pub async fn get(&self, kind: &str, name: &str) -> Option<DynamicObject> {
        self.kind_api(kind).get_opt(name).await.unwrap_or_else(|e| panic!("get {kind} {name}: {e}"))
    }

    /// The status of the object, parsed.
    pub async fn status(&self, kind: &str, name: &str) -> Option<ResourceStatus> {
        let obj = self.get(kind, name).await?;
        obj.data.get("status").cloned().and_then(|s| serde_json::from_value(s).ok())
    }

    /// Waits until the object's `Synced` condition has `reason`, at the object's current generation; returns it.
    pub async fn wait_synced_reason(&self, kind: &str, name: &str, reason: &str) -> (StatusCondition, ResourceStatus) {
        eventually(&format!("{kind} {name} Synced reason {reason}"), || async {
            let obj = self.get(kind, name).await?;
            let status: ResourceStatus = serde_json::from_value(obj.data.get("status")?.clone()).ok()?;
            let synced = status.condition(SYNCED)?.clone();
            (synced.reason == reason && status.observed_generation == obj.metadata.generation)
                .then_some((synced, status))
        })
        .await
    }

    /// The store document of the `kind` object named `name`, once it exists.
    pub async fn wait_doc(&self, kind: RefKind, name: &str) -> Value {
        let id = store_id(kind, &self.namespace, name);
        let coll = kind.collection().expect("a mirrored kind");
        eventually(&format!("{kind} {name} in the store"), || async { self.store.get(coll, &id).await.ok().flatten() })
            .await
    }

    /// Waits until the store document of `name` satisfies `check`.
    pub async fn wait_doc_where(&self, kind: RefKind, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let id = store_id(kind, &self.namespace, name);
        let coll = kind.collection().expect("a mirrored kind");
        eventually(what, || async { self.store.get(coll, &id).await.ok().flatten().filter(|d| check(d)) }).await
    }

    /// Waits until the store has no document for `name`.
    pub async fn wait_no_doc(&self, kind: RefKind, name: &str) {
        let id = store_id(kind, &self.namespace, name);
        let coll = kind.collection().expect("a mirrored kind");
        eventually(&format!("{kind} {name} gone from the store"), || async {
            matches!(self.store.get(coll, &id).await, Ok(None)).then_some(())
        })
        .await;
    }

    /// The store document of `name` right now.
    pub async fn doc(&self, kind: RefKind, name: &str) -> Option<Value> {
        let id = store_id(kind, &self.namespace, name);
        self.store.get(kind.collection().expect("a mirrored kind"), &id).await.expect("store get")
    }

    pub fn collection_of(kind: RefKind) -> Collection {
        kind.collection().expect("a mirrored kind")
    }

    fn dynamic_api(&self, manifest: &Value) -> Api<DynamicObject> {
        let api_version = manifest["apiVersion"].as_str().expect("apiVersion");
        let kind = manifest["kind"].as_str().expect("kind");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        Api::namespaced_with(self.client.clone(), &self.namespace, &ar)
    }

    fn kind_api(&self, kind: &str) -> Api<DynamicObject> {
        let api_version = if kind == "Secret" { "v1" } else { "traffoflex.io/v1alpha1" };
        self.dynamic_api(&json!({"apiVersion": api_version, "kind": kind}))
    }
}

/// An operator running in the test's runtime.
pub struct Operator {
    pub telemetry: Telemetry,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// The sum of every sample of the metric `name` whose labels contain `labels` (e.g. `kind="Stream"`).
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.telemetry
            .encode_metrics()
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn is_leader(&self) -> bool {
        self.metric("traffoflex_operator_leader", "") == 1.0
    }

    /// Stops the operator (controllers first, then the Lease is released) and waits for it.
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the operator stops in time").expect("operator task");
    }
}

/// Every YAML document of examples/k8s/`file`.
pub fn example_documents(file: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&example(file))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

/// The text of examples/k8s/`file`.
pub fn example(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/k8s").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Polls `probe` until it yields a value; panics naming `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `Ready` and `Synced` conditions' statuses and reasons.
pub fn ready_and_synced(status: &ResourceStatus) -> [(String, String); 2] {
    [READY, SYNCED].map(|t| {
        status
            .condition(t)
            .map(|c| (c.status.to_string(), c.reason.clone()))
            .unwrap_or_else(|| ("missing".into(), String::new()))
    })
}
