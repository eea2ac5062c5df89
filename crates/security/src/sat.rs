//! Kubernetes service account tokens (`ServiceAccountToken`): the MQTT user name `$sat` (or
//! a `sat://` prefix) with the token as password, or MQTT 5 enhanced authentication with
//! method `K8S-SAT` and the token as authentication data.
//!
//! A token is valid when it is a JWT whose audience includes a configured one, that has not
//! expired, and whose signature verifies — through the Kubernetes TokenReview API (inside a
//! cluster, or with a kubeconfig) or offline against a JWKS (a document, or an OIDC issuer's
//! `jwks_uri`) for brokers outside the cluster. Expiry and audience are checked locally
//! first, so a stale token costs no API call.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::Deserialize;

use edgemq_codec::ReasonCode;
use edgemq_core::auth::{Admission, BoxFuture, ConnectRequest};

use crate::{Method, Outcome};

/// The MQTT 5 enhanced authentication method name.
pub const K8S_SAT: &str = "K8S-SAT";
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);
const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum SatError {
    #[error("not running in a Kubernetes cluster (KUBERNETES_SERVICE_HOST is not set)")]
    NotInCluster,
    #[error("{path}: {error}")]
    File { path: String, error: String },
    #[error("kubeconfig {path}: {error}")]
    Kubeconfig { path: String, error: String },
    #[error("JWKS: {0}")]
    Jwks(String),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// How token signatures are verified.
pub enum SatVerifier {
    TokenReview(TokenReviewClient),
    Jwks(JwksSource),
    /// No way to verify tokens here (e.g. in-cluster review outside a cluster): every token
    /// is refused with 0x88 and this reason, and the other methods keep working.
    Unavailable(String),
}

impl SatVerifier {
    /// TokenReview with the pod's own service account; outside a cluster, `Unavailable`
    /// with the reason and the fix (the text `check` reports and `serve` logs).
    pub fn in_cluster() -> SatVerifier {
        match TokenReviewClient::in_cluster() {
            Ok(client) => SatVerifier::TokenReview(client),
            Err(e) => SatVerifier::Unavailable(format!(
                "cannot verify service account tokens: {e}; every token will be refused; \
                 set serviceAccountTokenSettings.kubeconfig, jwksConfigMap or issuer"
            )),
        }
    }
}

/// The `ServiceAccountToken` method.
pub struct SatMethod {
    audiences: Vec<String>,
    verifier: SatVerifier,
}

impl SatMethod {
    pub fn new(audiences: Vec<String>, verifier: SatVerifier) -> Self {
        SatMethod {
            audiences,
            verifier,
        }
    }

    async fn verify(&self, request: &ConnectRequest<'_>) -> Outcome {
        let enhanced = request.authentication_method == Some(K8S_SAT);
        let token = if enhanced {
            request.authentication_data
        } else {
            match request.username {
                Some(u) if u == "$sat" || u.starts_with("sat://") => request.password,
                _ => return Outcome::not_relevant("no $sat user name and no K8S-SAT method"),
            }
        };
        let Some(token) = token.and_then(|t| std::str::from_utf8(t).ok()) else {
            return bad("no token (or not UTF-8)");
        };
        let claims = match unverified_claims(token) {
            Ok(c) => c,
            Err(why) => return bad(&why),
        };
        let now = unix_now();
        let Some(exp) = claims.exp else {
            return bad("token has no exp claim");
        };
        if exp + LEEWAY.as_secs() <= now {
            return bad(&format!("token expired at {}", rfc3339(exp)));
        }
        if let Some(nbf) = claims.nbf {
            if nbf > now + LEEWAY.as_secs() {
                return bad(&format!("token not valid before {}", rfc3339(nbf)));
            }
        }
        let audiences = claims.aud.clone().into_vec();
        if !audiences.iter().any(|a| self.audiences.contains(a)) {
            return bad(&format!(
                "token audience {audiences:?} is not one of {:?}",
                self.audiences
            ));
        }
        let verified = match &self.verifier {
            SatVerifier::Jwks(jwks) => jwks.verify(token, &self.audiences).await,
            SatVerifier::TokenReview(review) => review.review(token, &self.audiences).await,
            SatVerifier::Unavailable(why) => Verified::Unavailable(why.clone()),
        };
        match verified {
            Verified::Yes => Outcome::Admit(Admission {
                // Service account annotations are not readable from the token itself.
                attributes: Vec::new(),
                username: None,
                expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp)),
                authentication_method: enhanced.then(|| K8S_SAT.to_string()),
            }),
            Verified::No(why) => bad(&why),
            // Unlike a Custom server, the token reviewer is not a method of its own: when
            // it cannot answer, a token cannot be trusted, so the client is refused (and
            // may retry) rather than passed to the next method.
            Verified::Unavailable(why) => Outcome::refuse(ReasonCode::ServerUnavailable, why),
        }
    }
}

fn bad(why: &str) -> Outcome {
    Outcome::refuse(
        ReasonCode::BadUserNameOrPassword,
        format!("service account token: {why}"),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

enum Verified {
    Yes,
    No(String),
    Unavailable(String),
}

#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a],
            Audience::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Debug)]
struct Claims {
    exp: Option<u64>,
    nbf: Option<u64>,
    aud: Audience,
}

/// The claims, read without checking the signature (only to refuse early).
fn unverified_claims(token: &str) -> Result<Claims, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("not a JWT (expected header.payload.signature)".into());
    }
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|_| "JWT payload is not base64url".to_string())?;
    serde_json::from_slice(&payload).map_err(|e| format!("JWT claims: {e}"))
}

// ---------------------------------------------------------------------------------------
// JWKS
// ---------------------------------------------------------------------------------------

/// Keys for offline verification: a fixed JWKS document, or an OIDC issuer's.
pub struct JwksSource {
    fixed: Option<JwkSet>,
    issuer: Option<IssuerKeys>,
}

struct IssuerKeys {
    issuer: String,
    client: reqwest::Client,
    cached: Mutex<Option<(JwkSet, Instant)>>,
}

impl JwksSource {
    /// A JWKS document (`{"keys": [...]}`), e.g. from a config map.
    pub fn from_json(text: &str) -> Result<Self, SatError> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| SatError::Jwks(e.to_string()))?;
        if set.keys.is_empty() {
            return Err(SatError::Jwks("no keys".into()));
        }
        Ok(JwksSource {
            fixed: Some(set),
            issuer: None,
        })
    }

    /// An OIDC issuer (`https://…`): keys from its discovery document's `jwks_uri`, fetched
    /// when first needed and again (at most once a minute) for an unknown key id.
    pub fn issuer(url: &str, ca_pem: Option<&str>) -> Result<Self, SatError> {
        Ok(JwksSource {
            fixed: None,
            issuer: Some(IssuerKeys {
                issuer: url.trim_end_matches('/').to_string(),
                client: http_client(ca_pem)?,
                cached: Mutex::new(None),
            }),
        })
    }

    async fn keys(&self, refresh: bool) -> Result<JwkSet, String> {
        if let Some(set) = &self.fixed {
            return Ok(set.clone());
        }
        let Some(issuer) = &self.issuer else {
            return Err("no keys configured".into());
        };
        if let Some((set, at)) = issuer.cached.lock().as_ref() {
            if !refresh || at.elapsed() < Duration::from_secs(60) {
                return Ok(set.clone());
            }
        }
        let discovery = format!("{}/.well-known/openid-configuration", issuer.issuer);
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let doc: Discovery = get_json(&issuer.client, &discovery).await?;
        let set: JwkSet = get_json(&issuer.client, &doc.jwks_uri).await?;
        *issuer.cached.lock() = Some((set.clone(), Instant::now()));
        Ok(set)
    }

    async fn verify(&self, token: &str, audiences: &[String]) -> Verified {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(e) => return Verified::No(format!("JWT header: {e}")),
        };
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Verified::No(format!(
                "algorithm {:?} is not accepted (RS256, ES256)",
                header.alg
            ));
        }
        let mut refreshed = false;
        loop {
            let set = match self.keys(refreshed).await {
                Ok(s) => s,
                Err(e) => return Verified::Unavailable(format!("JWKS unavailable: {e}")),
            };
            let candidates: Vec<&Jwk> = match &header.kid {
                Some(kid) => set.find(kid).into_iter().collect(),
                None => set.keys.iter().collect(),
            };
            if candidates.is_empty() && !refreshed && self.issuer.is_some() {
                refreshed = true;
                continue;
            }
            if candidates.is_empty() {
                return Verified::No(format!("no key with id {:?}", header.kid));
            }
            let mut validation = Validation::new(header.alg);
            validation.set_audience(audiences);
            validation.leeway = LEEWAY.as_secs();
            validation.validate_nbf = true;
            let mut last = String::from("no usable key");
            for jwk in candidates {
                let key = match DecodingKey::from_jwk(jwk) {
                    Ok(k) => k,
                    Err(e) => {
                        last = format!("key: {e}");
                        continue;
                    }
                };
                match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
                    Ok(_) => return Verified::Yes,
                    Err(e) => last = format!("{e}"),
                }
            }
            return Verified::No(last);
        }
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::https::error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP status {}", response.status().as_u16()));
    }
    let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// An HTTPS client trusting `ca_pem` only (or the system's trust store).
fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, SatError> {
    let config = crate::https::trusting(ca_pem)
        .map_err(|e| SatError::Client(format!("CA: {e}")))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SatError::Client(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// TokenReview
// ---------------------------------------------------------------------------------------

/// The Kubernetes TokenReview API of one cluster, called with the broker's own credentials.
pub struct TokenReviewClient {
    url: String,
    client: reqwest::Client,
    bearer: String,
}

impl std::fmt::Debug for TokenReviewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TokenReviewClient {
    /// `server`: the API server URL (`https://host:port`).
    pub fn new(server: &str, ca_pem: Option<&str>, bearer_token: String) -> Result<Self, SatError> {
        Ok(TokenReviewClient {
            url: format!(
                "{}/apis/authentication.k8s.io/v1/tokenreviews",
                server.trim_end_matches('/')
            ),
            client: http_client(ca_pem)?,
            bearer: bearer_token,
        })
    }

    /// Inside a pod: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, the pod's
    /// service account token and CA.
    pub fn in_cluster() -> Result<Self, SatError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| SatError::NotInCluster)?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let read = |name: &str| {
            let path = format!("{IN_CLUSTER_DIR}/{name}");
            std::fs::read_to_string(&path).map_err(|e| SatError::File {
                path,
                error: e.to_string(),
            })
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Self::new(
            &format!("https://{host}:{port}"),
            Some(&read("ca.crt")?),
            read("token")?.trim().to_string(),
        )
    }

    /// The cluster and user of a kubeconfig's current context (token credentials).
    pub fn from_kubeconfig(path: &Path) -> Result<Self, SatError> {
        let shown = path.display().to_string();
        let fail = |error: String| SatError::Kubeconfig {
            path: shown.clone(),
            error,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let config: Kubeconfig = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let current = config
            .current_context
            .clone()
            .ok_or_else(|| fail("no current-context".into()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == current)
            .ok_or_else(|| fail(format!("context {current:?} not found")))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.context.cluster)
            .ok_or_else(|| fail(format!("cluster {:?} not found", context.context.cluster)))?;
        let user = config
            .users
            .iter()
            .find(|u| u.name == context.context.user)
            .ok_or_else(|| fail(format!("user {:?} not found", context.context.user)))?;
        let ca = match (
            &cluster.cluster.certificate_authority_data,
            &cluster.cluster.certificate_authority,
        ) {
            (Some(data), _) => Some(
                String::from_utf8(
                    STANDARD
                        .decode(data.trim())
                        .map_err(|e| fail(format!("certificate-authority-data: {e}")))?,
                )
                .map_err(|e| fail(format!("certificate-authority-data: {e}")))?,
            ),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| fail(format!("certificate-authority {file}: {e}")))?,
            ),
            (None, None) => None,
        };
        let token = match (&user.user.token, &user.user.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| fail(format!("tokenFile {file}: {e}")))?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(fail(format!(
                    "user {:?} has no token (only token credentials are supported)",
                    user.name
                )))
            }
        };
        Self::new(&cluster.cluster.server, ca.as_deref(), token)
    }

    async fn review(&self, token: &str, audiences: &[String]) -> Verified {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        });
        let response = match self
            .client
            .post(&self.url)
            .bearer_auth(&self.bearer)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Verified::Unavailable(format!(
                    "TokenReview {}: {}",
                    self.url,
                    crate::https::error_chain(&e)
                ))
            }
        };
        let status = response.status().as_u16();
        if status != 200 && status != 201 {
            return Verified::Unavailable(format!(
                "TokenReview {}: HTTP status {status}",
                self.url
            ));
        }
        #[derive(Deserialize)]
        struct Review {
            status: Option<ReviewStatus>,
        }
        #[derive(Deserialize)]
        struct ReviewStatus {
            #[serde(default)]
            authenticated: bool,
            #[serde(default)]
            audiences: Vec<String>,
            #[serde(default)]
            error: Option<String>,
        }
        let review: Review = match response
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => return Verified::Unavailable(format!("TokenReview {}: {e}", self.url)),
        };
        match review.status {
            Some(s) if s.authenticated => {
                if s.audiences.is_empty() || s.audiences.iter().any(|a| audiences.contains(a)) {
                    Verified::Yes
                } else {
                    Verified::No(format!("TokenReview audiences {:?}", s.audiences))
                }
            }
            Some(s) => Verified::No(format!(
                "TokenReview: not authenticated{}",
                s.error.map(|e| format!(" ({e})")).unwrap_or_default()
            )),
            None => Verified::No("TokenReview: no status".into()),
        }
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    certificate_authority: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Deserialize)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

impl Method for SatMethod {
    fn name(&self) -> &'static str {
        "ServiceAccountToken"
    }

    fn check<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.verify(request))
    }

    fn enhanced_method(&self) -> Option<&str> {
        Some(K8S_SAT)
    }
}

/// A token's time claim as an operator reads it (`2026-12-04T22:15:00Z`).
fn rfc3339(unix_secs: u64) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix:{unix_secs}"))
}
