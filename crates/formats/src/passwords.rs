//! `passwords.toml`: one `[user]` table per user, with a PBKDF2-SHA512 `password` in the PHC
//! form `$pbkdf2-sha512$i=ITERATIONS,l=64$SALT$HASH` (standard base64 without padding) and
//! optional string `attributes`:
//!
//! ```toml
//! [client1]
//! password = "$pbkdf2-sha512$i=210000,l=64$…$…"
//! attributes = { floor = "floor1" }
//! ```
//!
//! Hashing and verifying live in edgemq-security; this is only the syntax.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use toml::de::DeValue;
use toml::Spanned;

use crate::toml_doc::{self, string_table, Doc, Key, SyntaxError};
use crate::Problems;

/// The derived key length the PHC `l=` defaults to (SHA-512's output).
pub const KEY_LEN: usize = 64;
/// The iteration counts accepted: at least one, and few enough that one verification
/// cannot hold a thread for minutes.
pub const ITERATIONS: std::ops::RangeInclusive<u32> = 1..=10_000_000;

/// Why a PHC string is not a usable PBKDF2-SHA512 hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("not a PBKDF2-SHA512 hash: expected $pbkdf2-sha512$i=N,l=64$SALT$HASH")]
    Format,
    #[error("iterations must be between 1 and 10,000,000")]
    Iterations,
    #[error("salt or hash is not standard base64 without padding")]
    Base64,
    #[error("the hash is {actual} bytes but l={declared}")]
    Length { declared: usize, actual: usize },
}

/// A parsed PHC hash. `Debug` leaves out the salt and hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// A hash from its parts, held to the same rules as a parsed one.
    pub fn from_parts(iterations: u32, salt: Vec<u8>, hash: Vec<u8>) -> Result<Self, HashError> {
        if !ITERATIONS.contains(&iterations) {
            return Err(HashError::Iterations);
        }
        if hash.is_empty() {
            return Err(HashError::Length {
                declared: KEY_LEN,
                actual: 0,
            });
        }
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn hash(&self) -> &[u8] {
        &self.hash
    }

    /// The PHC string (`$pbkdf2-sha512$i=…,l=64$…$…`).
    pub fn to_phc(&self) -> String {
        format!(
            "$pbkdf2-sha512$i={},l={}${}${}",
            self.iterations,
            self.hash.len(),
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(&self.hash)
        )
    }
}

impl std::str::FromStr for PasswordHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, HashError> {
        let mut parts = s.split('$');
        let (Some(""), Some("pbkdf2-sha512"), Some(params), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(HashError::Format);
        };
        let (iterations, declared) = phc_params(params)?;
        if !ITERATIONS.contains(&iterations) {
            return Err(HashError::Iterations);
        }
        let decode = |b64: &str| STANDARD_NO_PAD.decode(b64).map_err(|_| HashError::Base64);
        let (salt, hash) = (decode(salt)?, decode(hash)?);
        if hash.len() != declared || hash.is_empty() {
            return Err(HashError::Length {
                declared,
                actual: hash.len(),
            });
        }
        PasswordHash::from_parts(iterations, salt, hash)
    }
}

/// `i=N,l=N` (`l` optional, 64 when absent): (iterations, declared key length).
fn phc_params(params: &str) -> Result<(u32, usize), HashError> {
    let mut iterations = None;
    let mut length = None;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("i", v)) => iterations = v.parse::<u32>().ok(),
            Some(("l", v)) => length = v.parse::<usize>().ok(),
            _ => return Err(HashError::Format),
        }
    }
    Ok((
        iterations.ok_or(HashError::Format)?,
        length.unwrap_or(KEY_LEN),
    ))
}

/// One user of `passwords.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub hash: PasswordHash,
    /// In key order.
    pub attributes: Vec<(String, String)>,
}

/// What is wrong in a `passwords.toml`, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordsError {
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("line {line}: [{user}] must be a table with a password")]
    NotATable { line: usize, user: String },
    #[error("line {line}: [{user}] has no password")]
    NoPassword { line: usize, user: String },
    #[error("line {line}: [{user}] password: {error} (see edgemq password-hash)")]
    Hash {
        line: usize,
        user: String,
        error: HashError,
    },
    #[error("line {line}: [{user}.attributes] must hold string values")]
    Attributes { line: usize, user: String },
    #[error("line {line}: [{user}] unknown key {key} (expected password and attributes)")]
    UnknownKey {
        line: usize,
        user: String,
        key: String,
    },
}

/// Every user, or every problem of the file.
pub fn parse(bytes: &[u8]) -> Result<Vec<User>, Problems<PasswordsError>> {
    toml_doc::entries(bytes, user)
}

/// A `[user]` table, or all that is wrong with it.
fn user(
    doc: &Doc<'_>,
    name: &Key<'_>,
    entry: &Spanned<DeValue<'_>>,
) -> Result<User, Vec<PasswordsError>> {
    let (line, user) = (doc.line(name), name.get_ref().to_string());
    let Some(table) = entry.get_ref().as_table() else {
        return Err(vec![PasswordsError::NotATable { line, user }]);
    };
    let hash = password(doc, table.get("password"), line, &user);
    let attributes = match table.get("attributes") {
        None => Ok(Vec::new()),
        Some(a) => string_table(a.get_ref()).ok_or_else(|| PasswordsError::Attributes {
            line: doc.line(a),
            user: user.clone(),
        }),
    };
    let mut problems: Vec<PasswordsError> = table
        .iter()
        .filter(|(key, _)| !matches!(key.get_ref().as_ref(), "password" | "attributes"))
        .map(|(key, _)| PasswordsError::UnknownKey {
            line: doc.line(key),
            user: user.clone(),
            key: key.get_ref().to_string(),
        })
        .collect();
    match (hash, attributes) {
        (Ok(hash), Ok(attributes)) if problems.is_empty() => Ok(User {
            name: user,
            hash,
            attributes,
        }),
        (hash, attributes) => {
            // The password and attributes first, then unknown keys.
            let first = [hash.err(), attributes.err()].into_iter().flatten();
            problems.splice(0..0, first);
            Err(problems)
        }
    }
}

fn password(
    doc: &Doc<'_>,
    value: Option<&Spanned<DeValue<'_>>>,
    line: usize,
    user: &str,
) -> Result<PasswordHash, PasswordsError> {
    let Some(value) = value else {
        return Err(PasswordsError::NoPassword {
            line,
            user: user.to_owned(),
        });
    };
    // A password that is not a string cannot be a hash either.
    let parsed = value.get_ref().as_str().ok_or(HashError::Format);
    parsed
        .and_then(str::parse)
        .map_err(|error| PasswordsError::Hash {
            line: doc.line(value),
            user: user.to_owned(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `password` hashed with 1000 iterations (salt "salt-salt-salt16").
    const HASH: &str = "$pbkdf2-sha512$i=1000,l=64$c2FsdC1zYWx0LXNhbHQxNg$\
        of/HLt/RfoJM3dM0MohlZRzZaF1jwihKfS+6sSSVF3RjUoMlDyg5cUWFwkgS8JUwFeKt2tADhRRT3+VDt/PNJA";

    fn errors(text: &str) -> Vec<PasswordsError> {
        parse(text.as_bytes()).expect_err("must be refused").0
    }

    #[test]
    fn users_with_and_without_attributes() {
        let text = format!(
            "[client1]\npassword = \"{HASH}\"\n\n[client2]\npassword = \"{HASH}\"\n\
             [client2.attributes]\nfloor = \"floor1\"\nsite = \"s1\"\n"
        );
        let users = parse(text.as_bytes()).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name, "client1");
        assert!(users[0].attributes.is_empty());
        assert_eq!(users[0].hash.iterations(), 1000);
        assert_eq!(users[0].hash.hash().len(), KEY_LEN);
        assert_eq!(
            users[1].attributes,
            [
                ("floor".into(), "floor1".into()),
                ("site".into(), "s1".into())
            ]
        );
    }

    #[test]
    fn phc_round_trips() {
        let hash: PasswordHash = HASH.parse().unwrap();
        assert_eq!(hash.to_phc(), HASH);
        assert_eq!(hash.salt(), b"salt-salt-salt16");
        // `l` may be left out; it means 64.
        assert_eq!(HASH.replace(",l=64", "").parse::<PasswordHash>(), Ok(hash));
    }

    #[test]
    fn each_hash_error() {
        let salt_hash = HASH.splitn(4, '$').nth(3).unwrap();
        let hash_only = salt_hash.split('$').nth(1).unwrap();
        let cases = [
            ("secret".to_owned(), HashError::Format),
            (
                format!("$pbkdf2-sha256$i=1000${salt_hash}"),
                HashError::Format,
            ),
            (
                format!("$pbkdf2-sha512$i=1000,x=1${salt_hash}"),
                HashError::Format,
            ),
            (
                format!("$pbkdf2-sha512$l=64${salt_hash}"),
                HashError::Format,
            ),
            (
                format!("$pbkdf2-sha512$i=0${salt_hash}"),
                HashError::Iterations,
            ),
            (
                format!("$pbkdf2-sha512$i=10000001${salt_hash}"),
                HashError::Iterations,
            ),
            (
                format!("$pbkdf2-sha512$i=1$!!${hash_only}"),
                HashError::Base64,
            ),
            (
                format!("$pbkdf2-sha512$i=1,l=32${salt_hash}"),
                HashError::Length {
                    declared: 32,
                    actual: 64,
                },
            ),
            (
                "$pbkdf2-sha512$i=1,l=0$c2FsdA$".to_owned(),
                HashError::Length {
                    declared: 0,
                    actual: 0,
                },
            ),
        ];
        for (phc, expected) in cases {
            assert_eq!(phc.parse::<PasswordHash>(), Err(expected), "{phc}");
        }
    }

    #[test]
    fn each_file_error_with_its_line() {
        assert!(matches!(
            errors("[a]\npassword = \"x\"\n[b\n")[..],
            [PasswordsError::Syntax(SyntaxError::Toml {
                line: Some(3),
                ..
            })]
        ));
        assert_eq!(
            parse(b"\xff").unwrap_err().0,
            [PasswordsError::Syntax(SyntaxError::NotUtf8)]
        );
        let text = format!(
            "a = 1\n[b]\nattributes = {{}}\n[c]\npassword = \"plain\"\n\
             [d]\npassword = \"{HASH}\"\nattributes = {{ n = 1 }}\nrole = \"x\"\n"
        );
        let messages: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "line 1: [a] must be a table with a password",
                "line 2: [b] has no password",
                "line 5: [c] password: not a PBKDF2-SHA512 hash: expected \
                 $pbkdf2-sha512$i=N,l=64$SALT$HASH (see edgemq password-hash)",
                "line 8: [d.attributes] must hold string values",
                "line 9: [d] unknown key role (expected password and attributes)",
            ]
        );
    }

    #[test]
    fn a_password_that_is_not_a_string_is_not_a_hash() {
        assert!(matches!(
            errors("[a]\npassword = 7\n")[..],
            [PasswordsError::Hash {
                line: 2,
                error: HashError::Format,
                ..
            }]
        ));
    }

    #[test]
    fn debug_hides_the_hash() {
        let hash: PasswordHash = HASH.parse().unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash { iterations: 1000, .. }");
    }
}
