//! BrokerAuthorization: v1 (`cache: Enabled`), transitional (`cache` or `enableCache`), legacy
//! v1beta1 (`enableCache`, `listenerRef`, `clientids`). Rules are checked here: topic filters
//! and `{principal.*}` variables (by edgemq-formats, as `serve` parses them), required topics.

use base64::Engine as _;
use edgemq_formats::topic_pattern::TopicPattern;

use super::{metadata, ApiVersion};
use crate::diag::Origin;
use crate::model::{
    Authorization, BrokerMethod, BrokerResource, Principals, Rule, StateStoreKeyType,
    StateStoreMethod, StateStoreResource,
};
use crate::reader::{child, Located, Obj, Val};
use crate::yaml::Value;

pub(crate) struct RawAuthorization {
    pub origin: Origin,
    pub name: Located<String>,
    /// Legacy only: the listeners this policy serves.
    pub listener_refs: Option<Vec<Located<String>>>,
    pub authorization: Authorization,
}

const ROOT: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const SPEC: &[&str] = &["authorizationPolicies"];
const LEGACY_SPEC: &[&str] = &["listenerRef", "authorizationPolicies"];
const V1_POLICIES: &[&str] = &["cache", "rules"];
const TRANSITIONAL_POLICIES: &[&str] = &["cache", "enableCache", "rules"];
const LEGACY_POLICIES: &[&str] = &["enableCache", "rules"];
const RULE: &[&str] = &["principals", "brokerResources", "stateStoreResources"];
const PRINCIPALS: &[&str] = &["clientIds", "clientids", "usernames", "attributes"];
const BROKER_RESOURCE: &[&str] = &["method", "topics", "clientIds"];
const STATE_STORE_RESOURCE: &[&str] = &["method", "keyType", "keys"];

const BROKER_METHODS: &[(&str, BrokerMethod)] = &[
    ("Connect", BrokerMethod::Connect),
    ("Publish", BrokerMethod::Publish),
    ("Subscribe", BrokerMethod::Subscribe),
];
const STATE_STORE_METHODS: &[(&str, StateStoreMethod)] = &[
    ("Read", StateStoreMethod::Read),
    ("Write", StateStoreMethod::Write),
    ("ReadWrite", StateStoreMethod::ReadWrite),
];
const KEY_TYPES: &[(&str, StateStoreKeyType)] = &[
    ("Pattern", StateStoreKeyType::Pattern),
    ("String", StateStoreKeyType::String),
    ("Binary", StateStoreKeyType::Binary),
];

pub(crate) fn read(root: &Val<'_>, version: ApiVersion) -> Option<RawAuthorization> {
    let obj = root.obj(ROOT)?;
    let name = metadata(&obj);
    let legacy = version == ApiVersion::Legacy;
    // Fail closed: an ignored misspelling here could weaken every port that uses it.
    let spec = obj
        .req("spec")?
        .strict()
        .obj(if legacy { LEGACY_SPEC } else { SPEC })?;
    let listener_refs = if legacy {
        spec.req("listenerRef").and_then(|v| v.name_list())
    } else {
        None
    };
    let policies = spec.req("authorizationPolicies")?.obj(match version {
        ApiVersion::V1 => V1_POLICIES,
        ApiVersion::Transitional => TRANSITIONAL_POLICIES,
        ApiVersion::Legacy => LEGACY_POLICIES,
    })?;
    let cache = read_cache(&policies, version);
    // Read once: a second read would report a wrong type twice.
    let items = policies.get("rules").map(|r| r.seq());
    let no_rules = match &items {
        None => true,
        Some(Some(rules)) => rules.is_empty(),
        Some(None) => false,
    };
    if no_rules {
        policies.cx().warn(
            policies.line(),
            &child(policies.path(), "rules"),
            "no rules: every action is denied on ports that use this policy",
        );
    }
    let rules: Vec<Rule> = items
        .flatten()
        .unwrap_or_default()
        .iter()
        .filter_map(rule)
        .collect();
    let name = name?;
    Some(RawAuthorization {
        origin: obj.cx().origin.clone(),
        authorization: Authorization {
            name: name.value.clone(),
            cache,
            rules,
        },
        name,
        listener_refs,
    })
}

/// v1 `cache: Enabled|Disabled`, v1beta1 `enableCache: bool`; enabled by default (v1 schema).
fn read_cache(p: &Obj<'_>, version: ApiVersion) -> bool {
    let enum_cache = || {
        p.get("cache")
            .and_then(|c| c.one_of(&[("Enabled", true), ("Disabled", false)]))
    };
    let bool_cache = || p.get("enableCache").and_then(|c| c.bool());
    match version {
        ApiVersion::V1 => enum_cache(),
        ApiVersion::Transitional => enum_cache().or_else(bool_cache),
        ApiVersion::Legacy => bool_cache(),
    }
    .unwrap_or(true)
}

fn rule(item: &Val<'_>) -> Option<Rule> {
    let r = item.obj(RULE)?;
    let principals = r.req("principals").and_then(|p| principals(&p));
    let broker_resources = r
        .req("brokerResources")
        .and_then(|b| b.seq())
        .unwrap_or_default()
        .iter()
        .filter_map(broker_resource)
        .collect();
    let state_store_resources = r
        .get("stateStoreResources")
        .and_then(|s| s.seq())
        .unwrap_or_default()
        .iter()
        .filter_map(state_store_resource)
        .collect();
    Some(Rule {
        principals: principals?,
        broker_resources,
        state_store_resources,
    })
}

fn principals(v: &Val<'_>) -> Option<Principals> {
    let p = v.obj(PRINCIPALS)?;
    let list = |key: &str| p.get(key).and_then(|l| l.str_list()).unwrap_or_default();
    let mut client_ids = list("clientIds");
    client_ids.extend(list("clientids"));
    let usernames = list("usernames");
    let attributes: Vec<_> = p
        .get("attributes")
        .and_then(|a| a.seq())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let map = m.str_map()?;
            if map.is_empty() {
                // An empty map would match every client: almost certainly a mistake.
                m.error("an empty attributes map would match every client");
                return None;
            }
            Some(map)
        })
        .collect();
    if client_ids.is_empty() && usernames.is_empty() && attributes.is_empty() {
        v.warn("no clientIds, usernames or attributes: this rule applies to no client");
    }
    Some(Principals {
        client_ids,
        usernames,
        attributes,
    })
}

fn broker_resource(item: &Val<'_>) -> Option<BrokerResource> {
    let b = item.obj(BROKER_RESOURCE)?;
    let method = b.req("method").and_then(|m| m.one_of(BROKER_METHODS));
    let topics_val = b.get("topics");
    let topic_items = topics_val.as_ref().map(|t| t.seq());
    let topics: Vec<String> = topic_items
        .iter()
        .flatten()
        .flatten()
        .filter_map(|item| {
            let topic = item.string()?;
            // The parser `serve` compiles the policy with.
            TopicPattern::parse(&topic)
                .map_err(|e| item.error(e.to_string()))
                .ok()?;
            Some(topic)
        })
        .collect();
    let client_ids = b
        .get("clientIds")
        .and_then(|c| c.str_list())
        .unwrap_or_default();
    let method = method?;
    match method {
        BrokerMethod::Connect => {
            if let Some(t) = &topics_val {
                t.warn("topics are not used by Connect; ignored");
            }
        }
        BrokerMethod::Publish | BrokerMethod::Subscribe => {
            if let Some(c) = b.get("clientIds") {
                c.warn("clientIds are only used by Connect; ignored");
            }
            let none_given = match &topic_items {
                None => true,
                Some(items) => items.as_ref().is_some_and(Vec::is_empty),
            };
            if none_given {
                b.cx().error(
                    b.line(),
                    &child(b.path(), "topics"),
                    "at least one topic is required for Publish and Subscribe",
                );
            }
        }
    }
    Some(BrokerResource {
        method,
        topics,
        client_ids,
    })
}

fn state_store_resource(item: &Val<'_>) -> Option<StateStoreResource> {
    let s = item.obj(STATE_STORE_RESOURCE)?;
    let method = s.req("method").and_then(|m| m.one_of(STATE_STORE_METHODS));
    let key_type = s.req("keyType").and_then(|k| k.one_of(KEY_TYPES));
    let keys_val = s.req("keys");
    let keys = keys_val
        .as_ref()
        .and_then(|k| k.name_list())
        .unwrap_or_default();
    if key_type == Some(StateStoreKeyType::Binary) {
        for key in &keys {
            if base64::engine::general_purpose::STANDARD
                .decode(&key.value)
                .is_err()
            {
                s.cx().error(
                    key.line,
                    &key.path,
                    format!("\"{}\" is not base64 (keyType Binary)", key.value),
                );
            }
        }
    }
    if keys_val
        .as_ref()
        .is_some_and(|k| matches!(k.node().value, Value::Seq(ref v) if v.is_empty()))
    {
        s.cx().error(
            s.line(),
            &child(s.path(), "keys"),
            "at least one key is required",
        );
    }
    Some(StateStoreResource {
        method: method?,
        key_type: key_type?,
        keys: keys.into_iter().map(|k| k.value).collect(),
    })
}
