//! Custom authentication: the client's credentials are POSTed to an HTTPS server speaking the
//! AIO custom-auth API (the public `auth-server-template` sample, API version 0.5.0), which
//! admits (200, with attributes and an optional credential expiry) or refuses (403).
//!
//! A server that cannot be reached — connection refused, TLS failure, timeout, any other
//! status, a 200 without the required `attributes` — makes the method *not relevant*, so the
//! chain falls through to the next method, as the AIO broker does; it is logged at warn
//! (naming the endpoint and the failure) so the outage is visible.
//!
//! TLS is rustls with the aws-lc-rs provider. The server is verified against the configured
//! CA bundle only (not the system roots as well); without one, against the system's trust
//! store (rustls-platform-verifier), as the spec says.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use edgemq_codec::ReasonCode;
use edgemq_core::auth::{Admission, BoxFuture, ConnectRequest, RequestKind};

use crate::{Method, Outcome};

/// The API version edgemq speaks first; a 422 answer may name others.
pub const API_VERSION: &str = "0.5.0";

/// The timeout of one call when the configuration names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest answer body read from the server; a longer one counts as a broken server.
const MAX_BODY: usize = 64 * 1024;

/// Longest server `message` quoted in a refusal's log line.
const MAX_MESSAGE: usize = 256;

/// The MQTT 5 CONNACK reason codes that refuse a connection ([MQTT-3.2.2.2]).
const CONNACK_REFUSALS: [u8; 21] = [
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99,
    0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    #[error("endpoint {0:?}: must be an https:// URL")]
    NotHttps(String),
    #[error("endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("CA certificates: {0}")]
    Ca(String),
    #[error("client certificate: {0}")]
    ClientCert(String),
    /// An extra header that HTTP cannot carry (the value is never shown).
    #[error("header {0:?}: {1}")]
    Header(String, String),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// How to reach the server.
#[derive(Clone)]
pub struct CustomSettings {
    /// `https://…`.
    pub endpoint: String,
    /// Trusted CA certificates (PEM) for the server; `None` = the bundled Mozilla roots.
    pub ca_pem: Option<String>,
    /// (certificate chain PEM, private key PEM) presented to the server (mTLS).
    pub client_cert: Option<(String, String)>,
    /// Extra request headers (values may be secrets: never logged).
    pub headers: Vec<(String, String)>,
    /// Per request (connecting, TLS, answer); [`DEFAULT_TIMEOUT`] is the usual value.
    pub timeout: Duration,
}

impl std::fmt::Debug for CustomSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomSettings")
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &self.ca_pem.is_some())
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|_| "<redacted>"),
            )
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
    /// The endpoint without any user info, for logs.
    endpoint: String,
    url: reqwest::Url,
    client: reqwest::Client,
    headers: HeaderMap,
    /// The API version the server accepted last (after a 422 negotiation).
    version: Mutex<String>,
}

impl std::fmt::Debug for CustomMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomMethod")
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("version", &*self.version.lock())
            .finish_non_exhaustive()
    }
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
    attributes: BTreeMap<String, String>,
}

/// A 403 body, read leniently: a refusal stands even when its body is odd.
#[derive(Deserialize, Default)]
struct Refused {
    #[serde(default)]
    reason: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Versions {
    #[serde(rename = "supportedVersions")]
    supported: Vec<String>,
}

impl CustomMethod {
    pub fn new(settings: CustomSettings) -> Result<Self, CustomError> {
        let url = reqwest::Url::parse(&settings.endpoint).map_err(|e| {
            CustomError::Endpoint(redact_url_text(&settings.endpoint), e.to_string())
        })?;
        if url.scheme() != "https" {
            return Err(CustomError::NotHttps(redact_url_text(&settings.endpoint)));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(CustomError::Endpoint(
                redact_url_text(&settings.endpoint),
                "no host".into(),
            ));
        }
        let mut shown = url.clone();
        // Both only fail for URLs that cannot have user info, which an https URL can.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let endpoint = shown.to_string();
        let headers = header_map(&settings.headers)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(&settings)?)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CustomError::Client(crate::https::error_chain(&e.without_url())))?;
        Ok(CustomMethod {
            endpoint,
            url,
            client,
            headers,
            version: Mutex::new(API_VERSION.to_string()),
        })
    }

    /// The API version the next call uses.
    pub fn api_version(&self) -> String {
        self.version.lock().clone()
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
        let mut version = self.api_version();
        // At most one renegotiation of the API version per call.
        for attempt in 0..2 {
            let mut url = self.url.clone();
            url.query_pairs_mut().append_pair("api-version", &version);
            let response = match self
                .client
                .post(url)
                .headers(self.headers.clone())
                .json(&body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return self.unreachable(crate::https::error_chain(&e.without_url())),
            };
            match response.status().as_u16() {
                200 => {
                    return match read_body(response).await {
                        Ok(body) => self.admitted(request, &body),
                        Err(e) => self.unreachable(format!("200 with an unreadable body: {e}")),
                    };
                }
                403 => {
                    let refused: Refused = read_body(response)
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    return refusal(refused);
                }
                422 if attempt == 0 => {
                    let offered = read_body(response)
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Versions>(&b).ok());
                    let Some(next) = offered.and_then(|v| highest(&v.supported)) else {
                        return self.unreachable(format!(
                            "HTTP status 422 for API version {version} without a usable supportedVersions list"
                        ));
                    };
                    if next == version {
                        return self.unreachable(format!(
                            "HTTP status 422 for API version {version}, which it lists as supported"
                        ));
                    }
                    tracing::info!(endpoint = %self.endpoint, from = %version, to = %next, "custom auth server asks for another API version");
                    *self.version.lock() = next.clone();
                    version = next;
                }
                other => {
                    return self
                        .unreachable(format!("HTTP status {other} for API version {version}"))
                }
            }
        }
        self.unreachable("API version negotiation failed".to_string())
    }

    fn admitted(&self, request: &ConnectRequest<'_>, body: &[u8]) -> Outcome {
        let admitted: Admitted = match serde_json::from_slice(body) {
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

/// A 403: the server's reason when it is a CONNACK refusal code, else 0x87 Not authorized.
fn refusal(refused: Refused) -> Outcome {
    let reason = refused
        .reason
        .as_ref()
        .and_then(serde_json::Value::as_u64)
        .and_then(|code| u8::try_from(code).ok())
        .filter(|code| CONNACK_REFUSALS.contains(code))
        .map_or(ReasonCode::NotAuthorized, ReasonCode);
    let message = match refused.message {
        Some(serde_json::Value::String(s)) => printable(&s),
        Some(serde_json::Value::Null) | None => "(no message)".to_string(),
        Some(other) => printable(&other.to_string()),
    };
    Outcome::refuse(reason, format!("custom auth server refused: {message}"))
}

/// The server's text, safe for one log line: no control characters, bounded length.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if text.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// The body, at most [`MAX_BODY`] bytes.
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::https::error_chain(&e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("longer than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, CustomError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CustomError::Header(name.clone(), "not a valid header name".into()))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            CustomError::Header(
                name.clone(),
                "the value has characters a header cannot carry".into(),
            )
        })?;
        // Extra headers usually carry credentials: keep them out of HTTP-level debug output.
        value.set_sensitive(true);
        map.append(key, value);
    }
    Ok(map)
}

/// An endpoint text for an error message, without what could be user info.
fn redact_url_text(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => match rest.split(['/', '?', '#']).next() {
            Some(authority) if authority.contains('@') => {
                let host = authority.rsplit('@').next().unwrap_or_default();
                format!("{scheme}://<redacted>@{host}{}", &rest[authority.len()..])
            }
            _ => text.to_string(),
        },
        None => text.to_string(),
    }
}

/// The highest version string (compared numerically by dotted parts).
fn highest(versions: &[String]) -> Option<String> {
    let key = |v: &String| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    versions
        .iter()
        .filter(|v| !v.is_empty())
        .max_by_key(|v| key(v))
        .cloned()
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

/// A rustls client config trusting `ca_pem` only (or the system's trust store without one)
/// and presenting the client certificate when one is configured.
fn tls_config(settings: &CustomSettings) -> Result<rustls::ClientConfig, CustomError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let builder = crate::https::trusting(settings.ca_pem.as_deref()).map_err(CustomError::Ca)?;
    let mut config = match &settings.client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CustomError::ClientCert(e.to_string()))?;
            if certs.is_empty() {
                return Err(CustomError::ClientCert(
                    "no certificate in the chain".into(),
                ));
            }
            // The error names the PEM problem, never the key material.
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| CustomError::ClientCert(format!("private key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| CustomError::ClientCert(e.to_string()))?
        }
    };
    // reqwest is built without HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Method for CustomMethod {
    fn name(&self) -> &'static str {
        "Custom"
    }

    fn check<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_version_is_preferred() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            highest(&v(&["0.4.0", "0.10.0", "0.6.0"])).as_deref(),
            Some("0.10.0")
        );
        assert_eq!(highest(&v(&[])), None);
        assert_eq!(highest(&v(&[""])), None);
    }

    #[test]
    fn refusal_reasons_are_connack_refusals_or_not_authorized() {
        let refuse = |reason: serde_json::Value| match refusal(Refused {
            reason: Some(reason),
            message: None,
        }) {
            Outcome::Refuse { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(refuse(134.into()), ReasonCode::BadUserNameOrPassword);
        assert_eq!(refuse(0x8A.into()), ReasonCode::Banned);
        // Not CONNACK codes, not refusals, not numbers.
        for bad in [
            0x8E.into(),
            0x10.into(),
            300.into(),
            (-1).into(),
            "134".into(),
        ] {
            assert_eq!(refuse(bad), ReasonCode::NotAuthorized);
        }
    }

    #[test]
    fn refusal_messages_are_one_bounded_line() {
        let long = "x".repeat(1000);
        let Outcome::Refuse { why, .. } = refusal(Refused {
            reason: None,
            message: Some(format!("evil\nline {long}").into()),
        }) else {
            panic!()
        };
        assert!(!why.contains('\n'), "{why}");
        assert!(why.chars().count() < 300, "{why}");
    }

    #[test]
    fn user_info_is_redacted_from_endpoint_errors() {
        assert_eq!(
            redact_url_text("http://user:pw@auth:8443/x?y"),
            "http://<redacted>@auth:8443/x?y"
        );
        assert_eq!(redact_url_text("https://auth/a@b"), "https://auth/a@b");
        assert_eq!(redact_url_text("auth"), "auth");
    }
}
