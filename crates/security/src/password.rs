//! Username/password authentication: a `passwords.toml` of PBKDF2-SHA512 hashes in the AIO
//! PHC form `$pbkdf2-sha512$i=ITERATIONS,l=64$SALT$HASH` (standard base64 without padding;
//! the salt is used as its decoded bytes).
//!
//! Verification costs ~0.1 s of CPU at 210,000 iterations, so it runs on the blocking pool,
//! at most a few at a time, rate-limited per source address, and successful results are
//! cached under a keyed hash of the password (the password itself is never stored).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, Semaphore};

use edgemq_codec::ReasonCode;
use edgemq_core::auth::{BoxFuture, ConnectRequest};
use edgemq_formats::passwords as phc;
use edgemq_formats::Problems;

use crate::{Method, Outcome};

/// Default iterations for new hashes (OWASP's 2023 figure for PBKDF2-HMAC-SHA512).
pub const DEFAULT_ITERATIONS: u32 = 210_000;
const SALT_LEN: usize = 16;

pub use edgemq_formats::passwords::{HashError, PasswordsError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("passwords.toml: {0}")]
    File(Problems<PasswordsError>),
}

/// A PHC hash (its syntax is edgemq-formats', the parser `check` uses), with hashing and
/// verification. `Debug` leaves out the salt and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash(phc::PasswordHash);

impl std::str::FromStr for PasswordHash {
    type Err = PasswordError;

    fn from_str(s: &str) -> Result<Self, PasswordError> {
        Ok(PasswordHash(s.parse()?))
    }
}

impl PasswordHash {
    /// Hash `password` with a fresh random 16-byte salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<Self, PasswordError> {
        // Checked before deriving: PBKDF2 with 0 rounds is not a hash.
        if !phc::ITERATIONS.contains(&iterations) {
            return Err(HashError::Iterations.into());
        }
        let salt: [u8; SALT_LEN] = rand::random();
        let mut hash = vec![0u8; phc::KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        Ok(PasswordHash(phc::PasswordHash::from_parts(
            iterations,
            salt.to_vec(),
            hash,
        )?))
    }

    /// The PHC string (`$pbkdf2-sha512$i=…,l=64$…$…`).
    pub fn to_phc(&self) -> String {
        self.0.to_phc()
    }

    /// Constant-time comparison of the derived key. CPU-heavy: call off the async workers.
    pub fn verify(&self, password: &[u8]) -> bool {
        derived_equals(password, self.0.salt(), self.0.iterations(), self.0.hash())
    }
}

fn derived_equals(password: &[u8], salt: &[u8], iterations: u32, expected: &[u8]) -> bool {
    let mut derived = vec![0u8; expected.len()];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut derived);
    derived.ct_eq(expected).into()
}

/// What an unknown user's password is checked against, so that timing does not reveal
/// which users exist: the same work as the costliest real hash.
#[derive(Clone)]
struct Decoy {
    iterations: u32,
    salt: [u8; SALT_LEN],
}

impl Decoy {
    fn spend(&self, password: &[u8]) {
        derived_equals(password, &self.salt, self.iterations, &[0; phc::KEY_LEN]);
    }
}

/// One user of `passwords.toml`.
#[derive(Debug, Clone)]
pub struct User {
    pub hash: PasswordHash,
    pub attributes: Vec<(String, String)>,
}

/// The parsed `passwords.toml`.
#[derive(Debug, Clone, Default)]
pub struct PasswordDb {
    users: HashMap<String, User>,
}

impl PasswordDb {
    /// Through edgemq-formats, so `check` refuses exactly what this refuses.
    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        let users = phc::parse(text.as_bytes()).map_err(PasswordError::File)?;
        let users = users
            .into_iter()
            .map(|u| {
                let user = User {
                    hash: PasswordHash(u.hash),
                    attributes: u.attributes,
                };
                (u.name, user)
            })
            .collect();
        Ok(PasswordDb { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }
}

/// Whether a user name is a service-account-token form, which belongs to the SAT method.
pub fn is_sat_username(username: &str) -> bool {
    username == "$sat" || username.starts_with("sat://")
}

/// Limits for the expensive part.
#[derive(Debug, Clone, Copy)]
pub struct VerifyLimits {
    /// Hash verifications running at once (each holds a blocking thread).
    pub concurrent: usize,
    /// Per source address: burst of uncached verifications, then `per_second`.
    pub burst: u32,
    pub per_second: u32,
    /// Successful results remembered.
    pub cache_entries: usize,
    /// Longest wait for a per-address token before refusing with 0x89 Server busy.
    pub max_wait: Duration,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits {
            concurrent: 2,
            burst: 20,
            per_second: 10,
            cache_entries: 10_000,
            max_wait: Duration::from_secs(5),
        }
    }
}

/// The `UsernamePassword` method.
pub struct PasswordMethod {
    db: Arc<PasswordDb>,
    limits: VerifyLimits,
    verifying: Arc<Semaphore>,
    /// Per-process random key for the cache's password fingerprints.
    cache_key: [u8; 32],
    cache: Mutex<HashMap<CacheKey, Vec<(String, String)>>>,
    inflight: Mutex<HashMap<CacheKey, Arc<OnceCell<Outcome>>>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    decoy: Decoy,
}

/// (user name, keyed hash of the password).
type CacheKey = (String, [u8; 32]);

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl PasswordMethod {
    pub fn new(db: PasswordDb, limits: VerifyLimits) -> Self {
        let iterations = db
            .users
            .values()
            .map(|u| u.hash.0.iterations())
            .max()
            .unwrap_or(DEFAULT_ITERATIONS);
        let decoy = Decoy {
            iterations,
            salt: rand::random(),
        };
        PasswordMethod {
            db: Arc::new(db),
            limits,
            verifying: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            cache_key: rand::random(),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            decoy,
        }
    }

    fn fingerprint(&self, password: &[u8]) -> [u8; 32] {
        // Infallible for HMAC: any key length is accepted.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Take one token from the address's bucket, waiting for the refill up to
    /// `limits.max_wait` (a fleet behind one NAT address reconnecting at once is slowed
    /// down, not refused); false when the wait would be longer.
    async fn take_token(&self, ip: IpAddr) -> bool {
        let wait = {
            let now = Instant::now();
            let mut buckets = self.buckets.lock();
            if buckets.len() > 100_000 {
                // A scan from many addresses: forget idle buckets rather than grow.
                buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(10));
            }
            let burst = f64::from(self.limits.burst.max(1));
            let rate = f64::from(self.limits.per_second.max(1));
            let bucket = buckets.entry(ip).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + refill).min(burst);
            bucket.at = now;
            // Reserve the token now (the balance may go negative): waiters queue in order.
            let wait = Duration::from_secs_f64(((1.0 - bucket.tokens) / rate).max(0.0));
            if wait > self.limits.max_wait {
                return false;
            }
            bucket.tokens -= 1.0;
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        true
    }

    async fn check_password(&self, request: &ConnectRequest<'_>) -> Outcome {
        let (Some(username), Some(password)) = (request.username, request.password) else {
            return Outcome::not_relevant("no user name and password");
        };
        if is_sat_username(username) {
            return Outcome::not_relevant("a service account token user name");
        }
        // HMAC pads short keys with zero bytes, so PBKDF2 cannot tell "pw" from "pw\0":
        // refuse such variants instead of admitting them.
        if password.last() == Some(&0) {
            return Outcome::refuse(
                ReasonCode::BadUserNameOrPassword,
                format!("password for user {username:?} ends with a NUL byte"),
            );
        }
        let fingerprint = self.fingerprint(password);
        let key = (username.to_string(), fingerprint);
        if let Some(attributes) = self.cache.lock().get(&key) {
            return Outcome::admit(attributes.clone(), None);
        }
        // Concurrent CONNECTs with the same credentials (a fleet restarting) share one
        // verification instead of each paying for it.
        let cell = self
            .inflight
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let outcome = cell
            .get_or_init(|| self.verify_uncached(username, password, request.peer.ip()))
            .await
            .clone();
        {
            let mut inflight = self.inflight.lock();
            if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&key);
            }
        }
        if let Outcome::Admit(admission) = &outcome {
            let mut cache = self.cache.lock();
            if cache.len() >= self.limits.cache_entries {
                cache.clear();
            }
            cache.insert(key, admission.attributes.clone());
        }
        outcome
    }

    async fn verify_uncached(&self, username: &str, password: &Bytes, ip: IpAddr) -> Outcome {
        if !self.take_token(ip).await {
            return Outcome::refuse(
                ReasonCode::ServerBusy,
                format!(
                    "too many password verifications from {ip} (limit {}/s after a burst of {})",
                    self.limits.per_second, self.limits.burst
                ),
            );
        }
        let user = self.db.user(username).cloned();
        let hash = user.as_ref().map(|u| u.hash.clone());
        let decoy = self.decoy.clone();
        let Ok(_permit) = self.verifying.clone().acquire_owned().await else {
            return Outcome::refuse(ReasonCode::ServerUnavailable, "shutting down");
        };
        let password: Bytes = password.clone();
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => hash.verify(&password),
            None => {
                decoy.spend(&password);
                false
            }
        })
        .await
        .unwrap_or(false);
        match user {
            Some(user) if ok => Outcome::admit(user.attributes, None),
            Some(_) => Outcome::refuse(
                ReasonCode::BadUserNameOrPassword,
                format!("wrong password for user {username:?}"),
            ),
            None => Outcome::refuse(
                ReasonCode::BadUserNameOrPassword,
                format!("unknown user {username:?}"),
            ),
        }
    }
}

impl Method for PasswordMethod {
    fn name(&self) -> &'static str {
        "UsernamePassword"
    }

    fn check<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.check_password(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two test vectors of the AIO documentation (spec/security.md).
    const CLIENT1: &str = "$pbkdf2-sha512$i=100000,l=64$HqJwOCHweNk1pLryiu3RsA$KVSvxKYcibIG5S5n55RvxKRTdAAfCUtBJoy5IuFzdSZyzkwvUcU+FPawEWFPn+06JyZsndfRTfpiEh+2eSJLkg";
    const CLIENT2: &str = "$pbkdf2-sha512$i=100000,l=64$+H7jXzcEbq2kkyvpxtxePQ$jTzW6fSesiuNRLMIkDDAzBEILk7iyyDZ3rjlEwQap4UJP4TaCR+EXQXNukO7qNJWlPPP8leNnJDCBgX/255Ezw";

    #[test]
    fn aio_documentation_vectors_verify() {
        let h1: PasswordHash = CLIENT1.parse().unwrap();
        assert!(h1.verify(b"password"));
        assert!(!h1.verify(b"password2"));
        let h2: PasswordHash = CLIENT2.parse().unwrap();
        assert!(h2.verify(b"password2"));
        assert!(!h2.verify(b"password"));
        assert_eq!(h1.to_phc(), CLIENT1, "round trip keeps the exact form");
    }

    #[test]
    fn new_hashes_verify_and_use_the_aio_form() {
        let h = PasswordHash::new(b"s3cret", 1000).unwrap();
        let phc = h.to_phc();
        assert!(phc.starts_with("$pbkdf2-sha512$i=1000,l=64$"), "{phc}");
        let parsed: PasswordHash = phc.parse().unwrap();
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cret "));
        assert_ne!(
            PasswordHash::new(b"s3cret", 1000).unwrap().to_phc(),
            phc,
            "fresh salt"
        );
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        for (text, want) in [
            ("plain", HashError::Format),
            ("$pbkdf2-sha256$i=1,l=64$AA$AA", HashError::Format),
            ("$pbkdf2-sha512$i=0,l=64$AAAA$AAAA", HashError::Iterations),
            ("$pbkdf2-sha512$i=10,l=64$!!$AAAA", HashError::Base64),
            (
                "$pbkdf2-sha512$i=10,l=64$AAAA$AAAA",
                HashError::Length {
                    declared: 64,
                    actual: 3,
                },
            ),
        ] {
            assert_eq!(
                text.parse::<PasswordHash>().unwrap_err(),
                PasswordError::Hash(want),
                "{text}"
            );
        }
    }

    #[test]
    fn passwords_toml_from_the_spec_parses_with_attributes() {
        let db = PasswordDb::parse(&format!(
            "[client1]\npassword = \"{CLIENT1}\"\n[client1.attributes]\nfloor = \"floor1\"\nsite = \"site1\"\n\n[client2]\npassword = \"{CLIENT2}\"\n[client2.attributes]\nfloor = \"floor2\"\nsite = \"site1\"\n"
        ))
        .unwrap();
        assert_eq!(db.len(), 2);
        let u = db.user("client1").unwrap();
        assert_eq!(
            u.attributes,
            vec![
                ("floor".into(), "floor1".into()),
                ("site".into(), "site1".into())
            ]
        );
        let err = PasswordDb::parse("[bad]\npassword = \"x\"\n").unwrap_err();
        assert_eq!(err.to_string(), "passwords.toml: line 2: [bad] password: not a PBKDF2-SHA512 hash: expected $pbkdf2-sha512$i=N,l=64$SALT$HASH (see edgemq password-hash)");
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let h: PasswordHash = CLIENT1.parse().unwrap();
        let shown = format!("{h:?}");
        assert!(!shown.contains("KVSv"), "{shown}");
    }
}
