//! The operator against a real API server and a real store: the examples in examples/k8s are mirrored into
//! the store, follow spec changes, disappear on delete; failures show as conditions and Events; of two
//! operators only the leader writes.
//!
//! Needs `scripts/deps.sh start` (TRAFFOFLEX_TEST_KUBECONFIG, TRAFFOFLEX_TEST_MONGO_URI); skipped without them
//! outside CI, failed without them in CI.

mod common;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use traffoflex_core::store::Collection;
use traffoflex_crds::status::READY;
use traffoflex_operator::FINALIZER;
use traffoflex_operator::refs::{RefKind, store_id};

use common::{eventually, ready_and_synced};

fn ready_synced_true() -> [(String, String); 2] {
    [("True".into(), "Synced".into()), ("True".into(), "Synced".into())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_are_mirrored_updated_and_deleted() {
    let Some(env) = common::env().await else { return };
    let revision_before = env.store.config_revision().await.unwrap();
    let operator = env.operator("operator-a");
    for file in [
        "traffic-source.yaml",
        "campaign.yaml",
        "destination-a.yaml",
        "destination-b.yaml",
        "stream.yaml",
        "postback-template.yaml",
        "affiliate-network-secret.yaml",
        "affiliate-network.yaml",
    ] {
        env.apply_example(file).await;
    }
    let ns = env.namespace.clone();
    let id = |kind, name| store_id(kind, &ns, name);

    // Every kind lands in its collection, references resolved to the referenced objects' store IDs.
    let campaign = env.wait_doc(RefKind::Campaign, "summer-sale").await;
    assert_eq!(campaign["id"], json!(id(RefKind::Campaign, "summer-sale")));
    assert_eq!(campaign["key"], json!("summer-sale"));
    assert_eq!(campaign["managedBy"], json!("kubernetes"));
    assert_eq!(campaign["trafficSourceId"], json!(id(RefKind::TrafficSource, "src1")));
    assert_eq!(campaign["costModel"], json!({"type": "cpc", "value": "0.05", "currency": "USD"}));
    assert_eq!(campaign["kubernetes"]["namespace"], json!(ns));
    assert_eq!(campaign["teamId"], json!("default"), "the API's default team sees it");
    let stream = env.wait_doc(RefKind::Stream, "de-mobile").await;
    assert_eq!(stream["campaignId"], json!(id(RefKind::Campaign, "summer-sale")));
    let destinations: Vec<(Value, Value)> = stream["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["destinationId"].clone(), d["weight"].clone()))
        .collect();
    assert_eq!(
        destinations,
        vec![
            (json!(id(RefKind::Destination, "offer-a")), json!(70)),
            (json!(id(RefKind::Destination, "offer-b")), json!(30)),
        ]
    );
    let offer_a = env.wait_doc(RefKind::Destination, "offer-a").await;
    assert_eq!(offer_a["url"], json!("https://offer.example/a?cid={clickId}&s={sub1}"));
    env.wait_doc(RefKind::TrafficSource, "src1").await;
    env.wait_doc(RefKind::PostbackTemplate, "generic-s2s").await;
    let network = env.wait_doc(RefKind::AffiliateNetwork, "neta").await;
    assert_eq!(network["postbackTemplateId"], json!(id(RefKind::PostbackTemplate, "generic-s2s")));
    assert_eq!(network["auth"]["token"], json!("change-me-to-a-long-random-token"), "the token comes from the Secret");

    // Status: Ready and Synced, at generation 1, with the store ID; the finalizer is on.
    for (kind, name, ref_kind) in [
        ("Campaign", "summer-sale", RefKind::Campaign),
        ("Stream", "de-mobile", RefKind::Stream),
        ("Destination", "offer-b", RefKind::Destination),
        ("TrafficSource", "src1", RefKind::TrafficSource),
        ("PostbackTemplate", "generic-s2s", RefKind::PostbackTemplate),
        ("AffiliateNetwork", "neta", RefKind::AffiliateNetwork),
    ] {
        let (_, status) = env.wait_synced_reason(kind, name, "Synced").await;
        assert_eq!(ready_and_synced(&status), ready_synced_true(), "{kind} {name}");
        assert_eq!(status.observed_generation, Some(1), "{kind} {name}");
        assert_eq!(status.store_id, Some(id(ref_kind, name)), "{kind} {name}");
        let obj = env.get(kind, name).await.unwrap();
        assert_eq!(obj.metadata.finalizers, Some(vec![FINALIZER.to_owned()]), "{kind} {name}");
    }
    let revision_synced = env.store.config_revision().await.unwrap();
    assert_ne!(revision_synced, revision_before, "the data plane is told to reload");

    // A spec change reaches the store and the status follows the new generation.
    let changed = common::example("campaign.yaml").replace("name: Summer sale", "name: Summer sale (week 2)");
    env.apply_yaml(&changed).await;
    env.wait_doc_where(RefKind::Campaign, "summer-sale", "the campaign's new name in the store", |d| {
        d["name"] == json!("Summer sale (week 2)")
    })
    .await;
    let (_, status) = env.wait_synced_reason("Campaign", "summer-sale", "Synced").await;
    assert_eq!(status.observed_generation, Some(2));
    assert_ne!(env.store.config_revision().await.unwrap(), revision_synced);

    // Delete: the document goes, then the object (the finalizer lets it go), and the stream that named the
    // campaign reports the missing reference.
    env.delete("Campaign", "summer-sale").await;
    env.wait_no_doc(RefKind::Campaign, "summer-sale").await;
    eventually("the campaign object gone", || async {
        env.get("Campaign", "summer-sale").await.is_none().then_some(())
    })
    .await;
    let (synced, _) = env.wait_synced_reason("Stream", "de-mobile", "MissingReference").await;
    assert!(synced.message.contains("Campaign `summer-sale`"), "{}", synced.message);
    env.delete("Destination", "offer-a").await;
    env.wait_no_doc(RefKind::Destination, "offer-a").await;
    assert!(env.doc(RefKind::Destination, "offer-b").await.is_some(), "the other destination stays");

    assert!(operator.metric("traffoflex_operator_store_writes_total", "") >= 8.0);
    operator.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_destination_is_reported_and_heals_when_applied() {
    let Some(env) = common::env().await else { return };
    let operator = env.operator("operator-a");
    for file in ["traffic-source.yaml", "campaign.yaml", "destination-a.yaml", "stream.yaml"] {
        env.apply_example(file).await;
    }
    let (synced, status) = env.wait_synced_reason("Stream", "de-mobile", "MissingReference").await;
    assert_eq!(synced.status.to_string(), "False");
    assert!(
        synced.message.contains("Destination `offer-b` (at spec.destinations[1].destinationRef) does not exist"),
        "{}",
        synced.message
    );
    let ready = status.condition(READY).unwrap();
    assert_eq!((ready.status.to_string(), ready.reason.as_str()), ("False".into(), "MissingReference"));
    assert!(env.doc(RefKind::Stream, "de-mobile").await.is_none(), "nothing is written for a stream that cannot route");

    // `kubectl describe` shows a Warning Event saying the same.
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    let warning = eventually("a MissingReference Event on the stream", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("de-mobile")
                && e.reason.as_deref() == Some("MissingReference")
        })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.unwrap_or_default().contains("offer-b"));

    // Applying the destination heals the stream.
    env.apply_example("destination-b.yaml").await;
    let (_, status) = env.wait_synced_reason("Stream", "de-mobile", "Synced").await;
    assert_eq!(ready_and_synced(&status), ready_synced_true());
    let stream = env.wait_doc(RefKind::Stream, "de-mobile").await;
    assert_eq!(
        stream["destinations"][1]["destinationId"],
        json!(store_id(RefKind::Destination, &env.namespace, "offer-b"))
    );

    operator.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_with_its_field_paths() {
    let Some(env) = common::env().await else { return };
    let operator = env.operator("operator-a");
    env.apply_yaml(
        r#"
apiVersion: traffoflex.io/v1alpha1
kind: Destination
metadata:
  name: broken
spec:
  name: ""
  url: "ftp://offer.example/x"
"#,
    )
    .await;
    let (synced, status) = env.wait_synced_reason("Destination", "broken", "InvalidSpec").await;
    assert_eq!(synced.status.to_string(), "False");
    assert!(synced.message.contains("spec.name: name is required"), "{}", synced.message);
    assert!(synced.message.contains("spec.url"), "{}", synced.message);
    assert_eq!(status.condition(READY).map(|c| c.reason.as_str()), Some("InvalidSpec"));
    assert!(env.doc(RefKind::Destination, "broken").await.is_none());

    // Fixing the spec syncs it.
    env.apply_yaml(
        r#"
apiVersion: traffoflex.io/v1alpha1
kind: Destination
metadata:
  name: broken
spec:
  name: Fixed
  url: "https://offer.example/x"
"#,
    )
    .await;
    env.wait_synced_reason("Destination", "broken", "Synced").await;
    assert_eq!(env.wait_doc(RefKind::Destination, "broken").await["name"], json!("Fixed"));
    operator.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_in_the_store_is_a_conflict() {
    let Some(env) = common::env().await else { return };
    // A traffic source made through the API holds the key `src1`.
    env.store
        .insert(Collection::TrafficSources, json!({"kind": "TrafficSource", "key": "src1", "name": "From the API"}))
        .await
        .unwrap();
    let operator = env.operator("operator-a");
    env.apply_example("traffic-source.yaml").await;
    let (synced, _) = env.wait_synced_reason("TrafficSource", "src1", "Conflict").await;
    assert!(synced.message.contains("same key"), "{}", synced.message);
    assert!(env.doc(RefKind::TrafficSource, "src1").await.is_none());
    operator.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_operators_only_the_leader_writes() {
    let Some(env) = common::env().await else { return };
    let a = env.operator("operator-a");
    eventually("operator-a leads", || async { a.is_leader().then_some(()) }).await;
    let b = env.operator("operator-b");
    env.apply_example("destination-a.yaml").await;
    env.wait_doc(RefKind::Destination, "offer-a").await;
    env.wait_synced_reason("Destination", "offer-a", "Synced").await;
    // Give the standby time to do anything it (wrongly) would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    let lease = leases.get("traffoflex-operator").await.unwrap();
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("operator-a"));
    assert!(a.metric("traffoflex_operator_store_writes_total", "") >= 1.0);
    assert!(!b.is_leader());
    assert_eq!(b.metric("traffoflex_operator_store_writes_total", ""), 0.0);
    assert_eq!(b.metric("traffoflex_operator_reconciliations_total", ""), 0.0);

    // The leader stops and releases the lease: the standby takes over and syncs what comes next.
    a.shutdown().await;
    eventually("operator-b leads", || async { b.is_leader().then_some(()) }).await;
    env.apply_example("destination-b.yaml").await;
    env.wait_doc(RefKind::Destination, "offer-b").await;
    assert!(b.metric("traffoflex_operator_store_writes_total", "kind=\"Destination\"") >= 1.0);
    let lease = leases.get("traffoflex-operator").await.unwrap();
    let spec = lease.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    b.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_rbac_rules_are_enough() {
    let Some(env) = common::env().await else { return };
    // The ClusterRole of examples/k8s/rbac/operator.yaml, bound in this namespace to a service account that
    // the operator then acts as.
    let docs = common::example_documents("rbac/operator.yaml");
    let role = docs.iter().find(|d| d["kind"] == json!("ClusterRole")).expect("a ClusterRole");
    env.apply_cluster_yaml(role).await;
    let binding = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: traffoflex-operator
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: traffoflex-operator}}
subjects: [{{kind: ServiceAccount, name: traffoflex-operator, namespace: {ns}}}]
"#,
        ns = env.namespace
    );
    env.apply_yaml(&binding).await;
    let user = format!("system:serviceaccount:{}:traffoflex-operator", env.namespace);
    let operator = env.operator_as(env.client_as(&user).await, "restricted");
    for file in [
        "traffic-source.yaml",
        "campaign.yaml",
        "destination-a.yaml",
        "destination-b.yaml",
        "stream.yaml",
        "postback-template.yaml",
        "affiliate-network-secret.yaml",
        "affiliate-network.yaml",
    ] {
        env.apply_example(file).await;
    }
    for (kind, name) in [
        ("Campaign", "summer-sale"),
        ("Stream", "de-mobile"),
        ("Destination", "offer-a"),
        ("TrafficSource", "src1"),
        ("PostbackTemplate", "generic-s2s"),
        ("AffiliateNetwork", "neta"),
    ] {
        env.wait_synced_reason(kind, name, "Synced").await;
    }
    let network = env.wait_doc(RefKind::AffiliateNetwork, "neta").await;
    assert_eq!(network["auth"]["token"], json!("change-me-to-a-long-random-token"));
    // Events too (a Normal one for each object that reached the store).
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("an Event from the restricted operator", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reporting_instance.as_deref() == Some("restricted"))
    })
    .await;
    // Deleting goes through the finalizer.
    env.delete("Destination", "offer-b").await;
    env.wait_no_doc(RefKind::Destination, "offer-b").await;
    // A DataPlane: Deployments applied, replicas set through the scale subresource, endpoints listed.
    env.apply_yaml(
        "apiVersion: traffoflex.io/v1alpha1\nkind: DataPlane\nmetadata: {name: prod}\n\
         spec: {image: registry.example/traffoflex:0.1.0, traffic: {minReplicas: 2}}\n",
    )
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("the restricted operator sets the replicas", || async {
        let scale = deployments.get_scale("prod-traffic").await.ok()?;
        (scale.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    assert_eq!(operator.metric("traffoflex_operator_errors_total", "kind=\"DataPlane\""), 0.0);
    operator.shutdown().await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataplane_gets_its_deployments_and_reports_their_replicas() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams};

    let Some(env) = common::env().await else { return };
    let operator = env.operator("operator-a");
    let manifest = |image: &str| {
        format!(
            r#"
apiVersion: traffoflex.io/v1alpha1
kind: DataPlane
metadata:
  name: prod
spec:
  image: {image}
  envSecretRef: {{name: backends}}
  traffic: {{minReplicas: 3, maxReplicas: 6}}
"#
        )
    };
    env.apply_yaml(&manifest("registry.example/traffoflex:0.1.0")).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let traffic =
        eventually("the traffic Deployment", || async { deployments.get_opt("prod-traffic").await.ok().flatten() })
            .await;
    eventually("3 replicas, set through the scale subresource", || async {
        let scale = deployments.get_scale("prod-traffic").await.ok()?;
        (scale.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    let spec = traffic.spec.clone().unwrap_or_default();
    let container = &spec.template.spec.unwrap_or_default().containers[0];
    assert_eq!(container.image.as_deref(), Some("registry.example/traffoflex:0.1.0"));
    assert_eq!(container.args, Some(vec!["traffic".to_owned()]));
    let owner = traffic.metadata.owner_references.unwrap_or_default();
    assert_eq!(owner.first().map(|o| (o.kind.as_str(), o.name.as_str())), Some(("DataPlane", "prod")));
    for name in ["prod-postback", "prod-ingest"] {
        eventually(name, || async { deployments.get_opt(name).await.ok().flatten() }).await;
    }
    for name in ["prod-traffic", "prod-postback"] {
        eventually(&format!("Service {name}"), || async { services.get_opt(name).await.ok().flatten() }).await;
    }
    assert!(services.get_opt("prod-ingest").await.unwrap().is_none(), "the ingester has no Service");

    // No kubelet here: nothing becomes ready, and the status says what it waits for.
    let waiting = eventually("DataPlane Ready=False Progressing", || async {
        let obj = env.get("DataPlane", "prod").await?;
        let status = obj.data.get("status")?.clone();
        let ready = status["conditions"].as_array()?.iter().find(|c| c["type"] == json!("Ready"))?.clone();
        (ready["reason"] == json!("Progressing")).then_some((status, ready))
    })
    .await;
    assert_eq!(waiting.0["traffic"]["desiredReplicas"], json!(3));
    assert!(waiting.1["message"].as_str().unwrap_or("").contains("traffic 0/3 ready"), "{}", waiting.1);

    // Replicas becoming ready (written here as the controller-manager would) make it Available.
    for (name, replicas) in [("prod-traffic", 3), ("prod-postback", 1), ("prod-ingest", 1)] {
        let status =
            json!({"status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}});
        deployments.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }
    eventually("DataPlane Ready=True Available", || async {
        let obj = env.get("DataPlane", "prod").await?;
        let conditions = obj.data.get("status")?["conditions"].as_array()?.clone();
        conditions.iter().any(|c| c["type"] == json!("Ready") && c["reason"] == json!("Available")).then_some(())
    })
    .await;

    // A new image rolls out to every component.
    env.apply_yaml(&manifest("registry.example/traffoflex:0.2.0")).await;
    for name in ["prod-traffic", "prod-postback", "prod-ingest"] {
        eventually(&format!("{name} on the new image"), || async {
            let d = deployments.get_opt(name).await.ok().flatten()?;
            let image = d.spec?.template.spec?.containers.first()?.image.clone();
            (image.as_deref() == Some("registry.example/traffoflex:0.2.0")).then_some(())
        })
        .await;
    }
    operator.shutdown().await;
    env.finish().await;
}

/// A data-plane pod as the operator sees it: `/metrics` with a request counter and the loaded revision,
/// `POST /internal/reload` (the bearer tokens it was called with are kept).
struct FakePod {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    reloads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakePod {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reloads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (requests.clone(), reloads.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (count, seen) = (count.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let body = if head.starts_with("POST /internal/reload") {
                        let auth =
                            head.lines().find_map(|l| l.strip_prefix("Authorization: ")).unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(auth);
                        r#"{"status":"reloaded","revision":"rev-2"}"#.to_owned()
                    } else {
                        format!(
                            "traffoflex_traffic_requests_total{{outcome=\"redirect\"}} {}\n\
                             traffoflex_config_loaded_revision{{revision=\"rev-1\"}} 1\n",
                            count.load(Ordering::Relaxed)
                        )
                    };
                    let answer = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        FakePod { port, requests, reloads }
    }

    /// Counts `per_second` requests a second until told otherwise (0 stops).
    fn serve(&self, per_second: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let count = self.requests.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = per_second.load(std::sync::atomic::Ordering::Relaxed) / 10;
                count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
}

/// This machine's address on its default route: EndpointSlices refuse loopback addresses.
fn local_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    // No packet is sent: connecting a UDP socket only picks the route and the source address.
    socket.connect("203.0.113.1:9").expect("a default route (the fake pods need a non-loopback address)");
    socket.local_addr().expect("local address").ip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataplane_scales_on_its_pods_request_rate_and_tells_them_to_reload() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::PostParams;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let Some(env) = common::env().await else { return };
    let operator = env.operator("operator-a");
    let manifest = |image: &str| {
        format!(
            "apiVersion: traffoflex.io/v1alpha1\nkind: DataPlane\nmetadata: {{name: prod}}\n\
             spec: {{image: {image}, traffic: {{minReplicas: 1, maxReplicas: 4, targetRequestsPerSecond: 10}}}}\n"
        )
    };
    env.apply_yaml(&manifest("registry.example/traffoflex:0.1.0")).await;
    // Two ready traffic pods behind the Service, as the EndpointSlice controller would list them.
    let pods = [FakePod::start().await, FakePod::start().await];
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.namespace);
    let address = local_address().to_string();
    for (i, pod) in pods.iter().enumerate() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("prod-traffic-{i}"), "labels": {"kubernetes.io/service-name": "prod-traffic"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "name": format!("prod-traffic-pod-{i}")}}],
            "ports": [{"name": "http", "port": pod.port, "protocol": "TCP"}],
        }))
        .expect("slice");
        slices.create(&PostParams::default(), &slice).await.expect("create the EndpointSlice");
    }
    let rate = Arc::new(AtomicU64::new(30));
    for pod in &pods {
        pod.serve(rate.clone());
    }

    // 60 requests/s over two pods at a target of 10 per pod: up to the maximum, 4, at once.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    eventually("scaled up to 4", || async {
        let scale = deployments.get_scale("prod-traffic").await.ok()?;
        (scale.spec?.replicas == Some(4)).then_some(())
    })
    .await;
    let traffic = eventually("the measured rate and the pods' revisions in the status", || async {
        let obj = env.get("DataPlane", "prod").await?;
        let traffic = obj.data.get("status")?.get("traffic")?.clone();
        let rps = traffic["observedRequestsPerSecond"].as_f64()?;
        (rps > 40.0 && traffic["pods"].as_array()?.len() == 2).then_some(traffic)
    })
    .await;
    assert_eq!(traffic["desiredReplicas"], json!(4));
    assert_eq!(traffic["pods"][0], json!({"name": "prod-traffic-pod-0", "configRevision": "rev-1"}));
    // Applying a changed spec rolls the image out and leaves the replicas to the scaler.
    env.apply_yaml(&manifest("registry.example/traffoflex:0.2.0")).await;
    eventually("the new image", || async {
        let d = deployments.get_opt("prod-traffic").await.ok().flatten()?;
        let image = d.spec?.template.spec?.containers.first()?.image.clone();
        (image.as_deref() == Some("registry.example/traffoflex:0.2.0")).then_some(())
    })
    .await;
    let scale = deployments.get_scale("prod-traffic").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(4), "re-applying does not reset the replicas");

    // The traffic stops: down to the minimum once the stabilisation window (3 s here) has passed, not before.
    rate.store(0, Ordering::Relaxed);
    let stopped = std::time::Instant::now();
    eventually("scaled down to 1", || async {
        let scale = deployments.get_scale("prod-traffic").await.ok()?;
        (scale.spec?.replicas == Some(1)).then_some(())
    })
    .await;
    assert!(stopped.elapsed() >= Duration::from_secs(2), "scaled down after {:?}", stopped.elapsed());

    // A change that reaches the store is signalled to every ready pod, with the reload token.
    env.apply_example("destination-a.yaml").await;
    for pod in &pods {
        eventually("a reload signal", || async { (!pod.reloads.lock().unwrap().is_empty()).then_some(()) }).await;
        assert_eq!(pod.reloads.lock().unwrap()[0], format!("Bearer {}", common::RELOAD_TOKEN));
    }
    let pushed = operator.metric("traffoflex_operator_reload_pushes_total", "kind=\"ok\"");
    assert!(pushed >= 2.0, "{pushed}");
    operator.shutdown().await;
    env.finish().await;
}
