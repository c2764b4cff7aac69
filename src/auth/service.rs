//! The token service's state and its two edges with I/O: authenticating a caller (TokenReview for
//! ServiceAccount tokens) and issuing a signed token. The decisions are the pure functions of
//! this module's siblings; this file holds what they need in memory, shared by the HTTP endpoint,
//! the controllers that keep it current, and berth's own registry client.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{
    AccessIndex, Claims, LoginLimits, Principal, Signer, StoredCredential, Verdict, authorize, keys::now_unix,
    parse_scopes, robot,
};

/// How long a TokenReview answer (yes or no) is reused for the same token.
pub const REVIEW_CACHE_TTL: Duration = Duration::from_secs(30);
const REVIEW_CACHE_MAX: usize = 10_000;
/// TokenReviews sent at once; further ones wait.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 16;
/// Default lifetime of issued tokens.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// One Registry's token settings and its current signing key.
pub struct RegistryTokens {
    pub issuer: String,
    pub service: String,
    pub lifetime: Duration,
    pub signer: Signer,
}

/// A token as the protocol returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: i64,
    /// How many scopes were granted something (for logs and metrics).
    pub granted: usize,
}

/// Why a caller is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong or unknown credentials: 401.
    BadCredentials,
    /// Too many failed logins from this client, with this name or any: 429 with Retry-After.
    Limited(Duration),
    /// The Kubernetes API could not review a token: 503, the client may retry.
    ReviewUnavailable,
}

/// A TokenReview answer (the ServiceAccount, or none) and when it was given.
type Review = (Option<Principal>, Instant);

#[derive(Default)]
pub struct TokenService {
    registries: RwLock<HashMap<String, Arc<RegistryTokens>>>,
    indexes: RwLock<HashMap<String, Arc<AccessIndex>>>,
    /// username -> stored hashes (robots and pull secrets), from berth's credential Secrets.
    credentials: RwLock<HashMap<String, Vec<StoredCredential>>>,
    reviews: Mutex<HashMap<[u8; 32], Review>>,
    failed: Mutex<Option<LoginLimits>>,
    /// Asks for the access indexes to be rebuilt (a Registry's tenancy settings changed, ...).
    pub rebuild: Notify,
    /// Bounds TokenReviews in flight: a flood of made-up tokens cannot flood the API server.
    reviews_in_flight: Option<tokio::sync::Semaphore>,
    /// Asks for the credential map to be rebuilt (AccessPolicies changed where pull credentials
    /// may come from).
    pub credentials_changed: Notify,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The subject claim: who the registry logs as the actor.
pub fn subject(principal: &Principal) -> String {
    match principal {
        Principal::Anonymous => String::new(),
        Principal::ServiceAccount { namespace, name } => format!("system:serviceaccount:{namespace}:{name}"),
        Principal::Robot { namespace, name } => robot::robot_username(namespace, name),
        Principal::PullSecret { namespace, policy } => robot::pull_username(namespace, policy),
        Principal::Berth => "berth".to_string(),
    }
}

/// `Basic <base64(user:password)>` -> (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `system:serviceaccount:<namespace>:<name>` -> ServiceAccount principal.
pub fn service_account_principal(username: &str) -> Option<Principal> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| Principal::ServiceAccount { namespace: namespace.into(), name: name.into() })
}

fn looks_like_jwt(s: &str) -> bool {
    s.len() < 16 * 1024 && s.split('.').count() == 3 && s.split('.').all(|p| !p.is_empty())
}

impl TokenService {
    pub fn new() -> TokenService {
        TokenService {
            failed: Mutex::new(Some(LoginLimits::default_limits())),
            reviews_in_flight: Some(tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT)),
            ..Default::default()
        }
    }

    pub fn set_registry(&self, registry: &str, tokens: RegistryTokens) {
        write(&self.registries).insert(registry.to_string(), Arc::new(tokens));
    }

    pub fn remove_registry(&self, registry: &str) {
        write(&self.registries).remove(registry);
        write(&self.indexes).remove(registry);
    }

    pub fn registry(&self, registry: &str) -> Option<Arc<RegistryTokens>> {
        read(&self.registries).get(registry).cloned()
    }

    pub fn set_index(&self, registry: &str, index: AccessIndex) {
        write(&self.indexes).insert(registry.to_string(), Arc::new(index));
    }

    pub fn index(&self, registry: &str) -> Option<Arc<AccessIndex>> {
        read(&self.indexes).get(registry).cloned()
    }

    pub fn set_credentials(&self, credentials: HashMap<String, Vec<StoredCredential>>) {
        *write(&self.credentials) = credentials;
    }

    /// Refused before any work when this client failed too often, with `name` or with any.
    pub fn limited(&self, name: &str, client: IpAddr) -> Option<Duration> {
        let guard = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref().map(|f| f.check(name, client, Instant::now())) {
            Some(Verdict::Limited { retry_after }) => Some(retry_after),
            _ => None,
        }
    }

    fn failure(&self, name: &str, client: IpAddr) -> Refusal {
        let mut guard = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let failed = guard.get_or_insert_with(LoginLimits::default_limits);
        match failed.record_failure(name, client, Instant::now()) {
            Verdict::Limited { retry_after } => Refusal::Limited(retry_after),
            Verdict::Allowed => Refusal::BadCredentials,
        }
    }

    /// Who is asking: anonymous without credentials; a robot or pull-secret password checked
    /// against stored hashes (constant time); otherwise the password must be a Kubernetes token
    /// that TokenReview accepts as a ServiceAccount. Failed logins are limited per `client` and
    /// username, and per `client`.
    pub async fn authenticate(
        &self,
        kube: &Client,
        credentials: Option<(String, String)>,
        client: IpAddr,
    ) -> Result<Principal, Refusal> {
        let Some((user, password)) = credentials else { return Ok(Principal::Anonymous) };
        if let Some(retry) = self.limited(&user, client) {
            return Err(Refusal::Limited(retry));
        }
        if let Some((namespace, name)) = robot::parse_robot_username(&user) {
            return if self.check_stored(&user, &password) {
                Ok(Principal::Robot { namespace: namespace.into(), name: name.into() })
            } else {
                Err(self.failure(&user, client))
            };
        }
        if let Some((namespace, policy)) = robot::parse_pull_username(&user) {
            return if self.check_stored(&user, &password) {
                Ok(Principal::PullSecret { namespace: namespace.into(), policy: policy.into() })
            } else {
                Err(self.failure(&user, client))
            };
        }
        if !looks_like_jwt(&password) {
            return Err(self.failure(&user, client));
        }
        match self.review(kube, &password).await? {
            Some(p) => Ok(p),
            None => Err(self.failure(&user, client)),
        }
    }

    fn check_stored(&self, user: &str, password: &str) -> bool {
        let credentials = read(&self.credentials);
        credentials.get(user).is_some_and(|records| robot::check(password, records, now_unix()))
    }

    /// TokenReview, with answers cached briefly by the token's hash (never the token itself).
    async fn review(&self, kube: &Client, token: &str) -> Result<Option<Principal>, Refusal> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let cache = self.reviews.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((answer, at)) = cache.get(&key)
                && at.elapsed() < REVIEW_CACHE_TTL
            {
                return Ok(answer.clone());
            }
        }
        let _permit = match &self.reviews_in_flight {
            Some(s) => Some(s.acquire().await.map_err(|_| Refusal::ReviewUnavailable)?),
            None => None,
        };
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: None },
            ..Default::default()
        };
        let reviewed =
            Api::<TokenReview>::all(kube.clone()).create(&PostParams::default(), &review).await.map_err(|e| {
                tracing::warn!(error = %e, "TokenReview failed");
                Refusal::ReviewUnavailable
            })?;
        let answer = reviewed
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| u.username)
            .and_then(|u| service_account_principal(&u));
        let mut cache = self.reviews.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REVIEW_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < REVIEW_CACHE_TTL);
            if cache.len() >= REVIEW_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (answer.clone(), Instant::now()));
        Ok(answer)
    }

    /// A signed token for `principal` with the intersection of `scopes` and what it may do.
    /// `None` when this Registry has no token service (or no key yet).
    pub fn issue<'a>(
        &self,
        registry: &str,
        principal: &Principal,
        scopes: impl IntoIterator<Item = &'a str>,
    ) -> Option<Result<Issued, super::Error>> {
        let tokens = self.registry(registry)?;
        let requested = parse_scopes(scopes);
        let access = match self.index(registry) {
            Some(index) => authorize(&index, principal, &requested),
            // No index yet: only berth itself gets anything.
            None => authorize(&AccessIndex::default(), principal, &requested),
        };
        let now = now_unix();
        let granted = access.len();
        let claims = Claims::new(&tokens.issuer, &subject(principal), &tokens.service, access, now, tokens.lifetime);
        Some(tokens.signer.sign(&claims).map(|token| Issued {
            token,
            expires_in: tokens.lifetime.as_secs(),
            issued_at: now,
            granted,
        }))
    }

    /// berth's own token for a scope (the registry client's bearer flow).
    pub fn mint(&self, registry: &str, scope: &str) -> Result<(String, Duration), String> {
        match self.issue(registry, &Principal::Berth, scope.split(' ').filter(|s| !s.is_empty())) {
            Some(Ok(issued)) => {
                // Renew a little before it expires.
                let ttl = Duration::from_secs(issued.expires_in.saturating_sub(30).max(1));
                Ok((issued.token, ttl))
            }
            Some(Err(e)) => Err(format!("signing berth's own token: {e}")),
            None => Err("berth's signing key for this registry is not loaded yet".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse_and_garbage_does_not() {
        let h = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("robot$ns+ci:pa:ss"));
        assert_eq!(parse_basic(&h), Some(("robot$ns+ci".into(), "pa:ss".into())));
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            "Bearer abc",
            &format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nocolon")),
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_service_accounts_become_service_account_principals() {
        assert_eq!(
            service_account_principal("system:serviceaccount:team-a:ci"),
            Some(Principal::ServiceAccount { namespace: "team-a".into(), name: "ci".into() })
        );
        for other in [
            "admin",
            "system:serviceaccount:",
            "system:serviceaccount:ns",
            "system:serviceaccount:ns:a:b",
            "system:node:n1",
        ] {
            assert_eq!(service_account_principal(other), None, "{other}");
        }
    }

    #[test]
    fn subjects_name_the_principal_and_anonymous_is_empty() {
        assert_eq!(subject(&Principal::Anonymous), "");
        assert_eq!(
            subject(&Principal::ServiceAccount { namespace: "a".into(), name: "b".into() }),
            "system:serviceaccount:a:b"
        );
        assert!(subject(&Principal::Robot { namespace: "a".into(), name: "b".into() }).starts_with("robot$"));
    }

    #[test]
    fn a_registry_without_a_key_issues_nothing() {
        let s = TokenService::new();
        assert!(s.issue("r", &Principal::Berth, ["repository:a/b:pull"]).is_none());
        assert!(s.mint("r", "repository:a/b:pull").is_err());
    }

    #[test]
    fn tokens_carry_only_what_the_principal_may_do() {
        let s = TokenService::new();
        let key = super::super::SigningKey::generate("test", Duration::from_secs(3600)).unwrap();
        let signer = Signer::new(&key).unwrap();
        s.set_registry(
            "r",
            RegistryTokens { issuer: "i".into(), service: "svc".into(), lifetime: Duration::from_secs(300), signer },
        );
        let berth =
            s.issue("r", &Principal::Berth, ["repository:a/b:pull,push", "registry:catalog:*"]).unwrap().unwrap();
        assert_eq!(berth.granted, 2);
        assert_eq!(berth.expires_in, 300);
        let anonymous = s.issue("r", &Principal::Anonymous, ["repository:a/b:pull"]).unwrap().unwrap();
        assert_eq!(anonymous.granted, 0, "an undeclared repository gives nothing");
        let (token, ttl) = s.mint("r", "repository:a/b:pull").unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert!(ttl < Duration::from_secs(300));
    }

    #[test]
    fn failed_logins_are_limited_per_name_and_client() {
        let s = TokenService::new();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut limited = false;
        for _ in 0..100 {
            if let Refusal::Limited(_) = s.failure("robot$ns+ci", a) {
                limited = true;
                break;
            }
        }
        assert!(limited, "repeated failures must be rate-limited");
        assert!(s.limited("robot$ns+ci", a).is_some());
        assert!(s.limited("robot$ns+other", a).is_none(), "the client's other names are not affected");
        assert!(s.limited("robot$ns+ci", b).is_none(), "other clients are not affected");
    }
}
