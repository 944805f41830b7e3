//! HTTP to the services behind the gateway: a pooled hyper client per upstream, bodies
//! streamed both ways, failures told apart (unreachable -> 502, too slow -> 504).

use auth_claims::IDENTITY_HEADER;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri, uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream answered {0}")]
    Status(StatusCode),
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream answer unreadable: {0}")]
    Decode(String),
}

#[derive(Clone)]
pub struct UpstreamClient {
    name: &'static str,
    scheme: uri::Scheme,
    authority: uri::Authority,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

impl UpstreamClient {
    pub fn new(name: &'static str, base_url: &str, timeout: Duration) -> Result<Self, String> {
        let base: Uri = base_url
            .parse()
            .map_err(|e| format!("upstream {name} URL {base_url:?}: {e}"))?;
        let parts = base.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(format!(
                "upstream {name} URL {base_url:?} needs a scheme and a host"
            ));
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            name,
            scheme,
            authority,
            client,
            timeout,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }

    /// Sends `request` (its path and query kept) to this upstream; the response body streams.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        *request.uri_mut() = self.uri(&path_and_query)?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
        Ok(response.map(Body::new))
    }

    /// GET a JSON document, optionally with an identity assertion.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        identity: Option<&str>,
    ) -> Result<T, UpstreamError> {
        let mut request = Request::get(path)
            .body(Body::empty())
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        if let Some(assertion) = identity {
            let value = HeaderValue::from_str(assertion)
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            request.headers_mut().insert(IDENTITY_HEADER, value);
        }
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| UpstreamError::Decode(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Decode(e.to_string()))
    }
}

/// An error with its causes, on one line: hyper's top-level message alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
