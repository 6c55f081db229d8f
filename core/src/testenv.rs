//! Where integration tests find the real backends started by `scripts/deps.sh`.
//!
//! A test that needs a backend asks for its address here. Outside CI a missing address skips the test with a
//! line saying so; with `CI=true` a missing address is a failure, so a CI run can never pass by skipping.

/// The address of a test backend from the environment variable `name`, e.g. `TRAFFOFLEX_TEST_MONGO_URI`.
///
/// Returns `None` (after printing why) when it is unset outside CI.
///
/// # Panics
/// When it is unset and `CI` is `true`: in CI every integration test must run against its real backend.
pub fn backend(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let in_ci = std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false);
            assert!(
                !in_ci,
                "{name} is not set: CI must run this test against the real backend (start it with scripts/deps.sh start)"
            );
            eprintln!("skipping: {name} is not set (run `scripts/deps.sh start` and source .deps/env)");
            None
        }
    }
}

/// The MongoDB-wire test server (FerretDB in CI).
pub fn mongo_uri() -> Option<String> {
    backend("TRAFFOFLEX_TEST_MONGO_URI")
}

/// The ClickHouse HTTP URL of the test server (the oldest release supported, 18.16, in CI).
pub fn clickhouse_url() -> Option<String> {
    backend("TRAFFOFLEX_TEST_CLICKHOUSE_URL")
}

/// The ClickHouse HTTP URL of a current ClickHouse release (chDB behind `scripts/chdb-shim.py` in CI), so the
/// same SQL is tested on the oldest and the newest release.
pub fn clickhouse_current_url() -> Option<String> {
    backend("TRAFFOFLEX_TEST_CLICKHOUSE_CURRENT_URL")
}

/// The Kafka bootstrap servers of the test broker.
pub fn kafka_brokers() -> Option<String> {
    backend("TRAFFOFLEX_TEST_KAFKA_BROKERS")
}

/// The kubeconfig file of the test Kubernetes API server (kube-apiserver and etcd, no nodes).
pub fn kubeconfig() -> Option<String> {
    backend("TRAFFOFLEX_TEST_KUBECONFIG")
}

/// A name no other test run uses, for databases, topics and consumer groups.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A TCP forwarder between a client under test and a real server that a test can cut and restore, to play
/// a server outage without stopping the shared server.
pub struct CutProxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let target = target.to_owned();
        let (up2, live2) = (up.clone(), live.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                live2.lock().unwrap_or_else(|p| p.into_inner()).push(task.abort_handle());
            }
        });
        Ok(Self { addr, up, live, accept })
    }

    /// The address clients should use instead of the server's.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.live.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A configuration store that a test can switch off, as when MongoDB is unreachable: while `down` is set,
/// every call answers [`StoreError::Unavailable`](crate::store::StoreError::Unavailable).
pub struct SwitchableStore {
    pub inner: std::sync::Arc<dyn crate::store::ConfigStore>,
    pub down: std::sync::atomic::AtomicBool,
}

impl SwitchableStore {
    /// Wraps `inner`, switched on.
    pub fn new(inner: std::sync::Arc<dyn crate::store::ConfigStore>) -> Self {
        Self { inner, down: std::sync::atomic::AtomicBool::new(false) }
    }

    fn check(&self) -> crate::store::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(crate::store::StoreError::Unavailable("switched off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl crate::store::ConfigStore for SwitchableStore {
    fn backend_name(&self) -> &'static str {
        "switchable"
    }
    async fn ping(&self) -> crate::store::Result<()> {
        self.check()?;
        self.inner.ping().await
    }
    async fn ensure_indexes(&self) -> crate::store::Result<()> {
        self.check()?;
        self.inner.ensure_indexes().await
    }
    async fn insert(
        &self,
        c: crate::store::Collection,
        d: serde_json::Value,
    ) -> crate::store::Result<serde_json::Value> {
        self.check()?;
        self.inner.insert(c, d).await
    }
    async fn get(&self, c: crate::store::Collection, id: &str) -> crate::store::Result<Option<serde_json::Value>> {
        self.check()?;
        self.inner.get(c, id).await
    }
    async fn find(
        &self,
        c: crate::store::Collection,
        q: &crate::store::Query,
    ) -> crate::store::Result<Vec<serde_json::Value>> {
        self.check()?;
        self.inner.find(c, q).await
    }
    async fn count(&self, c: crate::store::Collection, f: &crate::store::Filter) -> crate::store::Result<u64> {
        self.check()?;
        self.inner.count(c, f).await
    }
    async fn replace(
        &self,
        c: crate::store::Collection,
        id: &str,
        v: Option<u64>,
        d: serde_json::Value,
    ) -> crate::store::Result<serde_json::Value> {
        self.check()?;
        self.inner.replace(c, id, v, d).await
    }
    async fn delete(&self, c: crate::store::Collection, id: &str, v: Option<u64>) -> crate::store::Result<()> {
        self.check()?;
        self.inner.delete(c, id, v).await
    }
    async fn config_revision(&self) -> crate::store::Result<String> {
        self.check()?;
        self.inner.config_revision().await
    }
    async fn bump_config_revision(&self) -> crate::store::Result<String> {
        self.check()?;
        self.inner.bump_config_revision().await
    }
}
