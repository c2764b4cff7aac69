//! Signing keys as they are stored in their Secret: `signing-<n>.key` / `signing-<n>.crt` pairs
//! (PEM) and `bundle.pem`, the certificates the registry trusts (`auth.token.rootcertbundle`).

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use super::{SigningKey, bundle};

pub const BUNDLE_KEY: &str = "bundle.pem";

/// The keys in a signing Secret, in slot order. An unreadable pair is an error naming it: a
/// person edited the Secret, and guessing would sign with the wrong key.
pub fn keys_from_secret(secret: &Secret) -> Result<Vec<SigningKey>, String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned());
    let mut slots: Vec<u32> =
        data.keys().filter_map(|k| k.strip_prefix("signing-")?.strip_suffix(".key")?.parse().ok()).collect();
    slots.sort_unstable();
    slots
        .into_iter()
        .map(|n| {
            let (key, cert) = (format!("signing-{n}.key"), format!("signing-{n}.crt"));
            let (Some(k), Some(c)) = (text(&key), text(&cert)) else {
                return Err(format!("{key} has no matching {cert}"));
            };
            SigningKey::from_pem(&k, &c).map_err(|e| format!("{key}: {e}"))
        })
        .collect()
}

/// The Secret data for `keys`, with the bundle of their certificates.
pub fn secret_data(keys: &[SigningKey]) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    for (n, key) in keys.iter().enumerate() {
        data.insert(format!("signing-{n}.key"), ByteString(key.key_pem().as_bytes().to_vec()));
        data.insert(format!("signing-{n}.crt"), ByteString(key.cert_pem().as_bytes().to_vec()));
    }
    data.insert(BUNDLE_KEY.to_string(), ByteString(bundle(keys).into_bytes()));
    data
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_round_trip_through_the_secret_and_the_bundle_holds_every_certificate() {
        let keys: Vec<SigningKey> =
            (0..2).map(|i| SigningKey::generate(&format!("k{i}"), Duration::from_secs(3600)).unwrap()).collect();
        let secret = Secret { data: Some(secret_data(&keys)), ..Default::default() };
        let back = keys_from_secret(&secret).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].cert_pem(), keys[1].cert_pem());
        let bundle = String::from_utf8(secret.data.unwrap()[BUNDLE_KEY].0.clone()).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn a_broken_or_half_pair_is_an_error_and_an_empty_secret_has_no_keys() {
        assert!(keys_from_secret(&Secret::default()).unwrap().is_empty());
        let key = SigningKey::generate("k", Duration::from_secs(3600)).unwrap();
        let mut data = secret_data(&[key]);
        data.remove("signing-0.crt");
        assert!(keys_from_secret(&Secret { data: Some(data.clone()), ..Default::default() }).is_err());
        data.insert("signing-0.crt".into(), ByteString(b"not pem".to_vec()));
        let err = keys_from_secret(&Secret { data: Some(data), ..Default::default() }).unwrap_err();
        assert!(err.contains("signing-0.key"), "{err}");
    }
}
