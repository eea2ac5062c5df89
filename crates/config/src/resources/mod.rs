//! One YAML document → one typed resource, per kind and API version. Each kind's module knows
//! its field names in every version; the result is a version-independent `Raw*` value whose
//! references still carry their location, for `validate` to resolve.

pub(crate) mod authn;
pub(crate) mod authz;
pub(crate) mod broker;
pub(crate) mod data;
pub(crate) mod issuer;
pub(crate) mod listener;

use std::collections::BTreeSet;
use std::path::Path;

use crate::diag::{Diags, Origin};
use crate::reader::{Cx, Located, Obj, Val};
use crate::yaml::{Node, Value};

pub(crate) const V1: &str = "mqttbroker.iotoperations.azure.com/v1";
pub(crate) const TRANSITIONAL: &str = "mqttbroker.iotoperations.azure.com/v1beta1";
pub(crate) const LEGACY: &str = "mq.iotoperations.azure.com/v1beta1";
const CORE: &str = "v1";
const CERT_MANAGER: &str = "cert-manager.io/v1";

/// Which generation of the AIO broker resources a document uses (facts §0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiVersion {
    /// `mqttbroker.iotoperations.azure.com/v1` (GA).
    V1,
    /// `mqttbroker.iotoperations.azure.com/v1beta1`: the `ports[]` model with older spellings.
    Transitional,
    /// `mq.iotoperations.azure.com/v1beta1`: one port per listener, `listenerRef` links.
    Legacy,
}

/// Every resource of a folder, each name defined once.
#[derive(Default)]
pub(crate) struct Resources {
    pub brokers: Vec<broker::RawBroker>,
    pub listeners: Vec<listener::RawListener>,
    pub authentications: Vec<authn::RawAuthentication>,
    pub authorizations: Vec<authz::RawAuthorization>,
    pub secrets: Vec<data::RawSecret>,
    pub config_maps: Vec<data::RawConfigMap>,
    pub issuers: Vec<issuer::RawIssuer>,
    /// Resources that had errors and were left out, by name group (see [`name_group`]) and
    /// name: references to them are not reported again as "not found".
    pub broken: BTreeSet<(&'static str, String)>,
}

/// The set of names a kind shares: Issuer and ClusterIssuer share one (the model keys issuers
/// by name), every other kind has its own.
pub(crate) fn name_group(kind: &str) -> &'static str {
    match kind {
        "Broker" => "Broker",
        "BrokerListener" => "BrokerListener",
        "BrokerAuthentication" => "BrokerAuthentication",
        "BrokerAuthorization" => "BrokerAuthorization",
        "Secret" => "Secret",
        "ConfigMap" => "ConfigMap",
        "Issuer" | "ClusterIssuer" => "Issuer",
        _ => "",
    }
}

const BROKER_VERSIONS: &[&str] = &[V1, LEGACY, TRANSITIONAL];

/// Kinds edgemq reads and the apiVersions each accepts.
const KINDS: &[(&str, &[&str])] = &[
    ("Broker", BROKER_VERSIONS),
    ("BrokerListener", BROKER_VERSIONS),
    ("BrokerAuthentication", BROKER_VERSIONS),
    ("BrokerAuthorization", BROKER_VERSIONS),
    ("Secret", &[CORE]),
    ("ConfigMap", &[CORE]),
    ("Issuer", &[CERT_MANAGER]),
    ("ClusterIssuer", &[CERT_MANAGER]),
    ("List", &[CORE]),
];

/// Kubernetes object metadata: only the name matters (one broker = one namespace); the other
/// fields kubectl writes are accepted silently so exported manifests load unchanged.
pub(crate) const METADATA: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "uid",
    "resourceVersion",
    "generation",
    "generateName",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// A resource's name and the line it is written on.
pub(crate) fn metadata(root: &Obj<'_>) -> Option<Located<String>> {
    let meta = root.req("metadata")?.obj(METADATA)?;
    meta.req("name")?.name()
}

/// A top-level scalar read before the kind is known (to choose the kind's field list).
fn peek<'a>(node: &'a Node, key: &str) -> Option<(&'a Node, usize)> {
    let Value::Map(entries) = &node.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
        .map(|(k, v)| (v, k.line))
}

fn peek_str(node: &Node, key: &str) -> Option<(String, usize)> {
    peek(node, key).and_then(|(v, line)| v.scalar_text().map(|s| (s, line)))
}

fn peek_name(node: &Node) -> String {
    peek(node, "metadata")
        .and_then(|(m, _)| peek_str(m, "name"))
        .map(|(s, _)| s)
        .unwrap_or_default()
}

/// Reads one document into `out`. Problems go to `diags`; a resource that cannot be read is
/// remembered in `out.broken` so references to it do not cascade into "not found" errors.
pub(crate) fn read_document(file: &Path, doc: &Node, diags: &Diags, out: &mut Resources) {
    let name = peek_name(doc);
    let kind = peek_str(doc, "kind");
    let kind_name = kind.as_ref().map(|(k, _)| k.as_str()).unwrap_or("");
    let origin = Origin::new(file, Some(doc.line), kind_name, &name);
    let cx = Cx {
        diags,
        origin: &origin,
        strict: false,
    };

    if !matches!(doc.value, Value::Map(_)) {
        cx.error(
            doc.line,
            "",
            format!("a resource must be a mapping, found {}", doc.type_name()),
        );
        return;
    }
    let Some((kind, kind_line)) = kind else {
        cx.error(doc.line, "kind", "required field is missing");
        return;
    };
    let Some((_, versions)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        let names: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        let api_version = peek_str(doc, "apiVersion").map(|(v, _)| v);
        let group = api_version
            .as_deref()
            .map(|v| v.rsplit_once('/').map_or("", |(g, _)| g))
            .unwrap_or("");
        let broker_group = [V1, LEGACY]
            .iter()
            .any(|v| v.split_once('/').is_some_and(|(g, _)| g == group));
        let near = names.iter().find(|n| close_kind(&kind, n));
        if broker_group || near.is_some() {
            // A broker resource edgemq does not know, or a misspelt kind: dropping it
            // silently could drop a listener's security.
            let hint = near
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            cx.error(
                kind_line,
                "kind",
                format!(
                    "unknown kind \"{kind}\"{hint}; expected one of: {}",
                    names.join(", ")
                ),
            );
        } else {
            // A cluster export holds Services, Deployments, Dataflow resources…: not the
            // broker's, so skipped.
            cx.warn(
                kind_line,
                "kind",
                format!(
                    "{} is not a resource edgemq reads; skipped (edgemq reads: {})",
                    api_version.map_or_else(|| kind.clone(), |v| format!("{kind} ({v})")),
                    names.join(", ")
                ),
            );
        }
        return;
    };
    let Some((api_version, api_line)) = peek_str(doc, "apiVersion") else {
        cx.error(doc.line, "apiVersion", "required field is missing");
        return;
    };
    if !versions.contains(&api_version.as_str()) {
        cx.error(
            api_line,
            "apiVersion",
            format!(
                "\"{api_version}\" is not supported for {kind}; expected {}",
                versions.join(" or ")
            ),
        );
        return;
    }
    let version = match api_version.as_str() {
        LEGACY => ApiVersion::Legacy,
        TRANSITIONAL => ApiVersion::Transitional,
        _ => ApiVersion::V1,
    };
    let root = Val::root(cx, doc);
    let ok = match kind.as_str() {
        "Broker" => add(&mut out.brokers, broker::read(&root, version)),
        "BrokerListener" => add(&mut out.listeners, listener::read(&root, version)),
        "BrokerAuthentication" => add(&mut out.authentications, authn::read(&root, version)),
        "BrokerAuthorization" => add(&mut out.authorizations, authz::read(&root, version)),
        "Secret" => add(&mut out.secrets, data::read_secret(&root)),
        "ConfigMap" => add(&mut out.config_maps, data::read_config_map(&root)),
        "Issuer" => add(&mut out.issuers, issuer::read(&root, false)),
        "ClusterIssuer" => add(&mut out.issuers, issuer::read(&root, true)),
        _ => {
            read_list(file, &root, diags, out);
            true
        }
    };
    if !ok && !name.is_empty() {
        out.broken.insert((name_group(&kind), name));
    }
}

/// A kind written with different case or up to two typing mistakes (`Brokerlistener`,
/// `BrokerListner`, `Secrets`).
fn close_kind(kind: &str, known: &str) -> bool {
    let (a, b) = (kind.to_ascii_lowercase(), known.to_ascii_lowercase());
    a == b || (b.len() > 4 && crate::reader::edit_distance(&a, &b) <= 2)
}

/// Appends `item` when it was read; says whether it was.
fn add<T>(list: &mut Vec<T>, item: Option<T>) -> bool {
    let ok = item.is_some();
    list.extend(item);
    ok
}

/// `kubectl get … -o yaml` of several objects: a `List` whose `items` are resources.
fn read_list(file: &Path, root: &Val<'_>, diags: &Diags, out: &mut Resources) {
    let Some(obj) = root.obj(&["apiVersion", "kind", "metadata", "items"]) else {
        return;
    };
    let Some(items) = obj.get("items").and_then(|v| v.seq()) else {
        return;
    };
    for item in items {
        read_document(file, item.node(), diags, out);
    }
}
