//! Server certificates for TLS ports: manual ones from secrets, automatic ones issued by the
//! built-in CA, a cert-manager `ca` issuer or self-signed, and renewed before expiry. Each
//! port keeps one rustls config whose certificate slot is swapped in place, so renewals and
//! reloads never drop connected clients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use edgemq_config::{AutoCert, Config, Diagnostic, IssuerKind, Loaded, Severity, Tls};
use edgemq_tls::{BuiltInIssuer, CertificateAuthority, IssuedCert, ServerCertSlot, ServerCertSpec};
use tokio::task::JoinHandle;

/// `edgemq ca export`: prints the CA `serve` made in the data dir; never makes one.
pub fn export_ca(data_dir: &Path) -> ExitCode {
    match BuiltInIssuer::load_existing(data_dir) {
        Ok(issuer) => {
            print!("{}", issuer.ca_pem());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgemq: {e}");
            ExitCode::from(1)
        }
    }
}

/// A loaded configuration with the server certificates of its manual-TLS ports checked
/// (validity, chain, SANs against the bound address): warnings are added to the loaded
/// ones; errors make it `Err` with every diagnostic, as `load_dir` reports errors. Used by
/// `check`, `serve` and every reload, so all three say the same thing.
pub fn checked(loaded: Loaded) -> Result<Loaded, Vec<Diagnostic>> {
    let Loaded {
        config,
        mut warnings,
    } = loaded;
    let found = manual_tls_diagnostics(&config, SystemTime::now());
    if found.iter().any(Diagnostic::is_error) {
        warnings.extend(found);
        return Err(warnings);
    }
    warnings.extend(found);
    Ok(Loaded { config, warnings })
}

/// One diagnostic per problem of each manual-TLS port's certificate chain, at the port's
/// `secretRef` (`file:line: BrokerListener/NAME: spec.ports[I].tls.manual.secretRef: …`).
fn manual_tls_diagnostics(config: &Config, now: SystemTime) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for listener in &config.listeners {
        for (i, port) in listener.ports.iter().enumerate() {
            let Some(Tls::Manual {
                secret, chain_pem, ..
            }) = &port.tls
            else {
                continue;
            };
            // The configuration loader already reported a chain that does not parse.
            let Ok(chain) = edgemq_tls::pem::parse_certificates(chain_pem) else {
                continue;
            };
            for problem in edgemq_tls::check_server_chain(&chain, Some(port.bind), now) {
                out.push(Diagnostic {
                    severity: if problem.is_error() {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    file: listener.file.clone(),
                    line: Some(listener.line),
                    kind: "BrokerListener".into(),
                    name: listener.name.clone(),
                    field: format!("spec.ports[{i}].tls.manual.secretRef"),
                    message: format!(
                        "port {}: secret \"{secret}\": tls.crt: {problem}",
                        port.port
                    ),
                });
            }
        }
    }
    out
}

struct PortTls {
    /// What the certificate was made from, compared by content (the Debug form redacts keys
    /// and so cannot tell two certificates apart); a change means a new certificate.
    source: Tls,
    slot: Arc<ServerCertSlot>,
    config: Arc<rustls::ServerConfig>,
    /// The trusted client CAs when client certificates are requested.
    client_ca_hint: Option<Vec<u8>>,
    renewal: Option<JoinHandle<()>>,
}

/// The rustls config of a port: its certificate slot, and client certificates requested
/// (never required) when the authentication chain has an X.509 method.
fn config_for(
    slot: Arc<ServerCertSlot>,
    client_ca_hint: Option<&[u8]>,
) -> Arc<rustls::ServerConfig> {
    let verifier = client_ca_hint.map(|pem| edgemq_tls::deferred_client_verifier(Some(pem)));
    edgemq_tls::server_config(slot, verifier)
}

impl Drop for PortTls {
    fn drop(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
    }
}

/// Per (listener, port) TLS state, kept across reloads.
pub struct TlsManager {
    data_dir: PathBuf,
    builtin: Option<Arc<CertificateAuthority>>,
    ports: BTreeMap<(String, u16), PortTls>,
}

/// Who signs an automatic certificate.
#[derive(Clone)]
enum Signer {
    Authority(Arc<CertificateAuthority>),
    SelfSigned,
}

impl Signer {
    fn issue(&self, spec: &ServerCertSpec) -> Result<IssuedCert, edgemq_tls::TlsError> {
        match self {
            Signer::Authority(ca) => ca.issue_server(spec),
            Signer::SelfSigned => edgemq_tls::self_signed_server(spec),
        }
    }
}

impl TlsManager {
    pub fn new(data_dir: PathBuf) -> Self {
        TlsManager {
            data_dir,
            builtin: None,
            ports: BTreeMap::new(),
        }
    }

    /// The rustls config for a port, creating or updating its certificate in place.
    /// `client_ca_hint`: `Some(trusted client CA PEM)` when the port's authentication chain
    /// wants client certificates (they are then requested, never required).
    pub fn ensure(
        &mut self,
        listener: &str,
        port: u16,
        tls: &Tls,
        config: &Config,
        client_ca_hint: Option<Vec<u8>>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let key = (listener.to_string(), port);
        if let Some(existing) = self.ports.get_mut(&key) {
            if existing.source == *tls {
                if existing.client_ca_hint != client_ca_hint {
                    // Same certificate, different client-certificate request: a new config
                    // around the same slot (the listener restarts only if its fingerprint
                    // changed; otherwise new handshakes use the new config).
                    existing.config = config_for(existing.slot.clone(), client_ca_hint.as_deref());
                    existing.client_ca_hint = client_ca_hint;
                }
                return Ok(existing.config.clone());
            }
        }
        let what = format!("BrokerListener/{listener} port {port}");
        let (certified, renewal) = match tls {
            Tls::Manual {
                secret,
                chain_pem,
                key_pem,
            } => {
                let ck = edgemq_tls::pem::certified_key(chain_pem, key_pem)
                    .with_context(|| format!("{what}: tls.manual.secretRef {secret}"))?;
                // Never serve what every client refuses (the configuration checks report
                // these first, with the file and line).
                if let Some(problem) =
                    edgemq_tls::check_server_chain(&ck.cert, None, SystemTime::now())
                        .into_iter()
                        .find(edgemq_tls::ChainProblem::is_error)
                {
                    anyhow::bail!("{what}: tls.manual.secretRef {secret}: tls.crt: {problem}");
                }
                let not_after = ck.end_entity_cert().ok().and_then(|leaf| {
                    edgemq_tls::inspect_der(leaf)
                        .ok()
                        .map(|s| edgemq_tls::rfc3339(s.not_after))
                });
                tracing::info!(
                    listener, port, secret = %secret,
                    not_after = %not_after.unwrap_or_default(),
                    "TLS certificate loaded from secret"
                );
                (ck, None)
            }
            Tls::Automatic(auto) => {
                let signer = self.signer(auto, config).with_context(|| what.clone())?;
                let spec = server_spec(listener, auto, None);
                // Key generation takes seconds for large RSA keys: keep it off the
                // async workers that serve clients.
                let issued = tokio::task::block_in_place(|| signer.issue(&spec))
                    .with_context(|| format!("{what}: issuing the server certificate"))?;
                log_issued(listener, port, auto, &issued);
                let ck = edgemq_tls::pem::certified_key(
                    issued.chain_pem.as_bytes(),
                    issued.key_pem.as_bytes(),
                )
                .with_context(|| format!("{what}: issued certificate"))?;
                (ck, Some((signer, issued)))
            }
        };
        let entry = match self.ports.remove(&key) {
            // Same port, new material: swap inside the running config; connections stay.
            Some(mut existing) => {
                existing.slot.swap(certified);
                tracing::info!(listener, port, "TLS certificate replaced in place");
                if let Some(task) = existing.renewal.take() {
                    task.abort();
                }
                existing.source = tls.clone();
                existing
            }
            None => {
                let slot = Arc::new(ServerCertSlot::new(certified));
                let config = config_for(slot.clone(), client_ca_hint.as_deref());
                PortTls {
                    source: tls.clone(),
                    slot,
                    config,
                    client_ca_hint: None,
                    renewal: None,
                }
            }
        };
        let mut entry = entry;
        if entry.client_ca_hint != client_ca_hint {
            entry.config = config_for(entry.slot.clone(), client_ca_hint.as_deref());
            entry.client_ca_hint = client_ca_hint;
        }
        if let Tls::Manual { secret, .. } = tls {
            if let Some(not_after) = entry.slot.current_not_after() {
                entry.renewal = Some(tokio::spawn(warn_before_expiry(
                    listener.to_string(),
                    port,
                    secret.clone(),
                    not_after,
                )));
            }
        }
        if let (Some((signer, issued)), Tls::Automatic(auto)) = (renewal, tls) {
            entry.renewal = Some(tokio::spawn(renew_forever(
                listener.to_string(),
                port,
                auto.clone(),
                signer,
                issued,
                entry.slot.clone(),
            )));
        }
        let config = entry.config.clone();
        self.ports.insert(key, entry);
        Ok(config)
    }

    /// Forget ports that are no longer configured (stops their renewals).
    /// Each TLS port's certificate, for the metrics (read when scraped: a renewal shows).
    pub fn watches(&self) -> Vec<edgemq_admin::CertificateWatch> {
        self.ports
            .iter()
            .map(|((listener, port), tls)| {
                let slot = tls.slot.clone();
                edgemq_admin::CertificateWatch {
                    listener: listener.clone(),
                    port: *port,
                    not_after: Box::new(move || slot.current_not_after()),
                }
            })
            .collect()
    }

    pub fn retain_only(&mut self, config: &Config) {
        self.ports.retain(|(listener, port), _| {
            config.listeners.iter().any(|l| {
                l.name == *listener && l.ports.iter().any(|p| p.port == *port && p.tls.is_some())
            })
        });
    }

    fn signer(&mut self, auto: &AutoCert, _config: &Config) -> anyhow::Result<Signer> {
        Ok(match &auto.issuer_kind {
            IssuerKind::BuiltIn => {
                let ca = match &self.builtin {
                    Some(ca) => ca.clone(),
                    None => {
                        let issuer =
                            BuiltInIssuer::load_or_create(&self.data_dir).with_context(|| {
                                format!("built-in issuer in {}", self.data_dir.display())
                            })?;
                        let ca = Arc::new(issuer.authority().clone());
                        self.builtin = Some(ca.clone());
                        ca
                    }
                };
                Signer::Authority(ca)
            }
            IssuerKind::SelfSigned => Signer::SelfSigned,
            IssuerKind::Ca {
                secret,
                cert_pem,
                key_pem,
            } => Signer::Authority(Arc::new(
                CertificateAuthority::from_pem(
                    &String::from_utf8_lossy(cert_pem),
                    &String::from_utf8_lossy(key_pem),
                )
                .with_context(|| format!("issuer {}: CA secret {secret}", auto.issuer))?,
            )),
        })
    }
}

fn server_spec(
    listener: &str,
    auto: &AutoCert,
    previous_key_pem: Option<String>,
) -> ServerCertSpec {
    ServerCertSpec {
        common_name: auto
            .dns
            .first()
            .cloned()
            .unwrap_or_else(|| listener.to_string()),
        dns: auto.dns.clone(),
        ip: auto.ip.clone(),
        algorithm: auto.algorithm,
        validity: auto.duration,
        previous_key_pem,
    }
}

fn log_issued(listener: &str, port: u16, auto: &AutoCert, issued: &IssuedCert) {
    tracing::info!(
        listener, port, issuer = %auto.issuer, dns = ?auto.dns, ip = ?auto.ip,
        not_after = %edgemq_tls::rfc3339(issued.not_after),
        "TLS certificate issued"
    );
}

/// A manual certificate is not renewed by the broker: warn [`edgemq_tls::EXPIRY_WARNING`]
/// before it expires (at load time the configuration check has warned already if it is that
/// close), and say so when it has expired.
async fn warn_before_expiry(listener: String, port: u16, secret: String, not_after: SystemTime) {
    let warn_at = not_after
        .checked_sub(edgemq_tls::EXPIRY_WARNING)
        .unwrap_or(not_after);
    if warn_at > SystemTime::now() {
        sleep_until(warn_at).await;
        tracing::warn!(
            listener = %listener, port, secret = %secret,
            "the TLS certificate in secret {secret} expires at {}; issue a new one and replace tls.crt and tls.key (the broker reloads it without dropping clients)",
            edgemq_tls::rfc3339(not_after)
        );
    }
    sleep_until(not_after).await;
    tracing::error!(
        listener = %listener, port, secret = %secret,
        "the TLS certificate in secret {secret} expired at {}: every client now refuses it; issue a new one and replace tls.crt and tls.key",
        edgemq_tls::rfc3339(not_after)
    );
}

/// Sleep until the wall clock reaches `t`, in steps of at most an hour so a suspended
/// machine or a clock change is noticed and years-long waits stay within the timer's range.
async fn sleep_until(t: SystemTime) {
    while let Ok(left) = t.duration_since(SystemTime::now()) {
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_secs(3600))).await;
    }
}

/// Renew at `notAfter - renewBefore`, swap the new certificate in, repeat. A failed renewal
/// is retried every minute while the old certificate is still valid.
async fn renew_forever(
    listener: String,
    port: u16,
    auto: AutoCert,
    signer: Signer,
    mut current: IssuedCert,
    slot: Arc<ServerCertSlot>,
) {
    loop {
        let at = edgemq_tls::renewal_time(current.not_before, current.not_after, auto.renew_before);
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let previous = (!auto.rotate_key).then(|| current.key_pem.clone());
        let spec = server_spec(&listener, &auto, previous);
        let issuing = signer.clone();
        let renewed = tokio::task::spawn_blocking(move || {
            let issued = issuing.issue(&spec)?;
            let ck = edgemq_tls::pem::certified_key(
                issued.chain_pem.as_bytes(),
                issued.key_pem.as_bytes(),
            )?;
            anyhow::Ok((issued, ck))
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        match renewed {
            Ok((issued, ck)) => {
                slot.swap(ck);
                tracing::info!(
                    listener = %listener, port, not_after = %edgemq_tls::rfc3339(issued.not_after),
                    rotated_key = auto.rotate_key, "TLS certificate renewed"
                );
                current = issued;
            }
            Err(e) => {
                tracing::error!(listener = %listener, port, "TLS certificate renewal failed: {e:#}; retrying in 60s");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}
