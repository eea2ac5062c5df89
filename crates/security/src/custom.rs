//! Custom authentication: the client's credentials are POSTed to an HTTPS server speaking the
//! AIO custom-auth API (the public `auth-server-template` sample, API version 0.5.0), which
//! admits (200, with attributes and an optional credential expiry) or refuses (403).
//!
//! A server that cannot be reached — connection refused, TLS failure, timeout, any other
//! status — makes the method *not relevant*, so the chain falls through to the next method,
//! as the AIO broker does; it is logged at warn so the outage is visible.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use edgemq_codec::ReasonCode;
use edgemq_core::auth::{Admission, BoxFuture, ConnectRequest, RequestKind};

use crate::{Method, Outcome};

/// The API version edgemq speaks first; a 422 answer may name others.
pub const API_VERSION: &str = "0.5.0";

#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    #[error("endpoint {0:?}: must be an https:// URL")]
    NotHttps(String),
    #[error("CA certificates: {0}")]
    Ca(String),
    #[error("client certificate: {0}")]
    ClientCert(String),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// How to reach the server.
#[derive(Clone)]
pub struct CustomSettings {
    /// `https://…`.
    pub endpoint: String,
    /// Trusted CA certificates (PEM) for the server; `None` = the system's roots.
    pub ca_pem: Option<String>,
    /// (certificate chain PEM, private key PEM) presented to the server (mTLS).
    pub client_cert: Option<(String, String)>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for CustomSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomSettings")
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The `Custom` method.
pub struct CustomMethod {
    endpoint: String,
    url: reqwest::Url,
    client: reqwest::Client,
    headers: Vec<(String, String)>,
    /// The API version the server accepted last (after a 422 negotiation).
    version: Mutex<String>,
}

#[derive(Serialize)]
struct AuthRequest<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certs: Option<String>,
    #[serde(
        rename = "enhancedAuthentication",
        skip_serializing_if = "Option::is_none"
    )]
    enhanced: Option<Enhanced<'a>>,
}

#[derive(Serialize)]
struct Enhanced<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

#[derive(Deserialize)]
struct Admitted {
    #[serde(default)]
    expiry: Option<String>,
    attributes: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Refused {
    #[serde(default)]
    reason: Option<u8>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Versions {
    #[serde(rename = "supportedVersions")]
    supported: Vec<String>,
}

impl CustomMethod {
    pub fn new(settings: CustomSettings) -> Result<Self, CustomError> {
        if !settings.endpoint.starts_with("https://") {
            return Err(CustomError::NotHttps(settings.endpoint));
        }
        let url = reqwest::Url::parse(&settings.endpoint)
            .map_err(|e| CustomError::Client(format!("endpoint {:?}: {e}", settings.endpoint)))?;
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if settings.ca_pem.is_some() || settings.client_cert.is_some() {
            builder = builder.use_preconfigured_tls(tls_config(&settings)?);
        }
        let client = builder
            .build()
            .map_err(|e| CustomError::Client(e.to_string()))?;
        Ok(CustomMethod {
            endpoint: settings.endpoint,
            url,
            client,
            headers: settings.headers,
            version: Mutex::new(API_VERSION.to_string()),
        })
    }

    async fn call(&self, request: &ConnectRequest<'_>) -> Outcome {
        let body = AuthRequest {
            kind: match request.kind {
                RequestKind::Connect => "connect",
                RequestKind::Reauthenticate => "auth",
            },
            username: request.username,
            password: request.password.map(|p| STANDARD.encode(p)),
            certs: (!request.client_certificates.is_empty()).then(|| {
                request
                    .client_certificates
                    .iter()
                    .map(|der| pem("CERTIFICATE", der))
                    .collect()
            }),
            enhanced: request.authentication_method.map(|method| Enhanced {
                method,
                data: request.authentication_data.map(|d| STANDARD.encode(d)),
            }),
        };
        let mut version = self.version.lock().clone();
        // At most one renegotiation of the API version per call.
        for attempt in 0..2 {
            let mut url = self.url.clone();
            url.query_pairs_mut().append_pair("api-version", &version);
            let mut post = self.client.post(url).json(&body);
            for (k, v) in &self.headers {
                post = post.header(k, v);
            }
            let response = match post.send().await {
                Ok(r) => r,
                Err(e) => return self.unreachable(error_chain(&e)),
            };
            let status = response.status().as_u16();
            match status {
                200 => return self.admitted(request, response.bytes().await),
                403 => {
                    let refused: Refused = response
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b: bytes::Bytes| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    let reason = match refused.reason {
                        Some(code) if code >= 0x80 => ReasonCode(code),
                        _ => ReasonCode::NotAuthorized,
                    };
                    return Outcome::refuse(
                        reason,
                        format!(
                            "custom auth server refused: {}",
                            refused.message.as_deref().unwrap_or("(no message)")
                        ),
                    );
                }
                422 if attempt == 0 => {
                    let offered: Option<Versions> = response
                        .bytes()
                        .await
                        .ok()
                        .and_then(|b: bytes::Bytes| serde_json::from_slice(&b).ok());
                    let Some(next) = offered.and_then(|v| highest(&v.supported)) else {
                        return self.unreachable(
                            "422 without a usable supportedVersions list".to_string(),
                        );
                    };
                    tracing::info!(endpoint = %self.endpoint, from = %version, to = %next, "custom auth server asks for another API version");
                    version = next;
                    *self.version.lock() = version.clone();
                }
                other => return self.unreachable(format!("HTTP status {other}")),
            }
        }
        self.unreachable("API version negotiation failed".to_string())
    }

    fn admitted(
        &self,
        request: &ConnectRequest<'_>,
        body: Result<bytes::Bytes, reqwest::Error>,
    ) -> Outcome {
        let parsed: Result<Admitted, String> = body
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
        let admitted = match parsed {
            Ok(a) => a,
            Err(e) => return self.unreachable(format!("200 with an unusable body: {e}")),
        };
        let expires_at = match admitted.expiry.as_deref().map(parse_rfc3339) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => return self.unreachable(format!("200 with a bad expiry: {e}")),
        };
        Outcome::Admit(Admission {
            attributes: admitted.attributes.into_iter().collect(),
            username: None,
            expires_at,
            authentication_method: request.authentication_method.map(str::to_string),
        })
    }

    fn unreachable(&self, why: String) -> Outcome {
        tracing::warn!(endpoint = %self.endpoint, "custom auth server unavailable ({why}); trying the next method");
        Outcome::not_relevant(format!(
            "custom auth server {} unavailable: {why}",
            self.endpoint
        ))
    }
}

/// The highest version string (compared numerically by dotted parts).
fn highest(versions: &[String]) -> Option<String> {
    let key = |v: &String| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    versions.iter().max_by_key(|v| key(v)).cloned()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{text:?}: {e}"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A rustls client config trusting `ca_pem` (or the bundled web roots when only a client
/// certificate is configured) and presenting the client certificate.
fn tls_config(settings: &CustomSettings) -> Result<rustls::ClientConfig, CustomError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| CustomError::Ca(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| CustomError::Ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(CustomError::Ca("no certificate in the bundle".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CustomError::Client(e.to_string()))?
        .with_root_certificates(roots);
    match &settings.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => {
            let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CustomError::ClientCert(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| CustomError::ClientCert(e.to_string()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| CustomError::ClientCert(e.to_string()))
        }
    }
}

impl Method for CustomMethod {
    fn name(&self) -> &'static str {
        "Custom"
    }

    fn check<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.call(request))
    }
}
