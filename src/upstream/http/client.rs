//! The HTTP client of one upstream: its parsed URL, the shared TLS setup, and the headers every
//! request carries (`Accept`, `Content-Type` and the configured ones, which may hold secrets).

use crate::config::HttpUpstreamConfig;
use crate::tls::{TlsConfig, TlsError};
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue,
};
use secrecy::ExposeSecret;
use std::time::Duration;

/// How long to wait for a TCP connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What parsing a URL fails with (`url::ParseError`; the `url` crate comes with reqwest).
type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Why an HTTP upstream's configuration can never work.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("invalid URL {url:?}: {source}")]
    Url { url: String, source: UrlError },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A configured header that cannot be sent. Never shows the value: it may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header name {name:?}: {source}")]
    Name {
        name: String,
        source: InvalidHeaderName,
    },
    #[error("header {name}: {source}")]
    Value {
        name: HeaderName,
        source: InvalidHeaderValue,
    },
}

/// The upstream's URL (parsed once: reqwest would parse a `&str` URL again for every request)
/// and a client that sends the base headers on every request (its default headers), so that a
/// request only carries its own few.
pub(super) fn setup(
    http: &HttpUpstreamConfig,
    tls: &TlsConfig,
) -> Result<(reqwest::Url, reqwest::Client), HttpSetupError> {
    let url = reqwest::Url::parse(&http.url).map_err(|source| HttpSetupError::Url {
        url: http.url.clone(),
        source,
    })?;
    let client = tls
        .setup()?
        .http()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .default_headers(base_headers(http)?)
        .build()
        .map_err(HttpSetupError::Client)?;
    Ok((url, client))
}

/// `Accept`, `Content-Type` and the configured headers, marked sensitive (kept out of reqwest's
/// `Debug` output). A request's own headers of the same name (the protocol's) take precedence.
fn base_headers(http: &HttpUpstreamConfig) -> Result<HeaderMap, HeaderError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &http.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|source| HeaderError::Name {
            name: name.clone(),
            source,
        })?;
        let mut value =
            HeaderValue::from_str(value.expose_secret()).map_err(|source| HeaderError::Value {
                name: name.clone(),
                source,
            })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_headers_are_validated() {
        let bad = HttpUpstreamConfig {
            url: "http://127.0.0.1:1/mcp".into(),
            headers: [("bad header".to_owned(), "v".into())].into(),
        };
        assert!(base_headers(&bad).is_err());
    }
}
