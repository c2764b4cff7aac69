//! Signing registry tokens: the ES256 key pair with its self-signed certificate, the signer the
//! token endpoint keeps, and when to roll to a new key.
//!
//! Each token carries its certificate in the `x5c` header. Distribution 2.8 verifies that chain
//! against its `rootcertbundle` (the certificates [`bundle`] concatenates) and 3.x does the same,
//! so one token format works with both, without libtrust key ids or JWKS files.
//!
//! Signing goes through `ring` with the key pair parsed once: `jsonwebtoken` 9 re-parses (and
//! re-derives) the PKCS#8 key on every token, which measured 34,000 tokens/s on one core against
//! 57,000/s with the parsed key kept. `jsonwebtoken` provides the JOSE header type and verifies
//! tokens in tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::pem::Pem;

use super::{Error, robot::to_hex, scope::Access};

/// How far back a new certificate's `notBefore` lies, so a registry whose clock is behind still
/// accepts it. [`rotation_plan`] relies on it to tell when a key was made.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// An ES256 (P-256) key pair and its self-signed certificate, as stored in a Secret.
#[derive(Clone)]
pub struct SigningKey {
    key_pem: String,
    cert_pem: String,
    cert_der: Vec<u8>,
    pkcs8: Vec<u8>,
    validity: KeyValidity,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey").field("validity", &self.validity).finish_non_exhaustive()
    }
}

/// A certificate's validity, in unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValidity {
    pub not_before: i64,
    pub not_after: i64,
}

impl SigningKey {
    /// A new key pair with a certificate valid from an hour ago ([`BACKDATE`]) for `valid_for`.
    pub fn generate(common_name: &str, valid_for: Duration) -> Result<SigningKey, Error> {
        SigningKey::generate_at(common_name, valid_for, now_unix())
    }

    /// [`SigningKey::generate`] as of `now_unix`, for tests and reproducible rotation plans.
    pub fn generate_at(common_name: &str, valid_for: Duration, now_unix: i64) -> Result<SigningKey, Error> {
        let out_of_range =
            || Error::KeyGeneration(format!("a validity of {valid_for:?} from unix time {now_unix} is out of range"));
        let seconds = i64::try_from(valid_for.as_secs()).map_err(|_| out_of_range())?;
        let backdate = i64::try_from(BACKDATE.as_secs()).unwrap_or(0);
        let time = |unix: Option<i64>| {
            unix.and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok()).ok_or_else(out_of_range)
        };

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::KeyGeneration(e.to_string()))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        params.not_before = time(now_unix.checked_sub(backdate))?;
        params.not_after = time(now_unix.checked_add(seconds))?;
        // A random positive serial, so two keys made in one second never share one.
        let mut serial = [0u8; 16];
        rand::rng().fill_bytes(&mut serial);
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).map_err(|e| Error::KeyGeneration(e.to_string()))?;
        SigningKey::from_pem(&key.serialize_pem(), &cert.pem())
    }

    /// A key read back from storage. The key must be PKCS#8 P-256 (`PRIVATE KEY`) and the
    /// certificate PEM exactly one certificate holding that key's public key.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<SigningKey, Error> {
        let key = single_pem(key_pem, "PRIVATE KEY").map_err(Error::InvalidKey)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.contents, &SystemRandom::new())
            .map_err(|_| Error::InvalidKey("not a PKCS#8 ECDSA P-256 key".to_string()))?;
        let cert = single_pem(cert_pem, "CERTIFICATE").map_err(Error::InvalidCertificate)?;
        let validity = {
            let (rest, parsed) = x509_parser::parse_x509_certificate(&cert.contents)
                .map_err(|e| Error::InvalidCertificate(e.to_string()))?;
            if !rest.is_empty() {
                return Err(Error::InvalidCertificate("trailing data after the certificate".to_string()));
            }
            if parsed.public_key().subject_public_key.data.as_ref() != pair.public_key().as_ref() {
                return Err(Error::KeyMismatch);
            }
            KeyValidity {
                not_before: parsed.validity().not_before.timestamp(),
                not_after: parsed.validity().not_after.timestamp(),
            }
        };
        Ok(SigningKey {
            key_pem: key_pem.to_string(),
            cert_pem: cert_pem.to_string(),
            cert_der: cert.contents,
            pkcs8: key.contents,
            validity,
        })
    }

    /// The private key, PKCS#8 PEM, for the Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate, PEM, for the Secret and the registry's bundle.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER, as the `x5c` header carries it.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn validity(&self) -> KeyValidity {
        self.validity
    }

    pub fn not_after(&self) -> i64 {
        self.validity.not_after
    }

    /// The certificate's SHA-256 fingerprint (hex): names a key in status and Events without
    /// showing anything secret.
    pub fn sha256(&self) -> String {
        to_hex(&Sha256::digest(&self.cert_der))
    }
}

impl KeyValidity {
    /// When the key was made: certificates are backdated by [`BACKDATE`].
    pub fn made(&self) -> i64 {
        self.not_before.saturating_add(secs(BACKDATE))
    }

    /// When the key starts signing under `policy` (unless it is the only key, which signs at once).
    pub fn signs_from(&self, policy: &RotationPolicy) -> i64 {
        self.made().saturating_add(secs(policy.activation_delay))
    }
}

/// The one PEM block of `text`, which must carry `label`.
fn single_pem(text: &str, label: &str) -> Result<Pem, String> {
    let mut blocks = Pem::iter_from_buffer(text.as_bytes());
    let first = match blocks.next() {
        Some(Ok(block)) => block,
        Some(Err(e)) => return Err(format!("malformed PEM: {e}")),
        None => return Err(format!("no PEM block; expected {label}")),
    };
    if first.label != label {
        return Err(format!("PEM block is {:?}; expected {label}", first.label));
    }
    if blocks.next().is_some() {
        return Err(format!("more than one PEM block; expected a single {label}"));
    }
    Ok(first)
}

/// The claims of a registry token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Who the token is for; empty for anonymous. The registry logs it as the actor.
    pub sub: String,
    /// The registry's `auth.token.service`. A single string: Distribution 2.8 rejects an array.
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<Access>,
}

impl Claims {
    /// Claims valid from `now_unix` for `ttl`, with a random token id.
    pub fn new(
        issuer: &str,
        subject: &str,
        audience: &str,
        access: Vec<Access>,
        now_unix: i64,
        ttl: Duration,
    ) -> Claims {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Claims {
            iss: issuer.to_string(),
            sub: subject.to_string(),
            aud: audience.to_string(),
            exp: now_unix.saturating_add(ttl),
            nbf: now_unix,
            iat: now_unix,
            jti: to_hex(&jti),
            access,
        }
    }
}

/// Signs tokens with one key. Built once per key and shared (it is `Sync`): the header is
/// encoded and the key parsed ahead of time, so a token costs one JSON encoding and one ECDSA
/// signature.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// `base64url(header) + "."`.
    header: String,
    validity: KeyValidity,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("validity", &self.validity).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(key: &SigningKey) -> Result<Signer, Error> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.pkcs8, &rng)
            .map_err(|_| Error::InvalidKey("not a PKCS#8 ECDSA P-256 key".to_string()))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![STANDARD.encode(&key.cert_der)]);
        let json = serde_json::to_vec(&header).map_err(Error::Claims)?;
        let mut encoded = URL_SAFE_NO_PAD.encode(json);
        encoded.push('.');
        Ok(Signer { key: pair, rng, header: encoded, validity: key.validity })
    }

    /// A signed compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let payload = serde_json::to_vec(claims).map_err(Error::Claims)?;
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header);
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = self.key.sign(&self.rng, token.as_bytes()).map_err(|_| Error::Signing)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// The validity of the key this signer uses.
    pub fn validity(&self) -> KeyValidity {
        self.validity
    }
}

/// The registry's `rootcertbundle`: every given key's certificate, so tokens signed with the old
/// and the new key both verify during a rotation.
pub fn bundle(keys: &[SigningKey]) -> String {
    let mut out = String::new();
    for key in keys {
        out.push_str(key.cert_pem.trim_end());
        out.push('\n');
    }
    out
}

/// The SHA-256 (hex) of a bundle as [`bundle`] writes it: what a registry Deployment's pod
/// template is annotated with, so that a new bundle rolls the registry.
pub fn bundle_sha256(bundle: &str) -> String {
    to_hex(&Sha256::digest(bundle.as_bytes()))
}

/// When keys are made, used and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a new key's certificate is valid.
    pub key_lifetime: Duration,
    /// A new key is made when the newest one has less than this left. Shorter than the
    /// lifetime ([`RotationPolicy::new`]), or every new key would be due for renewal at once.
    pub renew_before: Duration,
    /// How long a new key is only in the bundle before it signs: the registry reads
    /// `rootcertbundle` only when it starts, so tokens signed with the new key must wait until
    /// the registry has been restarted with the new bundle; this is the time berth (rolling the
    /// registry's Deployment) or people have to do it.
    pub activation_delay: Duration,
}

impl Default for RotationPolicy {
    /// Keys live 90 days, a successor is made 30 days before the newest expires and signs after
    /// 29 days (one day before its predecessor expires): the registry has 29 days to be
    /// restarted with the new bundle. Two keys overlap for 30 days, then one is alone for 30.
    fn default() -> RotationPolicy {
        RotationPolicy {
            key_lifetime: Duration::from_secs(90 * 86_400),
            renew_before: Duration::from_secs(30 * 86_400),
            activation_delay: Duration::from_secs(29 * 86_400),
        }
    }
}

impl RotationPolicy {
    /// A policy that can work, or why not (in the words of the Registry's `tokenAuth.keyRotation`):
    /// - `renew_before` < `key_lifetime`: otherwise every new key is due for renewal at once;
    /// - `activation_delay` < `renew_before`: a successor must sign before the key it replaces
    ///   expires (otherwise the successor would sign as soon as it is the only key left, before
    ///   registries had the time to load it).
    pub fn new(key_lifetime: Duration, renew_before: Duration, activation_delay: Duration) -> Result<Self, String> {
        use crate::duration::format;
        if renew_before >= key_lifetime {
            return Err(format!(
                "keyRotation.renewBefore ({}) must be shorter than keyLifetime ({}): every new key would be due \
                 for renewal at once",
                format(renew_before),
                format(key_lifetime)
            ));
        }
        if activation_delay >= renew_before {
            return Err(format!(
                "keyRotation.activationDelay ({}) must be shorter than renewBefore ({}): a new key must start \
                 signing before the key it replaces expires",
                format(activation_delay),
                format(renew_before)
            ));
        }
        Ok(RotationPolicy { key_lifetime, renew_before, activation_delay })
    }

    /// Refuses a token lifetime not shorter than `renew_before - activation_delay`: the old key
    /// signs until its successor takes over, `renew_before - activation_delay` before the old
    /// key expires and leaves the bundle, so a token it signed then must have run out by that
    /// time.
    pub fn check_token_lifetime(&self, token_lifetime: Duration) -> Result<(), String> {
        use crate::duration::format;
        let overlap = self.renew_before.saturating_sub(self.activation_delay);
        if token_lifetime >= overlap {
            return Err(format!(
                "tokenLifetime ({}) must be shorter than keyRotation.renewBefore - activationDelay ({}): a token \
                 signed by the old key just before its successor takes over would outlive the old key's place in \
                 the bundle",
                format(token_lifetime),
                format(overlap)
            ));
        }
        Ok(())
    }

    /// `renew_before` in seconds. One not shorter than the lifetime (which [`RotationPolicy::new`]
    /// refuses) counts as half of it, so a policy built by hand cannot make a key on every pass.
    fn renew_window(&self) -> i64 {
        if self.renew_before < self.key_lifetime { secs(self.renew_before) } else { secs(self.key_lifetime) / 2 }
    }
}

/// A duration in whole seconds, saturating.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// What to do with the stored keys now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPlan {
    /// Make a new key (valid for `key_lifetime`), store it and plan again.
    pub generate: bool,
    /// The key (index into the input) to sign with; `None` when no key is valid now.
    pub sign_with: Option<usize>,
    /// Keys (indices, in input order) to keep in storage and in the bundle; the others expired.
    pub keep: Vec<usize>,
}

/// The pure rotation decision over the stored keys' validities.
///
/// - Expired keys are dropped; every other key stays in the bundle until it expires (enough
///   overlap for the tokens it signed, by [`RotationPolicy::check_token_lifetime`], and it needs
///   no record of past use).
/// - A new key is made when none is left or the newest expires within `renew_before`.
/// - Signing uses the newest key made (`not_before` + [`BACKDATE`]) at least `activation_delay`
///   ago. While there is none (the first key, just made), the oldest valid key signs: it is the
///   one most likely in the registry's bundle already.
pub fn rotation_plan(keys: &[KeyValidity], now_unix: i64, policy: &RotationPolicy) -> RotationPlan {
    let renew_before = policy.renew_window();
    let delay = secs(policy.activation_delay);

    let keep: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].not_after > now_unix).collect();
    let newest_expiry = keep.iter().map(|&i| keys[i].not_after).max();
    let generate = newest_expiry.is_none_or(|expiry| expiry.saturating_sub(now_unix) <= renew_before);

    let usable: Vec<usize> = keep.iter().copied().filter(|&i| keys[i].not_before <= now_unix).collect();
    let active = usable
        .iter()
        .copied()
        .filter(|&i| keys[i].made().saturating_add(delay) <= now_unix)
        .max_by_key(|&i| (keys[i].made(), keys[i].not_after, std::cmp::Reverse(i)));
    let sign_with = active
        .or_else(|| usable.iter().copied().min_by_key(|&i| (keys[i].made(), std::cmp::Reverse(keys[i].not_after), i)));
    RotationPlan { generate, sign_with, keep }
}

/// When [`rotation_plan`] over `keys` can next decide differently, after `now_unix`: a key
/// becomes valid, starts signing or expires, or the newest is due for renewal. The Registry
/// controller wakes up then, so short key lifetimes work without a short `checkInterval`.
/// `None` when there is no key (the plan makes one at once).
pub fn next_key_event(keys: &[KeyValidity], now_unix: i64, policy: &RotationPolicy) -> Option<i64> {
    let kept = || keys.iter().filter(|k| k.not_after > now_unix);
    let renewal = kept().map(|k| k.not_after).max().map(|expiry| expiry.saturating_sub(policy.renew_window()));
    kept()
        .flat_map(|k| [k.not_before, k.signs_from(policy), k.not_after])
        .chain(renewal)
        .filter(|&t| t > now_unix)
        .min()
}

/// A key in the bundle that does not sign yet: registries must load the bundle between
/// `joined` and `signs_from`, or refuse its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitingKey {
    /// Index into the keys given.
    pub index: usize,
    /// When it was made and published.
    pub joined: i64,
    pub signs_from: i64,
}

/// The keys [`rotation_plan`] keeps that will sign later, oldest first. The first key made signs
/// at once and is never waiting.
pub fn waiting_keys(keys: &[KeyValidity], now_unix: i64, policy: &RotationPolicy) -> Vec<WaitingKey> {
    let plan = rotation_plan(keys, now_unix, policy);
    let mut waiting: Vec<WaitingKey> = plan
        .keep
        .iter()
        .copied()
        .filter(|&i| Some(i) != plan.sign_with && keys[i].signs_from(policy) > now_unix)
        .map(|i| WaitingKey { index: i, joined: keys[i].made(), signs_from: keys[i].signs_from(policy) })
        .collect();
    waiting.sort_by_key(|w| (w.signs_from, w.index));
    waiting
}

/// Now, in unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
