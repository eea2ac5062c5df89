//! BrokerAuthentication resources → authentication chains (edgemq-security methods).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use std::path::Path;

use edgemq_config::{AuthnMethod, Config, SatVerification};
use edgemq_core::auth::{AllowAll, Authenticator};
use edgemq_security::custom::{CustomMethod, CustomSettings};
use edgemq_security::password::{PasswordDb, PasswordMethod, VerifyLimits};
use edgemq_security::sat::{JwksSource, SatMethod, SatVerifier, TokenReviewClient};
use edgemq_security::x509::X509Method;
use edgemq_security::{AuthChain, Method};

/// The authenticator for a port: its BrokerAuthentication's chain, or anonymous.
pub fn for_port(
    config: &Config,
    reference: Option<&str>,
) -> anyhow::Result<Arc<dyn Authenticator>> {
    let Some(name) = reference else {
        return Ok(Arc::new(AllowAll));
    };
    let resource = config
        .authentications
        .get(name)
        .with_context(|| format!("BrokerAuthentication/{name} does not exist"))?;
    let mut methods: Vec<Arc<dyn Method>> = Vec::new();
    for (i, m) in resource.methods.iter().enumerate() {
        let at = || format!("BrokerAuthentication/{name}: authenticationMethods[{i}]");
        methods.push(method(config, m).with_context(at)?);
    }
    Ok(Arc::new(AuthChain::new(name, methods)))
}

fn method(config: &Config, m: &AuthnMethod) -> anyhow::Result<Arc<dyn Method>> {
    Ok(match m {
        AuthnMethod::UsernamePassword { secret } => {
            let text = secret_text(config, secret, "passwords.toml")?;
            let db = PasswordDb::parse(&text).with_context(|| format!("secret {secret:?}"))?;
            Arc::new(PasswordMethod::new(db, VerifyLimits::default()))
        }
        AuthnMethod::X509(x) => {
            let pem = config_map_text(config, &x.trusted_client_ca_config_map, "client_ca.pem")?;
            let attributes: BTreeMap<String, (String, BTreeMap<String, String>)> = x
                .attributes
                .iter()
                .map(|(entry, sa)| (entry.clone(), (sa.subject.clone(), sa.attributes.clone())))
                .collect();
            Arc::new(
                X509Method::new(pem.as_bytes(), &attributes)
                    .with_context(|| format!("config map {:?}", x.trusted_client_ca_config_map))?,
            )
        }
        AuthnMethod::ServiceAccountToken {
            audiences,
            verification,
        } => Arc::new(SatMethod::new(
            audiences.clone(),
            sat_verifier(config, verification)?,
        )),
        AuthnMethod::Custom(c) => {
            let ca_pem = c
                .ca_config_map
                .as_ref()
                .map(|name| {
                    config
                        .config_maps
                        .get(name)
                        .map(|cm| cm.values().cloned().collect::<Vec<_>>().join("\n"))
                        .with_context(|| format!("config map {name:?} not found"))
                })
                .transpose()?;
            let client_cert = c
                .client_cert_secret
                .as_ref()
                .map(|secret| {
                    Ok::<_, anyhow::Error>((
                        secret_text(config, secret, "tls.crt")?,
                        secret_text(config, secret, "tls.key")?,
                    ))
                })
                .transpose()?;
            Arc::new(CustomMethod::new(CustomSettings {
                endpoint: c.endpoint.clone(),
                ca_pem,
                client_cert,
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                timeout: edgemq_security::custom::DEFAULT_TIMEOUT,
            })?)
        }
    })
}

/// How tokens are verified; when that cannot be set up (in-cluster review outside a
/// cluster), tokens are refused with the reason and the broker still starts.
fn sat_verifier(config: &Config, v: &SatVerification) -> anyhow::Result<SatVerifier> {
    Ok(match v {
        // Outside a cluster the configuration loader has already warned, with the
        // resource's location (the warning `check` prints).
        SatVerification::InCluster => SatVerifier::in_cluster(),
        SatVerification::Kubeconfig(path) => {
            SatVerifier::TokenReview(TokenReviewClient::from_kubeconfig(Path::new(path))?)
        }
        SatVerification::Jwks { config_map } => SatVerifier::Jwks(JwksSource::from_json(
            &config_map_text(config, config_map, "jwks.json")?,
        )?),
        SatVerification::Issuer { url, ca_config_map } => {
            let ca = match ca_config_map {
                Some(name) => Some(
                    config
                        .config_maps
                        .get(name)
                        .map(|cm| cm.values().cloned().collect::<Vec<_>>().join("\n"))
                        .with_context(|| format!("config map {name:?} not found"))?,
                ),
                None => None,
            };
            SatVerifier::Jwks(JwksSource::issuer(url, ca.as_deref())?)
        }
    })
}

fn secret_text(config: &Config, secret: &str, key: &str) -> anyhow::Result<String> {
    let bytes = config
        .secrets
        .get(secret)
        .and_then(|s| s.data.get(key))
        .with_context(|| format!("secret {secret:?} has no key {key}"))?;
    String::from_utf8(bytes.clone())
        .with_context(|| format!("secret {secret:?}: {key} is not UTF-8"))
}

fn config_map_text(config: &Config, name: &str, key: &str) -> anyhow::Result<String> {
    config
        .config_maps
        .get(name)
        .and_then(|cm| cm.get(key))
        .cloned()
        .with_context(|| format!("config map {name:?} has no key {key}"))
}
