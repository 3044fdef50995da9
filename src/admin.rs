//! The admin listener (design §5): `/live`, `/ready`, `/metrics`,
//! `/config`, `/routes`, `/routes/{name}`, `/explain`, `POST /reload`.
//! `POST /routes/{name}/{rollback,resume,pause,promote,kill,unkill}` steer
//! one route's rollout; each call is journaled with actor `admin` and peer.
//!
//! Mutating calls follow the token rule: with `admin.token_file`, they need
//! `Authorization: Bearer <token>` (compared in constant time); without it,
//! they are accepted only when the admin listener is bound to loopback.

mod views;

use crate::live::Live;
use crate::reload::{Outcome, Reloader};
use crate::rollout::{Steer, SteerError};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct AdminState {
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    /// True once listeners are bound and config loaded; false while draining.
    pub ready: Arc<AtomicBool>,
    /// The admin listener is bound to a loopback address.
    pub loopback: bool,
    /// For the count of access-log lines dropped.
    pub access_log: Arc<crate::access_log::AccessLog>,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

async fn handle(state: &AdminState, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/metrics") => metrics(state),
        (&Method::GET, "/config") => json(StatusCode::OK, &views::config_json(&state.live.load())),
        (&Method::GET, "/routes") => json(StatusCode::OK, &views::routes_json(&state.live, &state.live.load())),
        (&Method::GET, "/upstreams") => json(StatusCode::OK, &views::upstreams_json(&state.live.load())),
        (&Method::GET, p) if p.starts_with("/routes/") => route(state, &p["/routes/".len()..], req.uri().query()),
        (&Method::GET, "/explain") => explain(state, req.uri().query()),
        (&Method::POST, "/reload") => reload(state, peer, &req).await,
        (&Method::POST, p) if p.starts_with("/routes/") => steer(state, peer, &req, &p["/routes/".len()..]),
        (_, "/live" | "/ready" | "/reload" | "/metrics" | "/config" | "/routes" | "/upstreams" | "/explain") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /metrics`: the Prometheus text.
fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        views::metrics_text(
            &state.live,
            &state.live.load(),
            &state.reloader,
            state.access_log.dropped(),
            state.ready.load(Ordering::Acquire),
        ),
    )
}

/// `GET /routes/{name}` and `GET /routes/{name}/verdict` (`rest` is what
/// follows `/routes/`).
fn route(state: &AdminState, rest: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let served = state.live.load();
    let find = |name: &str| served.snapshot.table.routes.iter().position(|r| &*r.name == name);
    let found = match (find(rest), rest.strip_suffix("/verdict").and_then(find)) {
        (Some(i), _) => views::route_json(&state.live, &served, i),
        (None, Some(i)) => {
            let v = views::verdict_json(&state.live, &served, i);
            // `?gate=1`: the status says it too (200 healthy, 503
            // not), for webhooks that read only the status (Flagger).
            let gate = query.is_some_and(|q| q.split('&').any(|kv| kv == "gate=1" || kv == "gate"));
            if let (true, Some(v)) = (gate, &v) {
                let status = if v["healthy"] == true { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                return json(status, v);
            }
            v
        }
        (None, None) => None,
    };
    match found {
        Some(v) => json(StatusCode::OK, &v),
        None => text(StatusCode::NOT_FOUND, "no such route\n"),
    }
}

/// `GET /explain`: where a request like the one in the query would go.
fn explain(state: &AdminState, query: Option<&str>) -> Response<Full<Bytes>> {
    let draw = rand::random_range(0..crate::routing::BUCKETS);
    match views::explain_json(&state.live.load(), query, draw) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": e})),
    }
}

/// `POST /reload`: reload the config file now (off the async threads).
async fn reload<B>(state: &AdminState, peer: SocketAddr, req: &Request<B>) -> Response<Full<Bytes>> {
    if let Err((status, why)) = authorize(state, req) {
        tracing::warn!(peer = %peer, path = %req.uri().path(), status = status.as_u16(), "admin call refused");
        return text(status, why);
    }
    tracing::info!(actor = "admin", peer = %peer, "reload requested");
    let r = Arc::clone(&state.reloader);
    match tokio::task::spawn_blocking(move || r.reload("admin", false)).await {
        Ok(Ok(Outcome::Applied { generation, sha256 })) => {
            json(StatusCode::OK, &serde_json::json!({"result": "applied", "generation": generation, "sha256": sha256}))
        }
        Ok(Ok(Outcome::Unchanged { generation })) => {
            json(StatusCode::OK, &serde_json::json!({"result": "unchanged", "generation": generation}))
        }
        Ok(Err(e)) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"result": "refused", "generation": state.live.load().generation, "problems": e.problems()}),
        ),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed\n"),
    }
}

/// `POST /routes/{name}/{rollback|resume|pause|promote|kill|unkill}`.
fn steer<B>(state: &AdminState, peer: SocketAddr, req: &Request<B>, rest: &str) -> Response<Full<Bytes>> {
    let Some((name, op)) = rest.rsplit_once('/') else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(op) = Steer::parse(op) else {
        return text(StatusCode::NOT_FOUND, "unknown action; use rollback, resume, pause, promote, kill or unkill\n");
    };
    if let Err((status, why)) = authorize(state, req) {
        tracing::warn!(peer = %peer, path = %req.uri().path(), status = status.as_u16(), "admin call refused");
        return text(status, why);
    }
    match state.live.steer(name, op, peer) {
        Ok(changed) => {
            let served = state.live.load();
            let idx = served.snapshot.table.routes.iter().position(|r| &*r.name == name);
            let route = idx.and_then(|i| views::route_json(&state.live, &served, i)).unwrap_or_default();
            json(StatusCode::OK, &serde_json::json!({"changed": changed, "route": route}))
        }
        Err(SteerError::NoSuchRoute) => text(StatusCode::NOT_FOUND, "no such route\n"),
        Err(SteerError::NoCanary) => json(StatusCode::CONFLICT, &serde_json::json!({"error": "route has no canary"})),
        Err(SteerError::Refused(why)) => json(StatusCode::CONFLICT, &serde_json::json!({"error": why})),
    }
}

/// The token rule for mutating calls.
fn authorize<B>(state: &AdminState, req: &Request<B>) -> Result<(), (StatusCode, &'static str)> {
    let token_file = state.live.load().snapshot.admin_token_file.clone();
    let Some(file) = token_file else {
        return if state.loopback {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "admin mutations need admin.token_file when not bound to loopback\n"))
        };
    };
    // Read on each call so a rotated token applies without a reload.
    let expected = match crate::files::read_token(&file) {
        Ok(t) => t,
        Err(why) => {
            tracing::error!(path = %file.display(), error = %why, "admin token unusable; refusing mutations");
            return Err((StatusCode::FORBIDDEN, "admin token unavailable\n"));
        }
    };
    let given = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token).unwrap_or("");
    if tokens_equal(given.trim(), &expected) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n"))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER` work too; one or
/// more spaces may separate it from the token.
fn bearer_token(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim_start())
}

/// Constant-time token comparison: hashing first makes the comparison
/// independent of where the strings differ and of their lengths.
pub fn tokens_equal(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, tokens_equal};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR   s3cret"] {
            assert_eq!(bearer_token(v), Some("s3cret"), "{v}");
        }
        for v in ["Basic s3cret", "Bearers3cret", "s3cret", "", "Token s3cret"] {
            assert_eq!(bearer_token(v), None, "{v}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_equal("s3cret", "s3cret"));
        assert!(!tokens_equal("s3cret", "s3cres"));
        assert!(!tokens_equal("", "s3cret"));
        assert!(!tokens_equal("s3cret-longer", "s3cret"));
    }
}
