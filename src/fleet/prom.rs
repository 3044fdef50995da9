//! A small Prometheus HTTP API client: instant and range queries over one
//! HTTP/1.1 connection each, with a deadline and a size cap, answers parsed
//! into `fold::Series`.

use super::fold::Series;
use crate::routing::policy::FleetSource;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Largest answer read (a long replay of a big route stays far below).
const MAX_ANSWER: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("Prometheus answered {0}: {1}")]
    Status(u16, String),
    #[error("unexpected answer: {0}")]
    Shape(String),
    #[error("lagging: the stalest replica's newest sample is {0} ms older than the evaluation time")]
    Lagging(u64),
}

/// Bytes received, for the cost figure (docs/fleet.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub queries: u64,
    pub bytes: u64,
}

fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Seconds with millisecond precision, as Prometheus takes them.
pub fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// A PromQL string literal.
pub fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

async fn get(src: &FleetSource, path_and_query: &str, cost: &mut Cost) -> Result<serde_json::Value, QueryError> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&src.authority)
            .await
            .map_err(|e| QueryError::Connect(src.authority.clone(), e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| QueryError::Http(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(format!("{}{path_and_query}", src.path_prefix))
            .header(http::header::HOST, &src.authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::new()))
            .map_err(|e| QueryError::Http(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| QueryError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| QueryError::Http(e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok::<_, QueryError>((status, body))
    };
    let (status, body) =
        tokio::time::timeout(src.timeout, exchange).await.map_err(|_| QueryError::Timeout(src.timeout))??;
    cost.queries += 1;
    cost.bytes += body.len() as u64;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        if status == 200 { QueryError::Shape(e.to_string()) } else { QueryError::Status(status, snippet(&body)) }
    })?;
    if status != 200 || v.get("status").and_then(|s| s.as_str()) != Some("success") {
        let why = v.get("error").and_then(|e| e.as_str()).map_or_else(|| snippet(&body), str::to_owned);
        return Err(QueryError::Status(status, why));
    }
    v.get("data").cloned().ok_or_else(|| QueryError::Shape("no `data`".into()))
}

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

fn labels(m: &serde_json::Value) -> BTreeMap<String, String> {
    m.as_object()
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

fn point(p: &serde_json::Value) -> Option<(u64, f64)> {
    let t = p.get(0)?.as_f64()?;
    let v: f64 = p.get(1)?.as_str()?.parse().ok()?;
    Some(((t * 1000.0).round() as u64, v))
}

/// `query_range` from `start_ms` to `end_ms` every `step_ms`.
pub async fn range(
    src: &FleetSource,
    promql: &str,
    start_ms: u64,
    end_ms: u64,
    step_ms: u64,
    cost: &mut Cost,
) -> Result<Vec<Series>, QueryError> {
    let mut q = String::from("/api/v1/query_range?query=");
    encode(promql, &mut q);
    let _ = write!(q, "&start={}&end={}&step={}", secs(start_ms), secs(end_ms), secs(step_ms));
    let data = get(src, &q, cost).await?;
    let result = data.get("result").and_then(|r| r.as_array()).ok_or_else(|| QueryError::Shape("no result".into()))?;
    Ok(result
        .iter()
        .map(|s| Series {
            labels: labels(s.get("metric").unwrap_or(&serde_json::Value::Null)),
            points: s
                .get("values")
                .and_then(|v| v.as_array())
                .map_or_else(Vec::new, |v| v.iter().filter_map(point).collect()),
        })
        .collect())
}

/// Instant query (now); one value per series.
pub async fn instant(
    src: &FleetSource,
    promql: &str,
    cost: &mut Cost,
) -> Result<Vec<(BTreeMap<String, String>, f64)>, QueryError> {
    let mut q = String::from("/api/v1/query?query=");
    encode(promql, &mut q);
    let data = get(src, &q, cost).await?;
    let result = data.get("result").and_then(|r| r.as_array()).ok_or_else(|| QueryError::Shape("no result".into()))?;
    Ok(result
        .iter()
        .filter_map(|s| {
            let (_, v) = point(s.get("value")?)?;
            Some((labels(s.get("metric").unwrap_or(&serde_json::Value::Null)), v))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql_for_a_query_string() {
        let mut o = String::new();
        encode("max(x{route=\"a b\"}) or y", &mut o);
        assert_eq!(o, "max%28x%7Broute%3D%22a%20b%22%7D%29%20or%20y");
        assert_eq!(secs(1_700_000_000_250), "1700000000.250");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(point(&serde_json::json!([1700000000.25, "3"])), Some((1_700_000_000_250, 3.0)));
    }
}
