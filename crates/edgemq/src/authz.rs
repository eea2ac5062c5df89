//! BrokerAuthorization resources → policies, and `edgemq authz explain`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bytestring::ByteString;
use edgemq_config::{BrokerMethod, Config, Listener, Port};
use edgemq_core::auth::{Action, AllowAll, Authorizer, Principal};
use edgemq_security::authz::{Pattern, Policy, Rule};

/// The authorizer for a port: its BrokerAuthorization's policy, or allow-all.
pub fn for_port(config: &Config, reference: Option<&str>) -> anyhow::Result<Arc<dyn Authorizer>> {
    let Some(name) = reference else {
        return Ok(Arc::new(AllowAll));
    };
    Ok(Arc::new(policy(config, name)?))
}

/// Compile a BrokerAuthorization (the loader has validated it; errors here are defensive).
pub fn policy(config: &Config, name: &str) -> anyhow::Result<Policy> {
    let resource = config
        .authorizations
        .get(name)
        .with_context(|| format!("BrokerAuthorization/{name} does not exist"))?;
    let mut rules = Vec::with_capacity(resource.rules.len());
    for (i, r) in resource.rules.iter().enumerate() {
        let at = || format!("BrokerAuthorization/{name}: rules[{i}]");
        let mut rule = Rule {
            client_ids: r.principals.client_ids.clone(),
            usernames: r.principals.usernames.clone(),
            attributes: r.principals.attributes.clone(),
            connect: false,
            connect_client_ids: Vec::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
        };
        for resource in &r.broker_resources {
            let patterns = resource
                .topics
                .iter()
                .map(|t| Pattern::parse(t).map_err(anyhow::Error::from))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(at)?;
            match resource.method {
                BrokerMethod::Connect => {
                    rule.connect = true;
                    rule.connect_client_ids
                        .extend(resource.client_ids.iter().cloned());
                }
                BrokerMethod::Publish => rule.publish.extend(patterns),
                BrokerMethod::Subscribe => rule.subscribe.extend(patterns),
            }
        }
        rules.push(rule);
    }
    Ok(Policy::new(name, rules))
}

/// `edgemq authz explain`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["connect", "publish", "subscribe"])))]
pub struct ExplainArgs {
    /// Configuration folder.
    #[arg(long, value_name = "DIR")]
    config: std::path::PathBuf,
    /// The port the client connects to: the address the broker binds (a NodePort
    /// listener's `nodePort`), or a port's `port` as written.
    #[arg(long)]
    port: u16,
    #[arg(long)]
    client_id: String,
    #[arg(long)]
    username: Option<String>,
    /// An attribute the authentication method would grant (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    attributes: Vec<(String, String)>,
    /// Explain a CONNECT.
    #[arg(long)]
    connect: bool,
    /// Explain a PUBLISH to this topic.
    #[arg(long, value_name = "TOPIC")]
    publish: Option<String>,
    /// Explain a SUBSCRIBE to this filter.
    #[arg(long, value_name = "FILTER")]
    subscribe: Option<String>,
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// Print `allowed`/`denied` and the rule; exit 0 when allowed, 1 when denied, 2 on a bad
/// configuration or port.
pub fn explain(args: &ExplainArgs) -> ExitCode {
    match run_explain(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("edgemq authz explain: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_explain(args: &ExplainArgs) -> anyhow::Result<bool> {
    let config = load(&args.config)?;
    let (listener, port) = find_port(&config, args.port)?;
    let principal = Principal {
        client_id: ByteString::from(args.client_id.as_str()),
        username: args.username.as_deref().map(ByteString::from),
        attributes: args.attributes.clone(),
    };
    let action = match (&args.publish, &args.subscribe) {
        (Some(topic), _) => Action::Publish { topic },
        (_, Some(filter)) => Action::Subscribe { filter },
        _ => Action::Connect,
    };
    let Some(name) = port.authorization.as_deref() else {
        println!(
            "allowed: BrokerListener/{} port {} has no authorizationRef (everything is allowed)",
            listener.name, port.port
        );
        return Ok(true);
    };
    let policy = policy(&config, name)?;
    let allowed = policy.authorize(&principal, action);
    println!(
        "{}: {}",
        if allowed { "allowed" } else { "denied" },
        policy.explain(&principal, action)
    );
    Ok(allowed)
}

/// The listener port a client reaches at `number`: first the port the broker binds there
/// (`nodePort` for NodePort listeners), else a port whose `port` field is `number` (the
/// in-cluster service port).
fn find_port(config: &Config, number: u16) -> anyhow::Result<(&Listener, &Port)> {
    let all = || {
        config
            .listeners
            .iter()
            .flat_map(|l| l.ports.iter().map(move |p| (l, p)))
    };
    if let Some(found) = all().find(|(_, p)| p.bind.port() == number) {
        return Ok(found);
    }
    let by_port: Vec<(&Listener, &Port)> = all().filter(|(_, p)| p.port == number).collect();
    match by_port.as_slice() {
        [one] => Ok(*one),
        [] => {
            let known: Vec<String> = all()
                .map(|(l, p)| match p.node_port {
                    Some(n) => format!(
                        "{} (BrokerListener/{} port {} nodePort {n})",
                        p.bind.port(),
                        l.name,
                        p.port
                    ),
                    None => format!("{} (BrokerListener/{})", p.bind.port(), l.name),
                })
                .collect();
            if known.is_empty() {
                anyhow::bail!(
                    "no listener port is reachable at {number}: no BrokerListener is defined"
                )
            }
            anyhow::bail!(
                "no listener port is reachable at {number}; clients can connect to: {}",
                known.join(", ")
            )
        }
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(l, p)| format!("BrokerListener/{} (binds {})", l.name, p.bind))
                .collect();
            anyhow::bail!(
                "port {number} is written on several listeners: {}; give the port the client connects to",
                names.join(", ")
            )
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Config> {
    match edgemq_config::load_dir(dir) {
        Ok(loaded) => Ok(loaded.config),
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            anyhow::bail!("the configuration in {} has errors", dir.display())
        }
    }
}
