//! The token file: TOML with a policy and a list of service tokens.
//!
//! ```toml
//! policy = "service-auth"   # or "login-only"; default service-auth
//! [[tokens]]
//! id = "1f2e.access"
//! secret = "..."
//! ```
//!
//! Why errors are rewritten: the TOML parser quotes offending values (`invalid type: integer
//! `12345``), and in this file a value may be a secret that ends up in a log. Errors keep the
//! line number and the parser's explanation, with every quoted fragment that is not one of the
//! file's own keywords redacted.

use super::{AccessPolicy, ServiceToken, TokenSet};
use crate::error::TokenFileError;
use serde::Deserialize;
use std::path::Path;

/// Quoted fragments of parser messages that may be shown (the file's vocabulary).
const SHOWABLE_FRAGMENTS: [&str; 6] = [
    "policy",
    "tokens",
    "id",
    "secret",
    "service-auth",
    "login-only",
];
/// Replaces any other quoted fragment.
const REDACTED_FRAGMENT: &str = "`…`";

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    policy: PolicyName,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum PolicyName {
    #[default]
    ServiceAuth,
    LoginOnly,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    id: String,
    secret: String,
}

/// Reads and parses `path`.
pub(super) fn load(path: &Path) -> Result<TokenSet, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses the text of a token file.
pub(super) fn parse(text: &str, path: &Path) -> Result<TokenSet, TokenFileError> {
    let file: TokenFile = toml::from_str(text).map_err(|error| TokenFileError::Syntax {
        path: path.to_path_buf(),
        line: error.span().map_or(1, |span| line_of(text, span.start)),
        message: redact_quoted(error.message()),
    })?;
    let policy = match file.policy {
        PolicyName::ServiceAuth => AccessPolicy::ServiceAuth,
        PolicyName::LoginOnly => AccessPolicy::LoginOnly,
    };
    let tokens = file
        .tokens
        .into_iter()
        .map(|entry| ServiceToken::new(entry.id, entry.secret))
        .collect();
    TokenSet::new(policy, tokens).map_err(|source| TokenFileError::Token {
        path: path.to_path_buf(),
        source,
    })
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `message` with every `` `quoted` `` fragment outside [`SHOWABLE_FRAGMENTS`] replaced.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            if SHOWABLE_FRAGMENTS.contains(&part) {
                out.push('`');
                out.push_str(part);
                out.push('`');
            } else {
                out.push_str(REDACTED_FRAGMENT);
            }
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<TokenSet, TokenFileError> {
        parse(text, Path::new("tokens.toml"))
    }

    #[test]
    fn a_file_with_two_tokens_parses() {
        let set = parse_str(
            "[[tokens]]\nid = \"a.access\"\nsecret = \"s1\"\n\
             [[tokens]]\nid = \"b.access\"\nsecret = \"s:2\"\n",
        )
        .unwrap();
        assert_eq!(set.policy(), AccessPolicy::ServiceAuth);
        assert_eq!(set.token_ids(), ["a.access", "b.access"]);
        assert_eq!(set.tokens()[1].secret, "s:2");
    }

    #[test]
    fn the_login_only_policy_parses() {
        let set = parse_str("policy = \"login-only\"\n").unwrap();
        assert_eq!(set.policy(), AccessPolicy::LoginOnly);
    }

    #[test]
    fn errors_name_the_line_and_never_quote_values() {
        let error = parse_str("[[tokens]]\nid = \"a\"\nsecret = 987654321\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(!text.contains("987654321"), "{text}");

        let error = parse_str("policy = \"sekrit-policy\"\n").unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("sekrit"), "{text}");
        assert!(text.contains("`service-auth`"), "{text}");
    }

    #[test]
    fn unknown_keys_and_empty_secrets_are_rejected() {
        assert!(parse_str("[[tokens]]\nid = \"a\"\nsecret = \"s\"\nextra = 1\n").is_err());
        let error = parse_str("[[tokens]]\nid = \"a\"\nsecret = \"\"\n").unwrap_err();
        assert!(error.to_string().contains("token 1"), "{error}");
    }
}
