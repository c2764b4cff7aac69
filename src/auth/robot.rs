//! Credentials berth generates: robot accounts (named in AccessPolicy `Robot` subjects) and the
//! short-lived pull credentials behind `pullSecrets`.
//!
//! Usernames carry who they are (`robot$<namespace>+<name>`, `pull$<namespace>+<policy>`, after
//! Harbor's `robot$`), so the token endpoint knows which stored hash to check without a lookup
//! table. Passwords are 256 random bits: a salted SHA-256 is enough to store them (nothing to
//! brute-force), and a slow password hash would make every token request pay for it.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ROBOT_PREFIX: &str = "robot$";
pub const PULL_PREFIX: &str = "pull$";

const PASSWORD_BYTES: usize = 32;
const SALT_BYTES: usize = 16;
const HASH_SCHEME: &str = "sha256";

/// `robot$<namespace>+<name>`.
pub fn robot_username(namespace: &str, name: &str) -> String {
    format!("{ROBOT_PREFIX}{namespace}+{name}")
}

/// `(namespace, name)` of a robot username, if it has the shape [`robot_username`] makes.
pub fn parse_robot_username(username: &str) -> Option<(&str, &str)> {
    parse_username(username, ROBOT_PREFIX)
}

/// `pull$<namespace>+<policy>`.
pub fn pull_username(namespace: &str, policy: &str) -> String {
    format!("{PULL_PREFIX}{namespace}+{policy}")
}

/// `(namespace, policy)` of a pull-secret username, if it has the shape [`pull_username`] makes.
pub fn parse_pull_username(username: &str) -> Option<(&str, &str)> {
    parse_username(username, PULL_PREFIX)
}

fn parse_username<'a>(username: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let (namespace, name) = username.strip_prefix(prefix)?.split_once('+')?;
    (valid_namespace(namespace) && valid_name(name)).then_some((namespace, name))
}

/// A namespace name: an RFC 1123 label.
pub fn valid_namespace(namespace: &str) -> bool {
    namespace.len() <= 63 && dns_label(namespace)
}

/// A robot's or policy's name: an RFC 1123 subdomain, like any object name, so it can also name
/// the Secret holding the robot's credentials.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(dns_label)
}

fn dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last)) if alnum(first) && alnum(last))
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// A new password: 32 random bytes, base64url without padding (43 characters, safe in a docker
/// config and a URL).
pub fn generate_password() -> String {
    let mut bytes = [0u8; PASSWORD_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a password: `sha256$<salt hex>$<sha256(salt || password) hex>`.
pub fn hash(password: &str, salt: &[u8]) -> String {
    format!("{HASH_SCHEME}${}${}", to_hex(salt), to_hex(&digest(password, salt)))
}

/// [`hash`] with a fresh random salt.
pub fn hash_new(password: &str) -> String {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    hash(password, &salt)
}

/// Whether `password` matches a stored hash. The digest comparison is constant-time; a stored
/// string in any other shape (corrupted Secret, another scheme) matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(HASH_SCHEME), Some(salt), Some(expected), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(salt), Some(expected)) = (from_hex(salt), from_hex(expected)) else {
        return false;
    };
    if salt.is_empty() || expected.len() != 32 {
        return false;
    }
    digest(password, &salt).as_slice().ct_eq(&expected).into()
}

fn digest(password: &str, salt: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

/// One valid password of a credential, as kept in the credential's Secret (JSON). Rotation keeps
/// the previous record until it expires, so both passwords work during the overlap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCredential {
    /// [`hash`] of the password.
    pub hash: String,
    /// Unix seconds after which the password no longer works; `None`: until removed (robots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_unix: Option<i64>,
}

impl StoredCredential {
    /// Whether the record still works at `now_unix`.
    pub fn is_current(&self, now_unix: i64) -> bool {
        self.expires_at_unix.is_none_or(|expires| now_unix < expires)
    }
}

/// Whether `password` matches any record that has not expired at `now_unix`.
pub fn check(password: &str, records: &[StoredCredential], now_unix: i64) -> bool {
    // Every record is checked, so the time taken does not tell which one matched.
    records.iter().fold(false, |found, r| (r.is_current(now_unix) & verify(password, &r.hash)) | found)
}

/// A new password for a credential and the records to store: the unexpired old ones plus the new
/// one, valid for `lifetime` (forever with `None`).
pub fn rotate(
    records: &[StoredCredential],
    lifetime: Option<Duration>,
    now_unix: i64,
) -> (String, Vec<StoredCredential>) {
    let password = generate_password();
    let expires_at_unix = lifetime.map(|l| now_unix.saturating_add(i64::try_from(l.as_secs()).unwrap_or(i64::MAX)));
    let mut kept: Vec<StoredCredential> = records.iter().filter(|r| r.is_current(now_unix)).cloned().collect();
    kept.push(StoredCredential { hash: hash_new(&password), expires_at_unix });
    (password, kept)
}

/// Whether a credential issued at `issued_at_unix` with `lifetime` is due for a new password: at
/// two thirds of its life, so the remaining third covers kubelets and pods still holding the old
/// one. An issue time further in the future than a whole lifetime is taken as corrupt: rotate.
pub fn needs_rotation(issued_at_unix: i64, lifetime: Duration, now_unix: i64) -> bool {
    let lifetime = i128::from(lifetime.as_secs());
    let age = i128::from(now_unix) - i128::from(issued_at_unix);
    age >= lifetime * 2 / 3 || age < -lifetime
}

/// Lower-case hex (also the JWT id's form).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes().chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

#[cfg(test)]
mod tests;
