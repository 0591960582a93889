//! Accepting and serving connections under limits: at most
//! `connections_max` open at once (when full, new clients wait in the
//! kernel's backlog instead of exhausting memory), at most
//! `connections_per_address_max` from one address (so one client cannot
//! take every slot), and deadlines for sending a request's headers
//! (hyper's header timer, which also runs while a keep-alive connection
//! waits for its next request) and its body (`body_deadline` in `http.rs`).
//! Every close for one of these reasons is counted for `/metrics` and
//! logged, at most once per reason every [`LOG_INTERVAL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Closes of one reason are logged at most this often (with the number
/// left unlogged): a flood of slow clients must not flood the log too.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A pause after a failed accept (e.g. too many open files): the error is
/// transient, and retrying at once would spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Connections the kernel holds for the server before it accepts them
/// (the listen backlog; the kernel caps it at `net.core.somaxconn`, 4,096
/// by default). When a restart brings every player back at once, a
/// backlog of tokio's default 1,024 overflows and the kernel drops the
/// rest of the connection attempts; their clients retry only after a
/// second or more (docs/benchmarks.md, the login storm).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`] (and address
/// reuse, so that a restarted server can bind while old connections of
/// its predecessor linger in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Why the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// A request's headers did not arrive within `limits.request_header_seconds_max`.
    HeaderTimeout,
    /// A keep-alive connection sent no next request within the same time.
    IdleTimeout,
    /// A request's body did not arrive within `limits.request_body_seconds_max`.
    BodyTimeout,
    /// The address already had `limits.connections_per_address_max` connections open.
    PerAddress,
}

impl Close {
    pub const ALL: [Close; 4] = [Close::HeaderTimeout, Close::IdleTimeout, Close::BodyTimeout, Close::PerAddress];

    pub fn as_str(self) -> &'static str {
        match self {
            Close::HeaderTimeout => "header_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::BodyTimeout => "body_timeout",
            Close::PerAddress => "per_address_limit",
        }
    }
}

/// Connections closed by the server, by reason, since it started.
#[derive(Debug, Default)]
pub struct Closes {
    counts: [AtomicU64; 4],
    /// Per reason: when it was last logged, and closes since then.
    logged: Mutex<[(Option<Instant>, u64); 4]>,
}

impl Closes {
    /// Counts one close, and logs it unless one of its kind was logged lately.
    pub fn count(&self, why: Close, addr: IpAddr) {
        let i = why as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let (last, unlogged) = &mut logged[i];
        if last.is_some_and(|t| t.elapsed() < LOG_INTERVAL) {
            *unlogged += 1;
            return;
        }
        tracing::warn!(reason = why.as_str(), %addr, also_since_last_logged = *unlogged, "closed a connection");
        *last = Some(Instant::now());
        *unlogged = 0;
    }

    /// Every reason with its count.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        Close::ALL.iter().map(|c| (c.as_str(), self.counts[*c as usize].load(Ordering::Relaxed))).collect()
    }
}

/// What [`serve`] enforces.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub connections_max: usize,
    pub per_address_max: usize,
    pub header: Duration,
}

impl ConnLimits {
    /// The configured limits.
    pub fn of(l: &crate::config::Limits) -> ConnLimits {
        ConnLimits {
            connections_max: l.connections_max,
            per_address_max: l.connections_per_address_max,
            header: Duration::from_secs(l.request_header_seconds_max),
        }
    }
}

/// Open connections per address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection: gives its slots back when dropped, and notes whether the
/// client sent anything since the last answer (to tell a slow request from
/// an idle keep-alive connection when the header timer fires).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    addr: IpAddr,
    per_address: PerAddress,
    activity: Arc<Activity>,
}

#[derive(Debug, Default)]
struct Activity {
    answered: AtomicBool,
    read_since_answer: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut map = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets every HTTP
/// connection finish its request in flight and returns. (Upgraded
/// WebSockets are tracked by the app itself.)
pub async fn serve(
    listener: TcpListener,
    limits: ConnLimits,
    closes: Arc<Closes>,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let per_address: PerAddress = Arc::new(Mutex::new(HashMap::new()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header).keep_alive(true);
    let conns = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let ip = addr.ip();
        {
            let mut map = per_address.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= limits.per_address_max {
                drop(map);
                closes.count(Close::PerAddress, ip);
                continue;
            }
            *n += 1;
        }
        // Small request/response messages: send them at once.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let conn =
            Conn { stream, _permit: permit, addr: ip, per_address: per_address.clone(), activity: activity.clone() };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            use tower::ServiceExt;
            req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
            app.clone().oneshot(req)
        });
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(conn), service).with_upgrades();
        let (shutdown, closes) = (shutdown.clone(), closes.clone());
        conns.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    let idle = activity.answered.load(Ordering::Relaxed)
                        && !activity.read_since_answer.load(Ordering::Relaxed);
                    closes.count(if idle { Close::IdleTimeout } else { Close::HeaderTimeout }, ip);
                }
            }
        });
    }
    conns.close();
    conns.wait().await;
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_since_answer.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.activity.answered.store(true, Ordering::Relaxed);
        self.activity.read_since_answer.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
