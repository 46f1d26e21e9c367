//! The gateway's one TLS client setup, for `https://` upstreams and chat servers (and `wss://`
//! websockets): rustls with the ring provider, trusting the system's CA certificates plus any the
//! operator names in `tls.ca_files` (a private CA in an air-gapped site).
//!
//! Built at start-up from the configuration, once, when an `https://` upstream or a chat server
//! needs it, and shared by every client built from it ([`TlsConfig::setup`]).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// `tls:` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM files of CA certificates to trust besides the system's (resolved against the config
    /// file's directory).
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// The setup built from this section (upstreams and chat backends share it).
    #[serde(skip)]
    built: OnceLock<Tls>,
}

impl TlsConfig {
    pub fn with_ca_files(ca_files: Vec<PathBuf>) -> Self {
        TlsConfig {
            ca_files,
            built: OnceLock::new(),
        }
    }

    /// The TLS setup for this configuration, built (the CA certificates read) on first use.
    pub fn setup(&self) -> Result<Tls, TlsError> {
        if let Some(tls) = self.built.get() {
            return Ok(tls.clone());
        }
        let tls = Tls::new(self)?;
        Ok(self.built.get_or_init(|| tls).clone())
    }
}

/// A TLS setup that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.ca_files: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.ca_files: {path} holds no usable CA certificate ({reason})")]
    Certificate { path: PathBuf, reason: String },
}

/// The shared client configuration; cheap to clone.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// Why no server can be trusted, when neither the system nor `tls.ca_files` gave a CA.
    untrusting: Option<Arc<str>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("untrusting", &self.untrusting)
            .finish_non_exhaustive()
    }
}

/// Makes ring the process's rustls provider, for HTTP clients built without a [`Tls`] (tests,
/// the telemetry exporter). Idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Tls {
    pub fn new(config: &TlsConfig) -> Result<Tls, TlsError> {
        install_provider();
        let extra = config
            .ca_files
            .iter()
            .map(read_certificates)
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (verifier, untrusting): (Arc<dyn ServerCertVerifier>, _) =
            match rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            {
                Ok(verifier) => (Arc::new(verifier), None),
                Err(e) => {
                    let why: Arc<str> = format!(
                        "no CA certificate to trust ({e}): install the system's CA certificates \
                         or name a CA in tls.ca_files"
                    )
                    .into();
                    (Arc::new(TrustNobody(why.clone())), Some(why))
                }
            };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
            untrusting,
        })
    }

    /// An HTTP client builder using this setup (HTTP/2 offered over TLS).
    pub fn http(&self) -> reqwest::ClientBuilder {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder().tls_backend_preconfigured(config)
    }

    /// A default HTTP client using this setup.
    pub fn client(&self) -> reqwest::Client {
        self.http()
            .build()
            .expect("an HTTP client with a built TLS configuration builds")
    }

    /// The connector for `wss://` websockets (HTTP/1.1 upgrade, so no ALPN).
    pub fn websocket(&self) -> tokio_tungstenite::Connector {
        tokio_tungstenite::Connector::Rustls(self.config.clone())
    }

    /// Checks at start-up that `field`'s `url` can be reached: `http://`, or `https://` when some
    /// CA is trusted.
    pub fn check_url(&self, field: &str, url: &str) -> anyhow::Result<()> {
        if url.starts_with("https://") {
            if let Some(why) = &self.untrusting {
                anyhow::bail!("{field} {url:?} cannot be verified: {why}");
            }
            return Ok(());
        }
        if !url.starts_with("http://") {
            anyhow::bail!("{field} must be an http:// or https:// URL, got {url:?}");
        }
        Ok(())
    }
}

/// An HTTP error with all its causes, so that a refused certificate says why (reqwest's own
/// message stops at "error sending request").
pub fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    if text.contains("invalid peer certificate") {
        text.push_str(" (a server with a private CA needs that CA in tls.ca_files)");
    }
    text
}

fn read_certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.clone(),
        source,
    })?;
    let invalid = |reason: String| TlsError::Certificate {
        path: path.clone(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no BEGIN CERTIFICATE block".into()));
    }
    Ok(certificates)
}

/// Refuses every server, saying why: what `https://` gets when no CA is trusted at all.
#[derive(Debug)]
struct TrustNobody(Arc<str>);

impl ServerCertVerifier for TrustNobody {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(self.0.to_string()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.0.to_string()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.0.to_string()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https() {
        let tls = Tls::new(&TlsConfig::default()).unwrap();
        assert!(
            tls.check_url("chat.slack.api_base", "http://127.0.0.1:8080/api")
                .is_ok()
        );
        let bad = tls.check_url("chat.webhook.url", "ftp://x").unwrap_err();
        assert!(bad.to_string().contains("chat.webhook.url"), "{bad}");
    }

    #[test]
    fn one_configuration_builds_one_setup() {
        let config = TlsConfig::default();
        let (a, b) = (config.setup().unwrap(), config.setup().unwrap());
        assert!(Arc::ptr_eq(&a.config, &b.config));
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let config = TlsConfig::with_ca_files(vec![path.clone()]);
        let error = Tls::new(&config).unwrap_err().to_string();
        assert!(
            error.contains("ca.pem") && error.contains("no usable CA"),
            "{error}"
        );
        let missing = TlsConfig::with_ca_files(vec![dir.path().join("absent.pem")]);
        assert!(
            Tls::new(&missing)
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}
