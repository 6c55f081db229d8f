//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas exactly one
//! writes to the store and to Kubernetes.
//!
//! Every replica reads the Lease each retry period. The holder renews it by replacing it with the
//! `resourceVersion` it read (compare-and-swap: a concurrent writer makes the replace fail with 409). Another
//! replica takes it over only once the Lease has not changed for `leaseDurationSeconds`, timed on its own
//! clock from when it first saw that version (as client-go does, so clocks need not agree). A holder that
//! cannot renew for `renew_deadline` (shorter than the lease duration) stops its controllers before anyone
//! else may take over; on shutdown it releases the Lease so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// Where the Lease is and how the election is timed.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity`; unique per process.
    pub identity: String,
    /// How long a Lease that is not renewed keeps others out.
    pub lease_duration: Duration,
    /// How long the leader keeps leading while renewals fail; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the Lease is read and renewed.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease version last seen, and when it was first seen.
    observed: Option<(String, Instant)>,
    /// When this replica last acquired or renewed the Lease.
    renewed: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        Self { api, settings, observed: None, renewed: None }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// One round: acquire, renew or observe the Lease. `true` while this replica may act as the leader: it
    /// holds the Lease, or renewed it less than `renew_deadline` ago and the API failed since.
    pub async fn step(&mut self) -> bool {
        let attempt = tokio::time::timeout(self.settings.retry_period.max(Duration::from_secs(1)), self.try_acquire());
        match attempt.await {
            Ok(Ok(true)) => {
                self.renewed = Some(Instant::now());
                true
            }
            Ok(Ok(false)) => {
                self.renewed = None;
                false
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.settings.name, %error, "cannot read or renew the leader lease");
                self.still_within_deadline()
            }
            Err(_) => {
                tracing::warn!(lease = %self.settings.name, "the leader lease did not answer in time");
                self.still_within_deadline()
            }
        }
    }

    fn still_within_deadline(&self) -> bool {
        self.renewed.is_some_and(|at| at.elapsed() < self.settings.renew_deadline)
    }

    /// `Ok(true)` when this replica now holds the Lease, `Ok(false)` when another one does.
    async fn try_acquire(&mut self) -> Result<bool, kube::Error> {
        let s = self.settings.clone();
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(s.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let Some(mut lease) = self.api.get_opt(&s.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(s.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    tracing::info!(lease = %s.name, identity = %s.identity, "acquired the leader lease");
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(s.identity.as_str());
        if !mine && holder.is_some() {
            let held_for = Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
            let unchanged_since = self.observed.as_ref().map_or_else(Instant::now, |(_, at)| *at);
            if unchanged_since.elapsed() < held_for {
                return Ok(false);
            }
            tracing::info!(lease = %s.name, previous = holder.as_deref().unwrap_or(""), "the leader lease expired");
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if mine { spec.acquire_time.clone() } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
            ..spec
        });
        // The replace carries the resourceVersion read above: it fails with 409 if anyone wrote in between.
        match self.api.replace(&s.name, &PostParams::default(), &lease).await {
            Ok(updated) => {
                self.observe(&updated);
                if !mine {
                    tracing::info!(lease = %s.name, identity = %s.identity, "acquired the leader lease");
                }
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().map(|(v, _)| v) != Some(&version) {
            self.observed = Some((version, Instant::now()));
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby takes over without waiting for it to expire.
    /// Call it only once this replica's controllers have stopped.
    pub async fn release(&mut self) {
        let s = &self.settings;
        let Ok(Some(mut lease)) = self.api.get_opt(&s.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&s.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %s.name, identity = %s.identity, "released the leader lease"),
            Err(error) => tracing::warn!(lease = %s.name, %error, "could not release the leader lease"),
        }
        self.renewed = None;
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    //! The election against a fake Lease endpoint that keeps one Lease and does the API server's
    //! resourceVersion check, so each rule is tested without a server (the integration tests run it for real).

    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Default)]
    struct FakeLeases {
        lease: Option<Value>,
        version: u64,
        /// Answer every call with 500.
        broken: bool,
        /// Before the next replace, another replica takes the Lease (between this one's read and its write).
        race_next_replace: bool,
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
    }

    impl FakeLeases {
        fn answer(&mut self, method: &Method, body: &[u8]) -> (u16, Value) {
            if self.broken {
                return (500, status(500, "InternalError"));
            }
            let incoming: Option<Value> = serde_json::from_slice(body).ok();
            match (method, incoming) {
                (&Method::GET, _) => match &self.lease {
                    Some(lease) => (200, lease.clone()),
                    None => (404, status(404, "NotFound")),
                },
                (&Method::POST, Some(mut lease)) if self.lease.is_none() => {
                    self.version += 1;
                    lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
                    self.lease = Some(lease.clone());
                    (201, lease)
                }
                (&Method::PUT, Some(mut lease)) => {
                    if std::mem::take(&mut self.race_next_replace)
                        && let Some(current) = self.lease.as_mut()
                    {
                        self.version += 1;
                        current["metadata"]["resourceVersion"] = json!(self.version.to_string());
                        current["spec"]["holderIdentity"] = json!("b");
                    }
                    let current = self.lease.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                    if current != Some(lease["metadata"]["resourceVersion"].clone()) {
                        return (409, status(409, "Conflict"));
                    }
                    self.version += 1;
                    lease["metadata"]["resourceVersion"] = json!(self.version.to_string());
                    self.lease = Some(lease.clone());
                    (200, lease)
                }
                _ => (409, status(409, "AlreadyExists")),
            }
        }

        fn holder(&self) -> Option<String> {
            self.lease.as_ref()?["spec"]["holderIdentity"].as_str().map(str::to_owned)
        }
    }

    fn client(fake: &Arc<Mutex<FakeLeases>>) -> Client {
        let fake = fake.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let (code, value) = fake.lock().unwrap_or_else(|p| p.into_inner()).answer(&parts.method, &bytes);
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
                    .expect("a response");
                Ok::<_, Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    fn elector(fake: &Arc<Mutex<FakeLeases>>, identity: &str) -> LeaderElector {
        let mut settings = LeaseSettings::new("default", "traffoflex-operator", identity);
        // A Lease counts whole seconds.
        settings.lease_duration = Duration::from_secs(1);
        settings.renew_deadline = Duration::from_millis(400);
        settings.retry_period = Duration::from_millis(50);
        LeaderElector::new(client(fake), settings)
    }

    fn holder(fake: &Arc<Mutex<FakeLeases>>) -> Option<String> {
        fake.lock().unwrap_or_else(|p| p.into_inner()).holder()
    }

    #[tokio::test]
    async fn of_two_replicas_only_one_leads() {
        let fake = Arc::new(Mutex::new(FakeLeases::default()));
        let (mut a, mut b) = (elector(&fake, "a"), elector(&fake, "b"));
        assert!(a.step().await, "the first one creates the Lease");
        for _ in 0..3 {
            assert!(!b.step().await);
            assert!(a.step().await, "the holder renews");
        }
        assert_eq!(holder(&fake).as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn a_standby_takes_over_only_once_the_lease_was_not_renewed_for_its_duration() {
        let fake = Arc::new(Mutex::new(FakeLeases::default()));
        let (mut a, mut b) = (elector(&fake, "a"), elector(&fake, "b"));
        assert!(a.step().await);
        assert!(!b.step().await);
        // `a` stops renewing (it died): `b` waits a whole lease duration from when it saw the last renewal.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!b.step().await);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(b.step().await);
        assert_eq!(holder(&fake).as_deref(), Some("b"));
        let lease = fake.lock().unwrap_or_else(|p| p.into_inner()).lease.clone().unwrap_or_default();
        assert_eq!(lease["spec"]["leaseTransitions"], json!(1));
        // The old holder, back, finds the Lease taken.
        assert!(!a.step().await);
    }

    #[tokio::test]
    async fn a_release_hands_over_at_once() {
        let fake = Arc::new(Mutex::new(FakeLeases::default()));
        let (mut a, mut b) = (elector(&fake, "a"), elector(&fake, "b"));
        assert!(a.step().await);
        assert!(!b.step().await);
        a.release().await;
        assert_eq!(holder(&fake), None);
        assert!(b.step().await);
        // Releasing a Lease someone else holds changes nothing.
        a.release().await;
        assert_eq!(holder(&fake).as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_write_in_between_makes_the_replace_lose() {
        let fake = Arc::new(Mutex::new(FakeLeases::default()));
        let mut a = elector(&fake, "a");
        assert!(a.step().await);
        // "b" writes the Lease after `a` read it: `a`'s replace carries a stale resourceVersion and loses.
        fake.lock().unwrap_or_else(|p| p.into_inner()).race_next_replace = true;
        assert!(!a.step().await, "the renewal lost the race");
        assert_eq!(holder(&fake).as_deref(), Some("b"));
        assert!(!a.step().await, "and b's fresh Lease is respected");
    }

    #[tokio::test]
    async fn api_errors_keep_the_leader_only_until_the_renew_deadline() {
        let fake = Arc::new(Mutex::new(FakeLeases::default()));
        let mut a = elector(&fake, "a");
        assert!(a.step().await);
        fake.lock().unwrap_or_else(|p| p.into_inner()).broken = true;
        assert!(a.step().await, "one failed renewal is tolerated");
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(!a.step().await, "past the renew deadline it must stop acting as leader");
    }
}
