//! A WebSocket echo upstream shared by the WebSocket tests.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A WebSocket echo upstream that tags its handshake answer with
/// `x-upstream: <name>`, records each handshake's request headers and every
/// close code it receives, and can be killed (all sockets dropped without a
/// close frame) or told to flood every client.
pub struct WsUpstream {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    pub closes: Arc<Mutex<Vec<u16>>>,
    pub conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Flood mode: bytes the upstream managed to write.
    pub flooded: Arc<AtomicU64>,
    pub accept: tokio::task::JoinHandle<()>,
}

impl WsUpstream {
    pub async fn start(name: &'static str, flood: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let flooded = Arc::new(AtomicU64::new(0));
        let (h2, c2, n2, f2) = (handshakes.clone(), closes.clone(), conns.clone(), flooded.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (hs, closes, flooded) = (h2.clone(), c2.clone(), f2.clone());
                let task = tokio::spawn(async move {
                    let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                              mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        hs.lock().unwrap().push(req.headers().clone());
                        resp.headers_mut().insert("x-upstream", name.parse().unwrap());
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else { return };
                    if flood {
                        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while Instant::now() < deadline {
                            if ws.send(Message::Binary(chunk.clone())).await.is_err() {
                                return;
                            }
                            flooded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        }
                        return;
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Close(frame) = &msg {
                            closes.lock().unwrap().push(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                            // tungstenite queues the close reply; flush it.
                            let _ = ws.flush().await;
                        } else if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                n2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, handshakes, closes, conns, flooded, accept }
    }

    /// Drop every socket without a close frame and stop listening.
    pub fn kill(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Close codes received, leaving out the 1005 of clients that closed normally.
    pub fn closes(&self) -> Vec<u16> {
        self.closes.lock().unwrap().iter().copied().filter(|&c| c != 1005).collect()
    }
}
