//! Test helpers: an API server that answers what a test chooses and keeps every request, and a [`Context`]
//! on it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use traffoflex_core::store::ConfigStore;
use traffoflex_core::telemetry::Telemetry;

use crate::controller::Context;

/// The fake API server's answers and what it was asked.
#[derive(Default)]
pub struct Answers {
    /// Status codes for requests whose path contains the key (first match); 200 with an echo otherwise.
    pub failing: Vec<(&'static str, u16)>,
    /// `(method, path, body)` of every request.
    pub seen: Vec<(String, String, String)>,
    /// The `spec` a status write answers with (a DataPlane's when `None`).
    pub spec: Option<Value>,
}

pub type Shared = Arc<Mutex<Answers>>;

pub fn answers(failing: Vec<(&'static str, u16)>) -> Shared {
    Arc::new(Mutex::new(Answers { failing, ..Answers::default() }))
}

/// How many requests' paths contained `what`.
pub fn seen(a: &Shared, what: &str) -> usize {
    a.lock().unwrap_or_else(|p| p.into_inner()).seen.iter().filter(|(_, p, _)| p.contains(what)).count()
}

/// The bodies of the requests whose paths contained `what`.
pub fn bodies(a: &Shared, what: &str) -> Vec<String> {
    let a = a.lock().unwrap_or_else(|p| p.into_inner());
    a.seen.iter().filter(|(_, p, _)| p.contains(what)).map(|(_, _, b)| b.clone()).collect()
}

fn answer(path: &str, bytes: &[u8], failing: Option<u16>, spec: Option<&Value>) -> (u16, Value) {
    if let Some(code) = failing {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("refused by the test ({code})"), "reason": "Test", "code": code});
        return (code, status);
    }
    if path.ends_with("/endpointslices") {
        return (
            200,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": []}),
        );
    }
    if path.ends_with("/scale") {
        return (
            200,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "x"}, "spec": {"replicas": 3}}),
        );
    }
    let mut v: Value = serde_json::from_slice(bytes).unwrap_or(json!({}));
    if path.contains("/deployments/") {
        v["spec"]["replicas"] = json!(1);
    }
    if let Some(rest) = path.strip_suffix("/status") {
        // A status write answers the whole object; the callers here only read its status.
        let name = rest.rsplit('/').next().unwrap_or_default();
        v["metadata"] = json!({"name": name, "namespace": "shop"});
        v["spec"] = spec.cloned().unwrap_or_else(|| json!({"image": "registry.example/traffoflex:0.1.0"}));
    }
    (200, v)
}

pub fn client(answers: &Shared) -> Client {
    let answers = answers.clone();
    let service = tower::service_fn(move |req: Request<Body>| {
        let answers = answers.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let path = parts.uri.path().to_owned();
            let (code, value) = {
                let mut a = answers.lock().unwrap_or_else(|p| p.into_inner());
                let body = String::from_utf8_lossy(&bytes).into_owned();
                a.seen.push((parts.method.to_string(), path.clone(), body));
                let failing = a.failing.iter().find(|(k, _)| path.contains(k)).map(|(_, c)| *c);
                answer(&path, &bytes, failing, a.spec.as_ref())
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
                .expect("a response");
            Ok::<_, Infallible>(response)
        }
    });
    Client::new(service, "shop")
}

/// A context on the fake API server and `store` (an empty in-memory one when `None`).
pub async fn context(answers: &Shared, store: Option<Arc<dyn ConfigStore>>) -> (Arc<Context>, Telemetry) {
    let client = client(answers);
    let telemetry = Telemetry::new();
    let store = match store {
        Some(store) => store,
        None => Arc::new(traffoflex_core::store::SqliteStore::open_in_memory().await.expect("store")),
    };
    let reporter = kube::runtime::events::Reporter { controller: "test".into(), instance: None };
    let ctx = Context {
        client: client.clone(),
        store,
        recorder: kube::runtime::events::Recorder::new(client, reporter),
        metrics: crate::Metrics::new(&telemetry),
        dataplane: crate::DataPlaneSettings::default(),
        scalers: Mutex::default(),
        reload_wanted: tokio::sync::Notify::new(),
    };
    (Arc::new(ctx), telemetry)
}
