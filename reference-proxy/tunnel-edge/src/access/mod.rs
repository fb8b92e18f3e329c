//! Cloudflare Access in front of the tunnel: which upgrade requests are admitted.
//!
//! Why it looks like this: a self-hosted Access application with a *Service Auth* policy admits a
//! request only when `Cf-Access-Client-Id` and `Cf-Access-Client-Secret` name a valid service
//! token; several tokens are valid at once while one is rotated out; an application without such
//! a policy sends everyone to the login page instead (a 302 the `cloudflared` client recognises).
//! Access decides once, at upgrade time — revoking a token never cuts a tunnel that is already
//! open — so [`AccessControl`] is consulted only by the upgrade and can swap its [`TokenSet`] at
//! any moment (a SIGHUP or a changed token file, see [`AccessControl::watch_file`]).
//!
//! Secrets are compared in constant time against every configured token (no early exit on the
//! first match or mismatch), and never appear in `Debug` output, logs or error messages.

mod file;
mod reload;

use crate::error::TokenError;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use subtle::{Choice, ConstantTimeEq};
use tokio_tungstenite::tungstenite::http::HeaderMap;

pub use reload::TOKEN_FILE_POLL_INTERVAL;

/// Header carrying the service token's client id.
pub const CLIENT_ID_HEADER: &str = "cf-access-client-id";
/// Header carrying the service token's client secret.
pub const CLIENT_SECRET_HEADER: &str = "cf-access-client-secret";
/// What `Debug` prints in place of a secret.
const REDACTED: &str = "<redacted>";

/// A Cloudflare Access service token: the pair a client presents on the upgrade request.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken {
    /// `Cf-Access-Client-Id` (not secret; logged to say who opened a tunnel).
    pub id: String,
    /// `Cf-Access-Client-Secret` (never logged).
    pub secret: String,
}

impl ServiceToken {
    /// A token from its id and secret.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        ServiceToken {
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// Checks that the token could ever match a request (`index` names it in the error).
    pub fn validate(&self, index: usize) -> Result<(), TokenError> {
        if self.id.is_empty() {
            return Err(TokenError::EmptyId { index });
        }
        if self.secret.is_empty() {
            return Err(TokenError::EmptySecret { index });
        }
        for (field, value) in [("id", &self.id), ("secret", &self.secret)] {
            if !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenError::NotHeaderSafe { index, field });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceToken")
            .field("id", &self.id)
            .field("secret", &REDACTED)
            .finish()
    }
}

/// `ID:SECRET`, split at the first `:` (the secret may contain more). Errors never echo the
/// input, which may well be a secret.
impl FromStr for ServiceToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, secret) = text.split_once(':').ok_or(TokenError::MissingSeparator)?;
        let token = ServiceToken::new(id, secret);
        token.validate(1)?;
        Ok(token)
    }
}

/// What kind of Access application guards the tunnel host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// A Service Auth policy: valid service tokens are admitted, everything else gets 403.
    #[default]
    ServiceAuth,
    /// No Service Auth policy: every request is redirected (302) to the Access login page.
    LoginOnly,
}

/// The tokens and policy in force at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenSet {
    policy: AccessPolicy,
    tokens: Vec<ServiceToken>,
}

impl TokenSet {
    /// A set with the given policy and tokens; every token must pass
    /// [`ServiceToken::validate`].
    pub fn new(policy: AccessPolicy, tokens: Vec<ServiceToken>) -> Result<Self, TokenError> {
        for (position, token) in tokens.iter().enumerate() {
            token.validate(position + 1)?;
        }
        Ok(TokenSet { policy, tokens })
    }

    /// A Service Auth set admitting exactly `tokens`.
    pub fn service_auth(tokens: Vec<ServiceToken>) -> Result<Self, TokenError> {
        Self::new(AccessPolicy::ServiceAuth, tokens)
    }

    /// A set for an application without a Service Auth policy (everyone gets the login 302).
    pub fn login_only() -> Self {
        TokenSet {
            policy: AccessPolicy::LoginOnly,
            tokens: Vec::new(),
        }
    }

    /// Parses a token file's text (`policy = "service-auth" | "login-only"`, `[[tokens]]` with
    /// `id` and `secret`); `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, crate::TokenFileError> {
        file::parse(text, path)
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, crate::TokenFileError> {
        file::load(path)
    }

    /// The policy.
    pub fn policy(&self) -> AccessPolicy {
        self.policy
    }

    /// The tokens (in file order).
    pub fn tokens(&self) -> &[ServiceToken] {
        &self.tokens
    }

    /// The ids of the tokens, for logs.
    pub fn token_ids(&self) -> Vec<&str> {
        self.tokens.iter().map(|t| t.id.as_str()).collect()
    }
}

/// The outcome of the Access check on one upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDecision {
    /// A valid service token: the tunnel may be opened.
    Allow {
        /// The id of the matching token (for the access log).
        token_id: String,
    },
    /// Missing or unknown token: 403.
    Deny,
    /// The application has no Service Auth policy: 302 to the login page.
    LoginRedirect,
}

/// The Access check with a replaceable [`TokenSet`].
#[derive(Debug)]
pub struct AccessControl {
    current: RwLock<Arc<TokenSet>>,
}

impl AccessControl {
    /// Access with `set` in force.
    pub fn new(set: TokenSet) -> Self {
        AccessControl {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// Access with the token file at `path` in force (see [`AccessControl::watch_file`] to
    /// follow later changes).
    pub fn from_file(path: &Path) -> Result<Self, crate::TokenFileError> {
        Ok(Self::new(TokenSet::load(path)?))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<TokenSet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `set` in force for every later upgrade; open tunnels are not affected.
    pub fn replace(&self, set: TokenSet) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    /// Decides on an upgrade request from its headers.
    pub fn check(&self, headers: &HeaderMap) -> AccessDecision {
        let set = self.current();
        if set.policy == AccessPolicy::LoginOnly {
            return AccessDecision::LoginRedirect;
        }
        let (Some(id), Some(secret)) = (
            headers.get(CLIENT_ID_HEADER),
            headers.get(CLIENT_SECRET_HEADER),
        ) else {
            return AccessDecision::Deny;
        };
        match matching_token(&set.tokens, id.as_bytes(), secret.as_bytes()) {
            Some(token) => AccessDecision::Allow {
                token_id: token.id.clone(),
            },
            None => AccessDecision::Deny,
        }
    }
}

/// The token whose id and secret both equal the presented ones. Every token is compared in
/// full, in constant time per comparison, whatever matches earlier or later.
fn matching_token<'a>(
    tokens: &'a [ServiceToken],
    id: &[u8],
    secret: &[u8],
) -> Option<&'a ServiceToken> {
    let mut found = None;
    for token in tokens {
        let same: Choice = token.id.as_bytes().ct_eq(id) & token.secret.as_bytes().ct_eq(secret);
        if bool::from(same) {
            found = Some(token);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    fn headers(id: Option<&str>, secret: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(id) = id {
            map.insert(CLIENT_ID_HEADER, HeaderValue::from_str(id).unwrap());
        }
        if let Some(secret) = secret {
            map.insert(CLIENT_SECRET_HEADER, HeaderValue::from_str(secret).unwrap());
        }
        map
    }

    fn two_tokens() -> AccessControl {
        let set = TokenSet::service_auth(vec![
            ServiceToken::new("old.access", "old-secret"),
            ServiceToken::new("new.access", "new-secret"),
        ])
        .unwrap();
        AccessControl::new(set)
    }

    #[test]
    fn both_rotated_tokens_are_admitted() {
        let access = two_tokens();
        for (id, secret) in [("old.access", "old-secret"), ("new.access", "new-secret")] {
            assert_eq!(
                access.check(&headers(Some(id), Some(secret))),
                AccessDecision::Allow {
                    token_id: id.to_owned()
                }
            );
        }
    }

    #[test]
    fn mismatched_or_missing_parts_are_denied() {
        let access = two_tokens();
        for (id, secret) in [
            (Some("old.access"), Some("new-secret")),
            (Some("old.access"), None),
            (None, Some("old-secret")),
            (None, None),
            (Some("old.access"), Some("old-secret ")),
            (Some("other"), Some("old-secret")),
        ] {
            assert_eq!(access.check(&headers(id, secret)), AccessDecision::Deny);
        }
    }

    #[test]
    fn login_only_redirects_even_with_a_valid_token() {
        let access = two_tokens();
        access.replace(TokenSet::login_only());
        assert_eq!(
            access.check(&headers(Some("old.access"), Some("old-secret"))),
            AccessDecision::LoginRedirect
        );
    }

    #[test]
    fn command_line_tokens_split_at_the_first_colon() {
        let token: ServiceToken = "id.access:se:cr:et".parse().unwrap();
        assert_eq!(token, ServiceToken::new("id.access", "se:cr:et"));
        assert_eq!(
            "no-separator".parse::<ServiceToken>(),
            Err(TokenError::MissingSeparator)
        );
        assert_eq!(
            ":secret".parse::<ServiceToken>(),
            Err(TokenError::EmptyId { index: 1 })
        );
        assert_eq!(
            "id:".parse::<ServiceToken>(),
            Err(TokenError::EmptySecret { index: 1 })
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = ServiceToken::new("id.access", "hunter2-very-secret");
        let set = TokenSet::service_auth(vec![token.clone()]).unwrap();
        for text in [format!("{token:?}"), format!("{set:?}")] {
            assert!(text.contains("id.access"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
