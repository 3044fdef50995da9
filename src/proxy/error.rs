//! Every way a request can fail inside weir, and the one place that maps it
//! to a status code. Each error says whose fault it is.

use super::headers::HostError;
use crate::upstream::UpstreamError;
use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Ours,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{}", .0.as_str())]
    Host(HostError),
    /// Ambiguous or unsupported message framing (request smuggling guard).
    #[error("ambiguous framing: {0}")]
    Framing(&'static str),
    #[error("request target over the limit")]
    UriTooLong,
    #[error("no route matches")]
    NoRoute,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("too many requests in flight")]
    Overloaded,
    /// CONNECT other than RFC 8441's WebSocket: weir is not a forward proxy.
    #[error("CONNECT is only accepted for WebSocket over HTTP/2")]
    Connect,
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// Not a failure: the route answers with a redirect (`redirect`).
    #[error("redirected")]
    Redirect(StatusCode, http::HeaderValue),
    /// A browser's CORS preflight, answered here with these headers.
    #[error("CORS preflight")]
    Preflight(Box<http::HeaderMap>),
    /// Over the route's `rate_limit`; the client may retry after this long.
    #[error("over the route's rate limit")]
    RateLimited(std::time::Duration),
    /// The redirect would send the client to the URL it asked for.
    #[error("the route's redirect points at the request itself")]
    RedirectLoop,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Host(_) | ProxyError::Framing(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BodyTooLarge | ProxyError::Upstream(UpstreamError::BodyTooLarge) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Redirect(status, _) => *status,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Preflight(_) => StatusCode::NO_CONTENT,
            ProxyError::RedirectLoop => StatusCode::LOOP_DETECTED,
            ProxyError::Upstream(UpstreamError::ClientBody(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(UpstreamError::BodyTimeout) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Upstream(
                UpstreamError::ConnectTimeout | UpstreamError::Timeout | UpstreamError::UploadStalled(_),
            ) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::NoEndpoints) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(
                UpstreamError::Connect(_)
                | UpstreamError::Reset(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Protocol101,
            ) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::Host(_)
            | ProxyError::Framing(_)
            | ProxyError::UriTooLong
            | ProxyError::NoRoute
            | ProxyError::BodyTooLarge
            | ProxyError::Connect
            | ProxyError::Redirect(..)
            | ProxyError::RateLimited(_)
            | ProxyError::Preflight(_) => Fault::Client,
            ProxyError::Upstream(
                UpstreamError::BodyTooLarge | UpstreamError::BodyTimeout | UpstreamError::ClientBody(_),
            ) => Fault::Client,
            ProxyError::Overloaded | ProxyError::RedirectLoop => Fault::Ours,
            ProxyError::Upstream(_) => Fault::Upstream,
        }
    }

    /// The request's own framing or head was bad: answer, then close the
    /// connection (what follows on it cannot be trusted).
    pub fn closes(&self) -> bool {
        matches!(self, ProxyError::Host(_) | ProxyError::Framing(_) | ProxyError::UriTooLong | ProxyError::BodyTooLarge)
    }

    /// Short machine-readable tag for the `x-weir-error` response header and logs.
    pub fn tag(&self) -> &'static str {
        match self {
            ProxyError::Host(_) => "bad_host",
            ProxyError::Framing(_) => "bad_framing",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::NoRoute => "no_route",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::Overloaded => "overloaded",
            ProxyError::Connect => "connect_refused",
            ProxyError::Redirect(..) => "redirect",
            ProxyError::RateLimited(_) => "rate_limited",
            ProxyError::Preflight(_) => "cors_preflight",
            ProxyError::RedirectLoop => "redirect_loop",
            ProxyError::Upstream(e) => match e {
                UpstreamError::Connect(_) => "upstream_connect",
                UpstreamError::NoEndpoints => "upstream_no_endpoints",
                UpstreamError::ConnectTimeout => "upstream_connect_timeout",
                UpstreamError::Timeout => "upstream_timeout",
                UpstreamError::UploadStalled(_) => "upstream_upload_stalled",
                UpstreamError::Reset(_) => "upstream_reset",
                UpstreamError::Protocol(_) | UpstreamError::Protocol101 => "upstream_protocol",
                UpstreamError::BodyTooLarge => "body_too_large",
                UpstreamError::ClientBody(_) => "client_body",
                UpstreamError::BodyTimeout => "body_timeout",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        let refused =
            ProxyError::Upstream(UpstreamError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refused.fault(), Fault::Upstream);
        assert_eq!(ProxyError::Upstream(UpstreamError::Timeout).status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ProxyError::Upstream(UpstreamError::ConnectTimeout).status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ProxyError::Host(HostError::Missing).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(ProxyError::BodyTooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ProxyError::Overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ProxyError::Connect.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(ProxyError::Connect.fault(), Fault::Client);
    }
}
