//! cert-manager Issuer / ClusterIssuer: `selfSigned: {}` or `ca: {secretName}`. Issuers that
//! need an outside service (ACME, Vault, Venafi) cannot work on a standalone broker.

use super::metadata;
use crate::diag::Origin;
use crate::reader::{Located, Val};

pub(crate) struct RawIssuer {
    pub origin: Origin,
    pub name: Located<String>,
    pub cluster: bool,
    pub kind: RawIssuerKind,
}

pub(crate) enum RawIssuerKind {
    SelfSigned,
    Ca(Located<String>),
}

const ROOT: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const SPEC: &[&str] = &["selfSigned", "ca", "acme", "vault", "venafi"];
const SELF_SIGNED: &[&str] = &["crlDistributionPoints"];
const CA: &[&str] = &[
    "secretName",
    "crlDistributionPoints",
    "ocspServers",
    "issuingCertificateURLs",
];

pub(crate) fn read(root: &Val<'_>, cluster: bool) -> Option<RawIssuer> {
    let obj = root.obj(ROOT)?;
    let name = metadata(&obj);
    let spec_val = obj.req("spec")?;
    let spec = spec_val.obj(SPEC)?;
    for key in ["acme", "vault", "venafi"] {
        if let Some(v) = spec.get(key) {
            v.error("unsupported issuer type: edgemq supports selfSigned and ca issuers");
        }
    }
    let self_signed = spec.get("selfSigned");
    let ca = spec.get("ca");
    if self_signed.is_some() && ca.is_some() {
        spec_val.error("set only one of selfSigned and ca");
    }
    let kind = if let Some(s) = self_signed {
        s.obj(SELF_SIGNED)?;
        RawIssuerKind::SelfSigned
    } else if let Some(c) = ca {
        RawIssuerKind::Ca(c.obj(CA)?.req("secretName")?.name()?)
    } else {
        if ["acme", "vault", "venafi"]
            .iter()
            .all(|k| spec.get(k).is_none())
        {
            spec_val.error("set selfSigned: {} or ca: {secretName: …}");
        }
        return None;
    };
    Some(RawIssuer {
        origin: obj.cx().origin.clone(),
        name: name?,
        cluster,
        kind,
    })
}
