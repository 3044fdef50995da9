//! Wiring and lifecycle: bind the listeners, serve connections, drain on
//! shutdown (design §8).
//!
//! Shutdown: `/ready` turns 503 → wait `shutdown.delay` (so load balancers
//! stop sending) → stop accepting → every open connection is asked to finish
//! (HTTP/1 closes after the in-flight response, HTTP/2 sends GOAWAY) → wait
//! up to `shutdown.grace` → return.

mod client;

use crate::access_log::AccessLog;
use crate::admin::{self, AdminState};
use crate::config::Snapshot;
use crate::live::Live;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use client::{ClientConn, Servers};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot use state_dir {}: {source} (set `state_dir` to a writable directory)", dir.display())]
    State { dir: PathBuf, source: std::io::Error },
}

/// A running weir. Dropping it does not stop it; call `shutdown`.
pub struct Handle {
    /// Bound proxy addresses (real ports when the config said `:0`).
    pub listen: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
    lifecycle: JoinHandle<()>,
}

impl Handle {
    /// Begin graceful shutdown (idempotent).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Wait until every connection has drained (or the grace period ran out).
    pub async fn wait(self) {
        let _ = self.lifecycle.await;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if reuse_port {
        socket.set_reuseport(true).map_err(err)?;
    }
    socket.set_nodelay(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(4096).map_err(err)
}

/// How connections are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One runtime (multi-thread work stealing, or a single thread): every
    /// listener accepted once, connections run wherever the scheduler puts
    /// them.
    Shared,
    /// Thread per core (`WEIR_RUNTIME=per-core`): this many threads, each a
    /// single-threaded runtime with its own `SO_REUSEPORT` socket per
    /// listener; the kernel spreads new connections over them, and a
    /// connection lives and dies on the thread that accepted it. Admin,
    /// reloads and the controller run on the first one.
    PerCore(usize),
}

/// Bind every listen address once per accepting thread (extra sockets on
/// the port the first one got, so `:0` works too).
fn bind_all(addrs: &[SocketAddr], threads: usize) -> Result<Vec<Vec<TcpListener>>, StartError> {
    let reuse = threads > 1;
    let first: Vec<TcpListener> = addrs.iter().map(|a| bind(*a, reuse)).collect::<Result<_, _>>()?;
    let bound: Vec<SocketAddr> = first
        .iter()
        .zip(addrs)
        .map(|(l, a)| l.local_addr().map_err(|source| StartError::Bind { addr: *a, source }))
        .collect::<Result<_, _>>()?;
    let mut sets = vec![first];
    for _ in 1..threads {
        sets.push(bound.iter().map(|a| bind(*a, true)).collect::<Result<_, _>>()?);
    }
    Ok(sets)
}

/// Run the accept loops of one per-core thread until `done`.
fn spawn_accept_thread(k: usize, set: Vec<std::net::TcpListener>, shared: Accepting, done: CancellationToken) {
    let run = move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(thread = k, error = %e, "cannot start an accepting thread's runtime"),
        };
        rt.block_on(async move {
            for (index, l) in set.into_iter().enumerate() {
                match TcpListener::from_std(l) {
                    Ok(l) => drop(tokio::spawn(accept_loop(index, l, shared.clone()))),
                    Err(e) => tracing::error!(thread = k, error = %e, "cannot register a listener"),
                }
            }
            done.cancelled().await;
        });
    };
    if let Err(e) = std::thread::Builder::new().name(format!("weir-core-{k}")).spawn(run) {
        tracing::error!(thread = k, error = %e, "cannot start an accepting thread");
    }
}

/// Bind everything and start serving `snapshot`.
pub async fn start(config_path: PathBuf, snapshot: Snapshot) -> Result<Handle, StartError> {
    start_with(config_path, snapshot, Layout::Shared).await
}

/// `start`, with the connections spread as `layout` says.
pub async fn start_with(config_path: PathBuf, snapshot: Snapshot, layout: Layout) -> Result<Handle, StartError> {
    // One crypto provider in the process, chosen explicitly (stack.md): the
    // TLS configs name it too, this covers anything using the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bound = bind_sockets(&snapshot, layout)?;

    crate::config::log_warnings(&snapshot, &config_path);
    let max_connections = snapshot.limits.max_connections;
    let state_dir = snapshot.state_dir.clone();
    let live = Arc::new(Live::new(snapshot).map_err(|source| StartError::State { dir: state_dir, source })?);
    wait_for_dns(&live).await;
    let reloader = Arc::new(Reloader::new(config_path, Arc::clone(&live)));
    let access_log = Arc::new(AccessLog::stdout());
    let proxy = Arc::new(Proxy::new(Arc::clone(&live), Arc::clone(&access_log)));
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    // Separate from `stop`: accepting ends only after `shutdown.delay`.
    let stop_accepting = CancellationToken::new();
    let accepting = Accepting {
        live: Arc::clone(&live),
        proxy,
        conn_cap: Arc::new(Semaphore::new(max_connections)),
        stop: stop_accepting.clone(),
        tracker: TaskTracker::new(),
    };
    // Per-core threads end once the drain is over (see `lifecycle`).
    let threads_done = CancellationToken::new();
    spawn_accept_loops(bound.listeners, bound.others, &accepting, &threads_done);
    let admin_state = Arc::new(AdminState {
        live: Arc::clone(&live),
        reloader: Arc::clone(&reloader),
        ready: Arc::clone(&ready),
        loopback: bound.admin_addr.ip().is_loopback(),
        access_log,
    });
    spawn_services(bound.admin, admin_state, &reloader, &live, &stop_accepting);
    wait_for_fleet(&live).await;
    ready.store(true, Ordering::Release);
    tracing::info!(listen = ?bound.listen, admin = %bound.admin_addr, generation = 1, "weir ready");

    let lifecycle = tokio::spawn(lifecycle(stop.clone(), Arc::clone(&ready), accepting, threads_done));
    Ok(Handle { listen: bound.listen, admin: bound.admin_addr, live, reloader, ready, stop, lifecycle })
}

/// Every socket weir serves on, bound before anything else starts.
struct Bound {
    /// The listeners this runtime accepts on.
    listeners: Vec<TcpListener>,
    /// One set per extra per-core thread, out of this runtime's reactor
    /// (each thread registers its own).
    others: Vec<Vec<std::net::TcpListener>>,
    admin: TcpListener,
    /// The proxy listeners' bound addresses.
    listen: Vec<SocketAddr>,
    admin_addr: SocketAddr,
}

fn bind_sockets(snapshot: &Snapshot, layout: Layout) -> Result<Bound, StartError> {
    let threads = match layout {
        Layout::Shared => 1,
        Layout::PerCore(n) => n.max(1),
    };
    let mut sets = bind_all(&snapshot.listen, threads)?.into_iter();
    let listeners = sets.next().unwrap_or_default();
    let others = sets.map(|set| set.into_iter().filter_map(|l| l.into_std().ok()).collect()).collect();
    let admin = bind(snapshot.admin, false)?;
    let listen = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind { addr: snapshot.admin, source })?;
    Ok(Bound { listeners, others, admin, listen, admin_addr })
}

/// Start accepting: this runtime's loops, and one thread per extra set.
fn spawn_accept_loops(
    listeners: Vec<TcpListener>,
    others: Vec<Vec<std::net::TcpListener>>,
    accepting: &Accepting,
    threads_done: &CancellationToken,
) {
    for (index, listener) in listeners.into_iter().enumerate() {
        tokio::spawn(accept_loop(index, listener, accepting.clone()));
    }
    for (k, set) in others.into_iter().enumerate() {
        spawn_accept_thread(k + 1, set, accepting.clone(), threads_done.clone());
    }
}

/// The admin server, the config watcher and the background tasks, all
/// until accepting stops.
fn spawn_services(
    admin_listener: TcpListener,
    admin_state: Arc<AdminState>,
    reloader: &Arc<Reloader>,
    live: &Arc<Live>,
    stop_accepting: &CancellationToken,
) {
    tokio::spawn(admin::serve(admin_listener, admin_state, stop_accepting.clone()));
    crate::reload::watch::spawn(Arc::clone(reloader), stop_accepting.clone());
    tokio::spawn(crate::tasks::controller(Arc::clone(live), stop_accepting.clone()));
    tokio::spawn(crate::tasks::fleet(Arc::clone(live), stop_accepting.clone()));
    tokio::spawn(crate::tasks::reap_idle_connections(Arc::clone(live), stop_accepting.clone()));
}

/// Fleet mode: take the fleet's state (or learn that the source is down)
/// before saying ready, so a new replica does not serve the first step
/// while the fleet is further on. Bounded: a slow source never keeps a
/// replica out of service for long.
async fn wait_for_fleet(live: &Live) {
    let first = live.fleet_first_pass.notified();
    if !live.fleet_targets().is_empty() && !live.fleet_passed.load(Ordering::Acquire) {
        let _ = tokio::time::timeout(crate::fleet::READY_WAIT, first).await;
    }
}

/// After `stop`: readiness off, wait `shutdown.delay`, stop accepting, ask
/// every connection and WebSocket to finish, wait up to `shutdown.grace`,
/// then let the per-core threads end.
async fn lifecycle(
    stop: CancellationToken,
    ready: Arc<AtomicBool>,
    accepting: Accepting,
    threads_done: CancellationToken,
) {
    let Accepting { live, proxy, stop: stop_accepting, tracker, .. } = accepting;
    stop.cancelled().await;
    // Read at shutdown time: a reload may have changed them.
    let crate::config::Shutdown { delay, grace } = live.load().snapshot.shutdown.clone();
    ready.store(false, Ordering::Release);
    // From now on HTTP/1 responses say `Connection: close`.
    proxy.start_draining();
    tracing::info!(delay_ms = delay.as_millis() as u64, "shutdown: readiness off");
    tokio::time::sleep(delay).await;
    stop_accepting.cancel();
    tracker.close();
    // Upgraded sockets are invisible to hyper's graceful shutdown:
    // the hub tells each one to close with 1001 at a frame boundary.
    live.websockets.shutdown();
    tracing::info!(
        connections = tracker.len(),
        websockets = live.websockets.active(),
        grace_ms = grace.as_millis() as u64,
        "shutdown: draining"
    );
    let drained = async { tokio::join!(tracker.wait(), live.websockets.wait()) };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            connections = tracker.len(),
            websockets = live.websockets.active(),
            "shutdown: grace period over, closing the rest"
        );
    }
    threads_done.cancel();
}

/// What every listener's accept loop shares.
#[derive(Clone)]
struct Accepting {
    live: Arc<Live>,
    proxy: Arc<Proxy>,
    /// `limits.max_connections`: a connection holds one permit.
    conn_cap: Arc<Semaphore>,
    stop: CancellationToken,
    /// Connection tasks, awaited by the drain.
    tracker: TaskTracker,
}

/// Let DNS-sourced upstreams find their pods before the first request (at
/// most two resolver timeouts). One that has not answered
/// by then keeps trying in the background; until it answers, its requests
/// get 503 (a canary's fall back to stable).
async fn wait_for_dns(live: &Live) {
    let served = live.load();
    let start = tokio::time::Instant::now();
    for u in &served.upstreams {
        let Some(source) = u.spec().dns.as_ref() else { continue };
        // One deadline for all: they resolve in parallel already.
        let limit = (source.resolver.timeout * 2).saturating_sub(start.elapsed());
        if !u.ready(limit).await {
            tracing::warn!(upstream = %u.spec().name, name = %source.name,
                "no DNS answer yet; serving without its endpoints until one comes");
        }
    }
}

async fn accept_loop(index: usize, listener: TcpListener, shared: Accepting) {
    let Accepting { live, proxy, conn_cap, stop, tracker } = shared;
    // Limits are read at connection start; rebuild the server settings only
    // when a reload changed them.
    let mut limits = live.load().snapshot.limits.clone();
    let mut builder = Arc::new(Servers::new(&limits));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over `max_connections`: close at once (fast refusal, no queue).
        let Ok(permit) = Arc::clone(&conn_cap).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let current = live.load();
        if current.snapshot.limits != limits {
            limits = current.snapshot.limits.clone();
            builder = Arc::new(Servers::new(&limits));
        }
        // TLS or not is read per connection, so a reload can turn it on,
        // off, or swap certificates without touching the socket.
        let tls = current.snapshot.tls.get(index).cloned().flatten();
        let proxied = current.snapshot.proxy_protocol.get(index).copied().unwrap_or(false);
        let real_ip = if proxied { current.snapshot.real_ip.clone() } else { None };
        drop(current);
        let handshake_timeout = limits.header_read_timeout;
        let (builder, proxy, stop) = (Arc::clone(&builder), Arc::clone(&proxy), stop.clone());
        tracker.spawn(async move {
            let mut peer = peer;
            if proxied {
                match proxy_header(&stream, peer, real_ip.as_deref(), handshake_timeout).await {
                    Some(from) => peer = from,
                    None => return,
                }
            }
            let conn = ClientConn { builder, proxy, stop, peer, permit: Arc::new(permit), client_cert: None };
            let Some(tls) = tls else {
                return conn.serve_plain(stream, handshake_timeout).await;
            };
            // Boxed: the TLS handshake's state would otherwise make every
            // connection task larger, plain ones too (see ClientConn::serve).
            Box::pin(serve_tls(conn, stream, tls, handshake_timeout)).await;
        });
    }
}

/// A `proxy_protocol` listener's connection: its PROXY header names the
/// client. Only a peer in `real_ip.trusted` (when that is set) may send
/// one; anyone else, or a connection without a valid header in time, is
/// closed. None: closed.
async fn proxy_header(
    stream: &tokio::net::TcpStream,
    peer: SocketAddr,
    real_ip: Option<&crate::client_ip::RealIp>,
    deadline: std::time::Duration,
) -> Option<SocketAddr> {
    if real_ip.is_some_and(|r| !r.trusts(peer.ip())) {
        tracing::debug!(peer = %peer, "PROXY protocol listener: connection from a peer not in real_ip.trusted closed");
        return None;
    }
    match crate::client_ip::read_proxy(stream, deadline).await {
        Ok(crate::client_ip::Proxied::From(client, _)) => Some(client),
        Ok(crate::client_ip::Proxied::Local(_)) => Some(peer),
        Err(why) => {
            tracing::debug!(peer = %peer, error = %why, "PROXY protocol listener: connection closed");
            None
        }
    }
}

async fn serve_tls(
    mut conn: ClientConn,
    stream: tokio::net::TcpStream,
    tls: Arc<crate::tls::Tls>,
    handshake_timeout: std::time::Duration,
) {
    let peer = conn.peer;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    // The handshake gets the same deadline as a request head.
    let accepted = tokio::select! {
        r = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => r,
        _ = conn.stop.cancelled() => return,
    };
    match accepted {
        Ok(Ok(stream)) => {
            let session = stream.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            // rustls has verified the chain against `client_ca` by now;
            // the leaf is first.
            conn.client_cert = session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::ClientCert::from_der(leaf))
                .map(Arc::new);
            conn.serve(TokioIo::new(stream), h2, true).await
        }
        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(peer = %peer, "tls handshake timed out"),
    }
}

/// Run until SIGTERM or SIGINT, then drain. A second SIGINT exits at once.
pub async fn run(config_path: PathBuf, snapshot: Snapshot, layout: Layout) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
    let handle = start_with(config_path, snapshot, layout).await?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(signal = "SIGTERM", "shutdown requested");
                break;
            }
            _ = int.recv() => {
                tracing::info!(signal = "SIGINT", "shutdown requested");
                break;
            }
            _ = hup.recv() => {
                let r = Arc::clone(&handle.reloader);
                // Outcome and problems are logged by the reloader itself.
                let _ = tokio::task::spawn_blocking(move || r.reload("sighup", false)).await;
            }
        }
    }
    handle.shutdown();
    let mut drained = std::pin::pin!(handle.wait());
    tokio::select! {
        _ = &mut drained => {}
        _ = int.recv() => {
            tracing::warn!("second SIGINT: exiting without draining");
            std::process::exit(130);
        }
    }
    tracing::info!("shutdown complete");
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot install signal handlers: {0}")]
    Signal(std::io::Error),
}
