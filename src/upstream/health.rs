//! Health (design §13). Passive: failed attempts in a row eject an
//! endpoint for a time that grows with each ejection; at most `max_ejected`
//! of the set is out at once, and never all of it. Active (optional): a
//! `GET path` to every endpoint each `interval` takes one out after
//! `unhealthy` failures in a row and back after `healthy` passes. Either
//! only moves traffic between pods of one version: failed attempts are
//! still evidence against the version (the proxy records every one), and
//! when every endpoint is out a first attempt still goes to one of them.

use super::endpoints::Endpoints;
use super::pool::{self, Endpoint};
use crate::config::{Active, Passive};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A failed attempt on `ep`, one of `set`.
pub fn failed(policy: &Passive, set: &[Arc<Endpoint>], ep: &Endpoint) {
    let in_a_row = ep.failed();
    if policy.consecutive_failures == 0 || in_a_row < policy.consecutive_failures {
        return;
    }
    let now = pool::clock_ms();
    if ep.is_ejected(now) {
        return;
    }
    let n = set.len();
    let allowed = (n * policy.max_ejected_percent as usize / 100).min(n.saturating_sub(1));
    let ejected = set.iter().filter(|e| e.is_ejected(now)).count();
    if ejected < allowed {
        ep.eject(now, policy.eject);
    }
}

/// An attempt that got an answer: a status in `statuses` is a failure,
/// anything else ends the run of failures.
pub fn answered(policy: &Passive, set: &Endpoints, ep: &Endpoint, status: u16) {
    if status >= 500 && policy.statuses.contains(&status) {
        failed(policy, &set.current(), ep);
    } else {
        ep.succeeded();
    }
}

/// Check every endpoint in service each `policy.interval` until the
/// upstream is dropped. Checks of one round run at once, each bounded by
/// `policy.timeout`.
pub async fn check_forever(endpoints: Weak<Endpoints>, policy: Active) {
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(set) = endpoints.upgrade() else { return };
        let eps: Vec<Arc<Endpoint>> = set.current().iter().cloned().collect();
        drop(set);
        let mut round = tokio::task::JoinSet::new();
        for ep in eps {
            let (path, timeout) = (policy.path.clone(), policy.timeout);
            round.spawn(async move {
                let passed = probe(&ep, &path, timeout).await;
                (ep, passed)
            });
        }
        while let Some(Ok((ep, passed))) = round.join_next().await {
            if let Some(failing) = ep.checked(passed, policy.healthy, policy.unhealthy) {
                if failing {
                    tracing::warn!(upstream = %ep.upstream(), endpoint = ep.address(), path = %policy.path,
                        "endpoint out of service: its health check failed {} times in a row", policy.unhealthy);
                } else {
                    tracing::info!(upstream = %ep.upstream(), endpoint = ep.address(),
                        "endpoint back in service: its health check passed {} times in a row", policy.healthy);
                }
            }
        }
    }
}

/// One check: a connection of its own, `GET path`, and a status line of
/// 200–399 within the timeout (the rest of the answer is not read).
async fn probe(ep: &Endpoint, path: &str, timeout: Duration) -> bool {
    let check = async {
        let mut s = ep.dial().await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: weir-health-check\r\nConnection: close\r\n\r\n",
            ep.address()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let got = s.read(&mut buf[n..]).await.ok()?;
            if got == 0 {
                return None;
            }
            n += got;
        }
        let line = std::str::from_utf8(buf.get(..n)?).ok()?;
        let status: u16 = line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
        Some((200..400).contains(&status))
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}
