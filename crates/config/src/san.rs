//! Default subject alternative names of automatic server certificates.
//!
//! In AIO `san` is optional: the default listener's certificate names the listener's service.
//! A standalone broker is reached by its service name (when clients resolve it, e.g. through
//! `/etc/hosts`), by this machine's host name, and on this machine as `localhost` /
//! `127.0.0.1`. So a certificate without `san.dns` and `san.ip` gets, in this order:
//! `serviceName` (when set), the host name, `localhost` and `127.0.0.1` (every port binds
//! either 127.0.0.1 or 0.0.0.0, and both are reachable on the loopback address). The first
//! name is also the certificate's common name. See docs/configuration.md.

use std::net::{IpAddr, Ipv4Addr};

/// This machine's host name, lower-cased, when it is a usable DNS name (Linux:
/// `/proc/sys/kernel/hostname`, then `/etc/hostname`, then `$HOSTNAME`).
pub fn host_name() -> Option<String> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    [
        read("/proc/sys/kernel/hostname"),
        read("/etc/hostname"),
        std::env::var("HOSTNAME").ok(),
    ]
    .into_iter()
    .flatten()
    .map(|h| h.trim().to_ascii_lowercase())
    .find(|h| is_host_name(h))
}

/// A DNS name every TLS client accepts in a certificate: dot-separated labels of letters,
/// digits and `-` (not at either end), each 1–63 characters, at most 253 in all, not an IP
/// address.
pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The default DNS and IP SANs for a port bound to `bind`.
pub(crate) fn default_sans(
    service_name: Option<&str>,
    host: Option<&str>,
    bind: IpAddr,
) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if is_host_name(name) && !dns.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            dns.push(name.to_owned());
        }
    };
    if let Some(s) = service_name {
        push(s);
    }
    if let Some(h) = host {
        push(h);
    }
    let mut ip = Vec::new();
    if bind.is_loopback() || bind.is_unspecified() {
        push("localhost");
        ip.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    } else {
        ip.push(bind);
    }
    (dns, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert!(is_host_name("aio-broker"));
        assert!(is_host_name("n013edge.local"));
        assert!(!is_host_name("my_service"));
        assert!(!is_host_name("-x"));
        assert!(!is_host_name("10.0.0.1"));
        assert!(!is_host_name(""));
    }

    #[test]
    fn defaults() {
        let (dns, ip) = default_sans(
            Some("aio-broker"),
            Some("edge1"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        assert_eq!(dns, ["aio-broker", "edge1", "localhost"]);
        assert_eq!(ip, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let (dns, _) = default_sans(None, Some("localhost"), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(dns, ["localhost"]);
    }
}
