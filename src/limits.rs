//! Shared handles of weir's resource limits, kept at the bottom of the
//! module ladder so the request path and the WebSocket relay can hold them
//! without reaching up into `app`.

use std::sync::Arc;

/// One accepted connection's place under `limits.max_connections`: held by
/// the connection task, and by a WebSocket after an upgrade (the socket
/// outlives the HTTP connection that carried the handshake).
pub type ConnPermit = Arc<tokio::sync::OwnedSemaphorePermit>;
