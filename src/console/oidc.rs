//! OpenID Connect sign-in: the authorization code flow with PKCE, a nonce and a state bound
//! to the browser. Discovery and the JWKS are fetched from the issuer when someone signs in
//! (kept for five minutes), through the gateway's own HTTP client; redirects are not
//! followed.

use super::config::OidcConfig;
use super::identity::Claims;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::ExposeSecret as _;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long discovery and the JWKS are kept.
const METADATA_TTL: Duration = Duration::from_secs(300);
/// How long a sign-in may take at the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins under way at once.
const MAX_PENDING: usize = 1000;
/// Largest answer read from the provider.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider at {issuer} cannot be reached: {why}")]
    Unreachable { issuer: String, why: String },
    #[error("this sign-in is unknown or expired; start again")]
    UnknownState,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider's answer could not be verified: {0}")]
    Invalid(String),
}

/// A sign-in under way: what the callback must match.
struct Pending {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    /// The browser's login cookie (its SHA-256), so another browser cannot finish it.
    browser: [u8; 32],
    started: Instant,
}

pub struct Oidc {
    config: OidcConfig,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: Mutex<Option<(CoreProviderMetadata, Instant)>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// An HTTP failure talking to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Oidc {
    pub fn new(config: OidcConfig, redirect: &str, http: reqwest::Client) -> anyhow::Result<Self> {
        Ok(Oidc {
            redirect: RedirectUrl::new(redirect.to_owned())?,
            config,
            http,
            metadata: Mutex::default(),
            pending: Mutex::default(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Where to send the browser to sign in, for the browser holding login cookie `browser`.
    pub async fn start(&self, browser: &str) -> Result<String, OidcError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let pending = Pending {
            nonce,
            verifier,
            browser: digest(browser),
            started: Instant::now(),
        };
        let mut all = self.pending.lock().expect("pending lock");
        all.retain(|_, p| p.started.elapsed() < PENDING_TTL);
        if all.len() >= MAX_PENDING {
            return Err(OidcError::Refused(
                "too many sign-ins under way; try again in a minute".into(),
            ));
        }
        all.insert(state.secret().clone(), pending);
        Ok(url.to_string())
    }

    /// Finishes a sign-in: the state must be one this browser started, the code is exchanged
    /// (with the PKCE verifier) and the ID token verified (signature against the JWKS, issuer,
    /// audience, expiry, nonce).
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        browser: &str,
    ) -> Result<Claims, OidcError> {
        let pending = {
            let mut all = self.pending.lock().expect("pending lock");
            all.remove(state)
                .filter(|p| p.started.elapsed() < PENDING_TTL && p.browser == digest(browser))
                .ok_or(OidcError::UnknownState)?
        };
        let client = self.client().await?;
        let http = self.http_client();
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Invalid(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&http)
            .await
            .map_err(|e| OidcError::Refused(explain(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| OidcError::Invalid("no ID token in the answer".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &pending.nonce)
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        let email = claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            .map(|e| e.to_string());
        Ok(Claims {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email,
            groups: groups(&id_token.to_string(), &self.config.groups_claim),
        })
    }

    async fn client(&self) -> Result<OidcClient, OidcError> {
        let metadata = self.metadata().await?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Discovery and the JWKS, fetched again when older than five minutes or after a failure.
    async fn metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        if let Some((metadata, at)) = &*self.metadata.lock().expect("metadata lock")
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let unreachable = |why: String| OidcError::Unreachable {
            issuer: self.config.issuer.clone(),
            why,
        };
        let issuer =
            IssuerUrl::new(self.config.issuer.clone()).map_err(|e| unreachable(e.to_string()))?;
        let http = self.http_client();
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| unreachable(explain(&e)))?;
        *self.metadata.lock().expect("metadata lock") = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    fn http_client(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> futures::future::BoxFuture<
        'static,
        Result<openidconnect::HttpResponse, HttpError>,
    > {
        let client = self.http.clone();
        move |request| {
            let client = client.clone();
            Box::pin(async move { send(&client, request).await })
        }
    }
}

type OidcClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// One request to the provider through reqwest, its answer read up to [`MAX_BODY`].
async fn send(
    client: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(crate::tls::explain(&e)))?;
    let mut out = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(HttpError("the answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    out.body(body).map_err(|e| HttpError(e.to_string()))
}

/// The error and its causes on one line.
fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn digest(value: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(value.as_bytes()).into()
}

/// The string list under `claim` in a JWT's payload. Read only after the token was verified
/// (the same bytes the signature covers).
fn groups(jwt: &str, claim: &str) -> Vec<String> {
    let payload = jwt
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match payload.as_ref().and_then(|p| p.get(claim)) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_come_from_the_configured_claim() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","roles":["a","b"],"groups":"solo"}"#);
        let jwt = format!("e30.{payload}.sig");
        assert_eq!(super::groups(&jwt, "roles"), ["a", "b"]);
        assert_eq!(super::groups(&jwt, "groups"), ["solo"]);
        assert!(super::groups(&jwt, "none").is_empty());
    }
}
