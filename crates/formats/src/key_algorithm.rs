//! Private key algorithm names: cert-manager's `privateKey.algorithm` values as AIO spells
//! them (`Ec256`, `Rsa2048`, …), which the `certs` commands also take in lower case.

use std::fmt;
use std::str::FromStr;

/// The key types a certificate can be issued for (edgemq-tls generates each of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    Ec256,
    Ec384,
    Ec521,
    Ed25519,
    Rsa2048,
    Rsa4096,
    Rsa8192,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 7] = [
        KeyAlgorithm::Ec256,
        KeyAlgorithm::Ec384,
        KeyAlgorithm::Ec521,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::Rsa8192,
    ];

    /// The spelling used in BrokerListener resources (`Ec256`, `Rsa2048`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ec256 => "Ec256",
            KeyAlgorithm::Ec384 => "Ec384",
            KeyAlgorithm::Ec521 => "Ec521",
            KeyAlgorithm::Ed25519 => "Ed25519",
            KeyAlgorithm::Rsa2048 => "Rsa2048",
            KeyAlgorithm::Rsa4096 => "Rsa4096",
            KeyAlgorithm::Rsa8192 => "Rsa8192",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of [`KeyAlgorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key algorithm \"{given}\"; expected one of: {}", names())]
pub struct UnknownKeyAlgorithm {
    pub given: String,
}

fn names() -> String {
    let names: Vec<&str> = KeyAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
    names.join(", ")
}

/// Case-insensitive, so both the resource spelling (`Ec256`) and the CLI's (`ec256`) parse.
/// Surrounding white space is not trimmed: `" Ec256"` is refused, as `serve`'s CLI did.
impl FromStr for KeyAlgorithm {
    type Err = UnknownKeyAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKeyAlgorithm {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for a in KeyAlgorithm::ALL {
            assert_eq!(a.as_str().parse(), Ok(a));
            assert_eq!(a.to_string().to_lowercase().parse(), Ok(a));
        }
    }

    #[test]
    fn unknown_and_padded_names_are_refused() {
        for bad in ["dsa", "Ec999", "", " Ec256", "Ec256 ", "Rsa-2048"] {
            let err = bad.parse::<KeyAlgorithm>().unwrap_err();
            assert_eq!(err.given, bad);
        }
        assert_eq!(
            "Ec999".parse::<KeyAlgorithm>().unwrap_err().to_string(),
            "unknown key algorithm \"Ec999\"; expected one of: Ec256, Ec384, Ec521, Ed25519, \
             Rsa2048, Rsa4096, Rsa8192"
        );
    }
}
