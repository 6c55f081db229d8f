//! An open-loop HTTP/1.1 load generator for `bench/traffic.sh`: requests go out on a fixed schedule, whatever
//! the answers do, and the latency of each (from sending it to its response's last byte) is recorded.
//!
//! wrk, paced with its `delay`, keeps one timer per connection in a list it walks on every loop: with hundreds of
//! connections its own loop delays reading responses, and that delay shows up as server latency (nginx itself
//! looked like 4–6 ms at p99). This generator is one thread: it spreads `RATE` requests a second evenly over
//! `CONNECTIONS` keep-alive connections; a connection whose previous answer is late sends at once when it comes.
//!
//! ```text
//! loadgen ADDR RATE CONNECTIONS SECONDS [CAMPAIGNS]
//! ```
//! prints `requests_per_s p50_ms p99_ms p999_ms max_ms errors`. The requests are those of the wrk script: the
//! campaigns in turn, six countries, two user agents, a distinct `sub1` each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const COUNTRIES: [&str; 6] = ["DE", "US", "FR", "ES", "PL", "BR"];
const AGENTS: [&str; 2] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36",
];

struct Plan {
    addr: SocketAddr,
    /// Between two requests of one connection.
    interval: Duration,
    connections: usize,
    campaigns: usize,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct Outcome {
    /// Microseconds, one per answered request.
    latencies: Vec<u32>,
    errors: u64,
}

fn request(buf: &mut Vec<u8>, i: usize, campaigns: usize) {
    use std::io::Write;
    buf.clear();
    let _ = write!(
        buf,
        "GET /c/bench-{:05}?country={}&sub1=s{i}&sub2=x HTTP/1.1\r\nHost: bench\r\nUser-Agent: {}\r\n\r\n",
        i % campaigns,
        COUNTRIES[i % COUNTRIES.len()],
        AGENTS[i % 2],
    );
}

/// Reads one response (headers and a `Content-Length` body) into `buf`; false when the connection broke.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + body {
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    Some(stream)
}

/// Sends one request and reads its response; a connection the server closed (keep-alive limits) is opened again
/// and the request sent again, once.
async fn exchange(addr: SocketAddr, stream: &mut Option<TcpStream>, req: &[u8], res: &mut Vec<u8>) -> bool {
    for _ in 0..2 {
        if stream.is_none() {
            *stream = connect(addr).await;
        }
        let Some(s) = stream.as_mut() else { return false };
        if s.write_all(req).await.is_ok() && read_response(s, res).await {
            return true;
        }
        *stream = None;
    }
    false
}

async fn connection(plan: &Plan, index: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut stream = connect(plan.addr).await;
    let (mut req, mut res) = (Vec::with_capacity(512), Vec::with_capacity(1024));
    // Connections start spread over one interval, so the load is even rather than in waves.
    let mut due = plan.start + plan.interval.mul_f64(index as f64 / plan.connections as f64);
    let mut n = index;
    while due < plan.end {
        tokio::time::sleep_until(due.into()).await;
        request(&mut req, n, plan.campaigns);
        let sent = Instant::now();
        if exchange(plan.addr, &mut stream, &req, &mut res).await {
            out.latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        } else {
            out.errors += 1;
        }
        n += plan.connections;
        due += plan.interval;
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: loadgen ADDR RATE CONNECTIONS SECONDS [CAMPAIGNS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR: host:port");
    let rate: f64 = args[2].parse().expect("RATE: requests a second");
    let connections: usize = args[3].parse().expect("CONNECTIONS");
    let seconds: f64 = args[4].parse().expect("SECONDS");
    let campaigns: usize = args.get(5).map_or(1000, |c| c.parse().expect("CAMPAIGNS"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let start = Instant::now() + Duration::from_millis(100);
    let plan = Plan {
        addr,
        interval: Duration::from_secs_f64(connections as f64 / rate),
        connections,
        campaigns: campaigns.max(1),
        start,
        end: start + Duration::from_secs_f64(seconds),
    };
    let plan = std::rc::Rc::new(plan);
    let local = tokio::task::LocalSet::new();
    let outcomes = local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..connections)
            .map(|i| {
                let plan = std::rc::Rc::clone(&plan);
                tokio::task::spawn_local(async move { connection(&plan, i).await })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for t in tasks {
            outcomes.push(t.await.expect("a connection task"));
        }
        outcomes
    });
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    for o in outcomes {
        all.extend(o.latencies);
        errors += o.errors;
    }
    all.sort_unstable();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1))).copied();
    let ms = |v: Option<u32>| v.map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    println!(
        "{:.0} {:.3} {:.3} {:.3} {:.3} {errors}",
        all.len() as f64 / seconds,
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(all.last().copied()),
    );
}
