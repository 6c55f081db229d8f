//! The data plane's pods as the operator reaches them: the ready endpoints of a component's Service (from
//! its EndpointSlices, so this works the same whatever made the pods), their `/metrics`, and
//! `POST /internal/reload`. Plain HTTP/1.0 over TCP, each call bounded by [`TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one call to a pod may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes read of an answer (a pod's `/metrics` is a few KiB).
const MAX_ANSWER: u64 = 1 << 20;

/// A ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod's name when the slice names it, else the address.
    pub name: String,
    pub addr: SocketAddr,
}

/// The ready endpoints of the Service `service` in `namespace`, on its port named `http` (else its first).
pub async fn ready_endpoints(client: &Client, namespace: &str, service: &str) -> Result<Vec<Endpoint>, kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let slices = api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}"))).await?;
    let mut out = Vec::new();
    for slice in slices.items {
        let ports = slice.ports.unwrap_or_default();
        let port = ports.iter().find(|p| p.name.as_deref() == Some("http")).or_else(|| ports.first());
        let Some(port) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else { continue };
        for endpoint in slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let addr = SocketAddr::new(ip, port);
            let name = endpoint.target_ref.and_then(|r| r.name).unwrap_or_else(|| addr.to_string());
            out.push(Endpoint { name, addr });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Sends one HTTP/1.0 request and reads the answer: its status code and body.
async fn call(addr: SocketAddr, request: String) -> Result<(u16, String), String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        conn.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        conn.take(MAX_ANSWER).read_to_end(&mut answer).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse::<u16>().ok()).ok_or("not an HTTP answer")?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| format!("no answer within {TIMEOUT:?}"))?
}

/// The pod's `/metrics` text.
pub async fn metrics(addr: SocketAddr) -> Result<String, String> {
    match call(addr, format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")).await? {
        (200, body) => Ok(body),
        (status, _) => Err(format!("/metrics answered {status}")),
    }
}

/// Tells the pod to reload its configuration; the revision it loaded.
pub async fn reload(addr: SocketAddr, token: Option<&str>) -> Result<String, String> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("POST /internal/reload HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n");
    match call(addr, request).await? {
        (200, body) => {
            let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("reload answer: {e}"))?;
            Ok(v["revision"].as_str().unwrap_or_default().to_owned())
        }
        (status, body) => Err(format!("reload answered {status}: {}", body.trim())),
    }
}
