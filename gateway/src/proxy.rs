//! One request through the gateway: rate limit, authenticate, authorise, then forward to the
//! owning service with the verified identity attached.

use crate::Gateway;
use crate::routes::{self, Access, Route};
use crate::upstream::{Retry, Upstream, UpstreamError};
use auth_claims::{IDENTITY_HEADER, Identity};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use service_kit::{Problem, TraceParent};
use std::net::SocketAddr;
use std::sync::Arc;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub async fn handle(
    gateway: Arc<Gateway>,
    route: &'static Route,
    peer: SocketAddr,
    mut request: Request,
) -> Response {
    // Identity headers are the gateway's to set; a client's copy is dropped unread.
    strip_internal(request.headers_mut());

    if route.rate_limited
        && let Err(wait) = gateway.limiter.check(peer, request.headers())
    {
        return rate_limited(wait);
    }

    let identity = match route.access {
        Access::Public => None,
        Access::SignedIn | Access::Roles(_) => {
            match gateway.authenticator.authenticate(request.headers()).await {
                Ok(identity) => Some(identity),
                Err(failure) => return failure.problem().into_response(),
            }
        }
    };
    if let (Access::Roles(roles), Some(identity)) = (route.access, &identity)
        && !identity.may(roles)
    {
        return auth_claims::forbidden().into_response();
    }

    if declared_length(request.headers()).is_some_and(|len| len > gateway.max_body_bytes) {
        return service_kit::json::payload_too_large().into_response();
    }

    let trace = request.extensions().get::<TraceParent>().cloned();
    prepare_upstream_headers(
        &gateway,
        &mut request,
        peer,
        identity.as_ref(),
        trace.as_ref(),
    );
    forward(&gateway, route, request).await
}

async fn forward(gateway: &Gateway, route: &Route, request: Request) -> Response {
    let upstream = match route.upstream {
        routes::Upstream::Every => return crate::gather::audit(gateway, request).await,
        routes::Upstream::Overview => {
            let overview = gateway.looks.look(gateway.upstreams()).await;
            return axum::Json(overview).into_response();
        }
        owner => gateway.upstream(owner),
    };
    // Read whole (so that it can be sent again to another instance), but never past the
    // limit, even when no Content-Length was sent, nor for longer than a request may take.
    let (parts, body) = request.into_parts();
    let read = http_body_util::Limited::new(body, gateway.max_body_bytes).collect();
    let body = match tokio::time::timeout(gateway.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return service_kit::json::payload_too_large().into_response();
        }
        Err(_) => {
            return Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "The request body did not arrive in time",
            )
            .with_detail(format!("within {:?}", gateway.body_timeout))
            .into_response();
        }
        Ok(Err(e)) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "The request body could not be read",
            )
            .with_detail(e.to_string())
            .into_response();
        }
    };
    let retry = Retry::of(&parts.method, &parts.headers, route.keyed);
    match upstream.send(&parts, body, retry).await {
        Ok(mut response) => {
            remove_hop_by_hop(response.headers_mut());
            response
        }
        Err(e) => upstream_failed(upstream, e),
    }
}

/// 504 for a service that took too long, 502 for one that could not be reached.
pub(crate) fn upstream_failed(upstream: &Upstream, error: UpstreamError) -> Response {
    match error {
        UpstreamError::Timeout(after) => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "The service did not answer in time",
        )
        .with_detail(format!("{} took longer than {after:?}", upstream.name()))
        .into_response(),
        e => {
            tracing::warn!(upstream = upstream.name(), error = %e, "upstream failed");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "The service behind this route is unavailable",
            )
            .with_detail(format!("{} is unreachable", upstream.name()))
            .into_response()
        }
    }
}

fn prepare_upstream_headers(
    gateway: &Gateway,
    request: &mut Request,
    peer: SocketAddr,
    identity: Option<&Identity>,
    trace: Option<&TraceParent>,
) {
    let headers = request.headers_mut();
    remove_hop_by_hop(headers);
    // The upstream's own host, set by the client from the URI.
    headers.remove(header::HOST);
    if let Some(identity) = identity {
        let assertion = gateway.identity_key.sign(identity);
        if let Ok(value) = HeaderValue::from_str(&assertion) {
            headers.insert(IDENTITY_HEADER, value);
        }
    }
    // The client's IP for the services' logs: appended to what a trusted proxy says; a
    // client's own claim is replaced.
    let earlier = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .filter(|_| gateway.limiter.is_trusted_proxy(peer.ip()));
    let forwarded = match earlier {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    // The request's trace (the client's, or the one `service_kit` started for it), as the
    // parent of the hop to the service.
    if let Some(value) = trace.and_then(|t| HeaderValue::from_str(&t.child().to_string()).ok()) {
        headers.insert(telemetry::trace::HEADER, value);
    }
}

fn strip_internal(headers: &mut HeaderMap) {
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-rewards-"))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn rate_limited(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many attempts; wait before trying again",
    )
    .with_detail(format!("retry in {seconds} s"))
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

impl Gateway {
    fn upstream(&self, owner: routes::Upstream) -> &Upstream {
        match owner {
            routes::Upstream::Auth => &self.auth,
            routes::Upstream::Event => &self.event,
            routes::Upstream::RewardFulfillment => &self.reward_fulfillment,
            routes::Upstream::Every | routes::Upstream::Overview => {
                unreachable!("answered by the gateway, not forwarded")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sent_identity_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(IDENTITY_HEADER, "forged".parse().unwrap());
        headers.insert("X-Rewards-Anything", "x".parse().unwrap());
        headers.insert("accept", "application/json".parse().unwrap());
        strip_internal(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("accept", "*/*".parse().unwrap());
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), vec!["accept"]);
    }
}
