//! BrokerAuthentication resources → authentication chains (edgemq-security methods).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use edgemq_config::{AuthnMethod, Config};
use edgemq_core::auth::{AllowAll, Authenticator};
use edgemq_security::password::{PasswordDb, PasswordMethod, VerifyLimits};
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
        AuthnMethod::ServiceAccountToken { .. } => {
            anyhow::bail!("ServiceAccountToken is not available in this build")
        }
        AuthnMethod::Custom(_) => anyhow::bail!("Custom is not available in this build"),
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
