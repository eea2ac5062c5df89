//! Operator tools: `edgemq password-hash` (the `az iot ops mq get-password-hash` equivalent)
//! and `edgemq certs` (CA, intermediate, server and client certificates, and `inspect`),
//! replacing the openssl and step commands of the usual walkthroughs.

use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use edgemq_security::password::{PasswordHash, DEFAULT_ITERATIONS};
use edgemq_tls::{CertSummary, CertificateAuthority, KeyAlgorithm, ServerCertSpec};

const DAY: Duration = Duration::from_secs(86_400);

const FLOW: &str = "\
Example: the usual flow (root → intermediate → server and clients):
  edgemq certs root         --name \"AIO42 Root CA\"           --out pki/aio42_root_ca
  edgemq certs intermediate --name \"AIO42 Intermediate CA 1\" --ca pki/aio42_root_ca --out pki/aio42_int_ca
  edgemq certs server       --name mqtts-endpoint --san 192.168.2.196 --san n013edge.local --ca pki/aio42_int_ca --out pki/mqtts-endpoint --bundle
  edgemq certs client       --name client42a --ca pki/aio42_int_ca --out pki/client42a --bundle
  edgemq certs inspect      pki/client42a.crt
Each command writes PREFIX.crt and PREFIX.key (mode 0600); --ca PREFIX reads PREFIX.crt and PREFIX.key.";

/// `edgemq password-hash`.
#[derive(Debug, clap::Args)]
pub struct PasswordHashArgs {
    /// The password to hash; `-` reads it from standard input (keeps it out of the shell
    /// history; one trailing newline is removed).
    #[arg(long)]
    phrase: String,
    /// PBKDF2 iterations (1 to 10,000,000).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

pub fn password_hash(args: &PasswordHashArgs) -> ExitCode {
    let phrase = if args.phrase == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("edgemq password-hash: cannot read standard input: {e}");
            return ExitCode::from(2);
        }
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
    } else {
        args.phrase.clone()
    };
    match PasswordHash::new(phrase.as_bytes(), args.iterations) {
        Ok(hash) => {
            // The PHC alphabet (base64, `$`, `,`, `=`) needs no JSON escaping.
            println!("{{\"hash\": \"{}\"}}", hash.to_phc());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "edgemq password-hash: --iterations {}: {e}",
                args.iterations
            );
            // A usage error (shared/spec: 1).
            ExitCode::from(1)
        }
    }
}

/// `edgemq certs …`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// A self-signed root CA (default validity 10 years).
    #[command(after_help = FLOW)]
    Root(Common),
    /// An intermediate CA signed by --ca, with basicConstraints critical CA:TRUE, pathlen 0
    /// and keyUsage keyCertSign, cRLSign (default validity 5 years).
    #[command(after_help = FLOW)]
    Intermediate(Signed),
    /// A server certificate (serverAuth) with DNS and IP subject alternative names (default
    /// validity 1 year).
    #[command(after_help = FLOW)]
    Server {
        #[command(flatten)]
        signed: Signed,
        /// A subject alternative name: IP addresses become IP SANs, anything else DNS.
        /// Repeatable; at least one.
        #[arg(long = "san", required = true)]
        sans: Vec<String>,
        /// Write leaf + intermediates into PREFIX.crt (what servers present).
        #[arg(long)]
        bundle: bool,
    },
    /// A client certificate (clientAuth), CN = --name (default validity 1 year).
    #[command(after_help = FLOW)]
    Client {
        #[command(flatten)]
        signed: Signed,
        /// Write leaf + intermediates into PREFIX.crt (what clients must send).
        #[arg(long)]
        bundle: bool,
    },
    /// Print subject, issuer, SANs, validity, usage and X.509 version of every certificate
    /// in a PEM (or DER) file, with warnings for chains OpenSSL or edgemq would refuse.
    #[command(after_help = FLOW)]
    Inspect { file: PathBuf },
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Common name of the subject.
    #[arg(long)]
    name: String,
    /// Output prefix: writes PREFIX.crt and PREFIX.key.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// ec256, ec384, ec521, ed25519, rsa2048, rsa4096 or rsa8192.
    #[arg(long, default_value = "ec256", value_parser = parse_key_type)]
    key_type: KeyAlgorithm,
    /// Validity as a duration (`72000h`, `90m`, `30d`…).
    #[arg(long, value_parser = parse_not_after, conflicts_with = "days")]
    not_after: Option<Duration>,
    /// Validity in days.
    #[arg(long)]
    days: Option<u32>,
    /// Overwrite existing files (otherwise they are never overwritten).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct Signed {
    #[command(flatten)]
    common: Common,
    /// The signing CA: reads PREFIX.crt and PREFIX.key.
    #[arg(long, value_name = "PREFIX")]
    ca: PathBuf,
}

fn parse_key_type(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse::<KeyAlgorithm>().map_err(|e| e.to_string())
}

fn parse_not_after(s: &str) -> Result<Duration, String> {
    if let Some(days) = s.strip_suffix('d') {
        if let Ok(n) = days.parse::<u64>() {
            return Ok(DAY * n as u32);
        }
    }
    edgemq_config::parse_duration(s).map_err(|e| e.to_string())
}

impl Common {
    fn validity(&self, default_days: u32) -> Duration {
        match (self.not_after, self.days) {
            (Some(d), _) => d,
            (None, Some(days)) => DAY * days,
            (None, None) => DAY * default_days,
        }
    }
}

pub fn certs(command: &CertsCommand) -> ExitCode {
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgemq certs: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: &CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Root(c) => {
            refuse_overwrite(c)?;
            let ca = CertificateAuthority::generate_root(&c.name, c.key_type, c.validity(3650))?;
            write_pair(c, ca.cert_pem(), ca.key_pem())
        }
        CertsCommand::Intermediate(s) => {
            let c = &s.common;
            refuse_overwrite(c)?;
            let parent = load_ca(&s.ca)?;
            let ca = CertificateAuthority::generate_intermediate(
                &parent,
                &c.name,
                c.key_type,
                c.validity(1825),
            )?;
            write_pair(c, ca.cert_pem(), ca.key_pem())
        }
        CertsCommand::Server {
            signed,
            sans,
            bundle,
        } => {
            let c = &signed.common;
            refuse_overwrite(c)?;
            let ca = load_ca(&signed.ca)?;
            let (mut dns, mut ip) = (Vec::new(), Vec::new());
            for san in sans {
                match san.parse::<IpAddr>() {
                    Ok(addr) => ip.push(addr),
                    Err(_) => dns.push(san.clone()),
                }
            }
            let issued = ca.issue_server(&ServerCertSpec {
                common_name: c.name.clone(),
                dns,
                ip,
                algorithm: c.key_type,
                validity: c.validity(365),
                previous_key_pem: None,
            })?;
            let crt = if *bundle {
                &issued.chain_pem
            } else {
                &issued.leaf_pem
            };
            write_pair(c, crt, &issued.key_pem)
        }
        CertsCommand::Client { signed, bundle } => {
            let c = &signed.common;
            refuse_overwrite(c)?;
            let ca = load_ca(&signed.ca)?;
            let issued = ca.issue_client(&c.name, c.key_type, c.validity(365))?;
            let crt = if *bundle {
                &issued.chain_pem
            } else {
                &issued.leaf_pem
            };
            write_pair(c, crt, &issued.key_pem)
        }
        CertsCommand::Inspect { file } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let summaries = edgemq_tls::inspect(&bytes)
                .with_context(|| format!("{}: not a certificate file", file.display()))?;
            let count = summaries.len();
            let mut out = std::io::stdout().lock();
            for (i, s) in summaries.iter().enumerate() {
                let role = role(i, count, s);
                writeln!(out, "{}", describe(i, role, s))?;
            }
            // A server chain (leaf first): what `serve` and `check` would say about how the
            // certificates fit together (validity and CA marking are shown above).
            if count > 1 && !summaries[0].is_ca {
                if let Ok(chain) = edgemq_tls::pem::parse_certificates(&bytes) {
                    for p in edgemq_tls::check_server_chain(&chain, None, SystemTime::now()) {
                        if matches!(
                            p,
                            edgemq_tls::ChainProblem::NotTheIssuer { .. }
                                | edgemq_tls::ChainProblem::WrongIssuerKey { .. }
                        ) {
                            writeln!(out, "chain warning: {p}")?;
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

fn paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    (with(".crt"), with(".key"))
}

fn refuse_overwrite(c: &Common) -> anyhow::Result<()> {
    if c.force {
        return Ok(());
    }
    let (crt, key) = paths(&c.out);
    for p in [crt, key] {
        if p.exists() {
            bail!("{} exists; not overwritten (use --force)", p.display());
        }
    }
    Ok(())
}

fn load_ca(prefix: &Path) -> anyhow::Result<CertificateAuthority> {
    let (crt, key) = paths(prefix);
    let cert = std::fs::read_to_string(&crt)
        .with_context(|| format!("--ca: cannot read {}", crt.display()))?;
    let key_pem = std::fs::read_to_string(&key)
        .with_context(|| format!("--ca: cannot read {}", key.display()))?;
    CertificateAuthority::from_pem(&cert, &key_pem)
        .with_context(|| format!("--ca {}", prefix.display()))
}

fn write_pair(c: &Common, crt_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    let (crt, key) = paths(&c.out);
    if let Some(dir) = crt.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&crt, crt_pem).with_context(|| format!("cannot write {}", crt.display()))?;
    write_private(&key, key_pem)?;
    println!("wrote {} and {}", crt.display(), key.display());
    Ok(())
}

/// Private keys are created with mode 0600 (never world-readable, even for a moment).
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        // An existing file (with --force) keeps its mode: set it explicitly.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
        }
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// How a certificate is used at position `i` of a file of `count`: the first is the leaf
/// unless it is a CA; later ones are the chain.
fn role(i: usize, count: usize, s: &CertSummary) -> &'static str {
    match (i, s.is_ca, s.self_signed) {
        (_, true, true) => "root CA",
        (_, true, false) => "intermediate CA",
        (0, false, true) if count == 1 && s.version == 1 => "self-signed (no CA marking)",
        (0, false, _) => "leaf",
        (_, false, _) => "chain certificate without CA:TRUE",
    }
}

fn describe(i: usize, role: &str, s: &CertSummary) -> String {
    let now = SystemTime::now();
    let validity = if s.not_after < now {
        " — EXPIRED"
    } else if s.not_before > now {
        " — not yet valid"
    } else {
        ""
    };
    let mut sans: Vec<String> = s.dns_names.iter().map(|d| format!("DNS:{d}")).collect();
    sans.extend(s.ip_addresses.iter().map(|ip| format!("IP:{ip}")));
    sans.extend(s.other_sans.iter().cloned());
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut out = format!(
        "certificate {n} ({role})\n  subject:   {subject}\n  issuer:    {issuer}\n  serial:    {serial}\n  version:   X.509 v{version}\n  validity:  {from} → {to}{validity}\n  SANs:      {sans}\n  key:       {key}\n  CA:        {ca}\n  keyUsage:  {ku}\n  extKeyUsage: {eku}\n  sha256:    {fp}\n",
        n = i + 1,
        subject = s.subject,
        issuer = s.issuer,
        serial = s.serial,
        version = s.version,
        from = edgemq_tls::rfc3339(s.not_before),
        to = edgemq_tls::rfc3339(s.not_after),
        sans = list(&sans),
        key = s.public_key,
        ca = if s.is_ca {
            match s.path_len {
                Some(n) => format!("TRUE, pathlen {n}"),
                None => "TRUE".to_string(),
            }
        } else {
            "no".to_string()
        },
        ku = list(&s.key_usage),
        eku = list(&s.extended_key_usage),
        fp = s.sha256_fingerprint,
    );
    // A chain certificate (or any v1 certificate, which cannot carry CA:TRUE) cannot sign
    // others: say so in the words OpenSSL uses, and how to fix it.
    if !s.is_ca && (i > 0 || s.version == 1) {
        out.push_str(&format!(
            "  warning: X.509 v{} certificate without basicConstraints CA:TRUE: {}{}\n",
            s.version,
            edgemq_tls::NOT_A_CA_FIX,
            if i == 0 {
                ". As a client leaf it is acceptable (edgemq and OpenSSL-based brokers take v1 client certificates)"
            } else {
                ""
            }
        ));
    }
    if !validity.is_empty() {
        out.push_str(&format!(
            "  warning: {}\n",
            validity.trim_start_matches(" — ")
        ));
    }
    out
}
