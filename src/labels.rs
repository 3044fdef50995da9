//! Label values of weir's metrics that more than one layer produces, as
//! enums at the bottom of the module ladder: the code that produces a value
//! and the exporter that counts it share one type, so a value that is
//! produced is always one that is counted (no string matching).

use serde::{Deserialize, Serialize};

/// Why a socket closed (label `close` of `weir_websocket_connections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhy {
    Client,
    Upstream,
    Rollback,
    Shutdown,
    Error,
}

impl CloseWhy {
    pub const ALL: [CloseWhy; 5] =
        [CloseWhy::Client, CloseWhy::Upstream, CloseWhy::Rollback, CloseWhy::Shutdown, CloseWhy::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseWhy::Client => "client",
            CloseWhy::Upstream => "upstream",
            CloseWhy::Rollback => "rollback",
            CloseWhy::Shutdown => "shutdown",
            CloseWhy::Error => "error",
        }
    }
}

/// Why a route was rolled back (label of `weir_rollbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// Test E (errors against stable) or the `max_error_rate` guard.
    ErrorRate,
    /// The `max_p95` / `max_p99` guard.
    Latency,
    /// Test R (latency against stable).
    LatencyRatio,
    /// Test W95 or the `max_ws_rtt_p95` guard.
    WebsocketRtt,
    Admin,
    /// Another replica of the fleet latched (by its judgement or an admin
    /// call there) before this replica's own judgement reached that time.
    Fleet,
    /// The persisted state could not be read: start with the canary off.
    StateUnreadable,
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 7] = [
        RollbackReason::ErrorRate,
        RollbackReason::Latency,
        RollbackReason::LatencyRatio,
        RollbackReason::WebsocketRtt,
        RollbackReason::Admin,
        RollbackReason::Fleet,
        RollbackReason::StateUnreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::ErrorRate => "error_rate",
            RollbackReason::Latency => "latency",
            RollbackReason::LatencyRatio => "latency_ratio",
            RollbackReason::WebsocketRtt => "websocket_rtt",
            RollbackReason::Admin => "admin",
            RollbackReason::Fleet => "fleet",
            RollbackReason::StateUnreadable => "state_unreadable",
        }
    }
}

/// The label of `weir_upstream_errors_total{kind}`: an enum, so a kind
/// that is produced is always a kind that is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Protocol,
    /// The client's request body failed (too large, stalled, broken).
    Client,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] =
        [ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Reset, ErrorKind::Protocol, ErrorKind::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Client => "client",
        }
    }
}

/// The label of `weir_upstream_unsolicited_total{when}`: where bytes no
/// request asked for were found on an upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsolicited {
    /// Read with a response, past its end.
    AfterResponse = 0,
    /// Waiting on an idle connection (at checkout or by the reaper).
    Idle = 1,
}

impl Unsolicited {
    pub const ALL: [Unsolicited; 2] = [Unsolicited::AfterResponse, Unsolicited::Idle];

    pub fn as_str(self) -> &'static str {
        match self {
            Unsolicited::AfterResponse => "after_response",
            Unsolicited::Idle => "idle",
        }
    }
}

/// gRPC status codes (`grpc-status`), by number: their names as metric
/// labels and in config.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The codes that count as the server's fault by default (design §13):
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS, as a bit set by code.
pub const GRPC_DEFAULT_ERRORS: u32 = 1 << 2 | 1 << 4 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 15;

/// A code from its name (`UNAVAILABLE`) or number (`14`).
pub fn grpc_code(s: &str) -> Option<u8> {
    let s = s.trim();
    s.parse::<u8>()
        .ok()
        .filter(|n| *n <= 16)
        .or_else(|| GRPC_CODES.iter().position(|c| c.eq_ignore_ascii_case(s)).and_then(|i| u8::try_from(i).ok()))
}

/// `grpc-status` as sent (a decimal number); anything else is None.
pub fn parse_grpc_status(v: &[u8]) -> Option<u8> {
    std::str::from_utf8(v).ok()?.parse::<u8>().ok().filter(|n| *n <= 16)
}
