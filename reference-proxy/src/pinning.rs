//! Session features in transaction pooling mode: which message uses one, and what a client is
//! told when the proxy refuses it.
//!
//! In transaction mode a client's next transaction may run on another origin connection, so a
//! feature whose effect outlives the transaction would silently break (a `LISTEN` that never
//! hears anything, a temporary table that "disappears") or leak to another client. The proxy
//! never lets that happen silently: per feature, `--session-feature` chooses between refusing
//! the statement with an error that names the feature and the setting that allows it, and
//! pinning the client to its connection until it disconnects (bounded by `--max-pinned`).
//! Session pool mode needs none of this: every client keeps its connection anyway.

use crate::config::PoolMode;
use crate::context::PoolingPolicy;
use crate::session::Session;
use crate::sql::{SessionFeature, session_feature};
use elephant_protocol::{ErrorFields, FrontendMessage};

/// SQLSTATE of a refused feature: feature_not_supported.
pub const REFUSED_SQLSTATE: &str = "0A000";

/// SQLSTATE when no more connections may be pinned: configuration_limit_exceeded.
pub const PIN_LIMIT_SQLSTATE: &str = "53400";

/// The session feature `message` would use, when the proxy must decide about it: transaction
/// mode, a client not pinned yet, a statement that will actually run.
pub fn feature_to_decide(
    policy: &PoolingPolicy,
    session: &Session,
    message: &FrontendMessage,
) -> Option<SessionFeature> {
    if policy.mode != PoolMode::Transaction || session.pinned() || !session.executes_statements() {
        return None;
    }
    match message {
        FrontendMessage::Query(sql) => session_feature(sql.as_bytes()),
        FrontendMessage::Parse(parse) => session_feature(parse.query.as_bytes()),
        _ => None,
    }
}

/// The error for a feature refused by policy.
pub fn refused(feature: SessionFeature) -> ErrorFields {
    let name = feature.config_name();
    ErrorFields::new(
        "ERROR",
        REFUSED_SQLSTATE,
        format!(
            "{} cannot be used through this proxy in transaction pooling mode",
            feature.description()
        ),
    )
    .with(
        b'D',
        "Each transaction may run on a different server connection, so session state would be lost or seen by another client.",
    )
    .with(
        b'H',
        format!(
            "Ask the proxy's operator for --session-feature {name}=pin (file: [session_features] {name} = \"pin\") or --pool-mode session."
        ),
    )
}

/// The error when pinning one more connection would exceed `--max-pinned`.
pub fn pin_limit_reached(feature: SessionFeature, max_pinned: usize) -> ErrorFields {
    ErrorFields::new(
        "ERROR",
        PIN_LIMIT_SQLSTATE,
        format!(
            "cannot pin another server connection for {}: all {max_pinned} connections allowed by --max-pinned are pinned",
            feature.description()
        ),
    )
    .with(
        b'D',
        "Pinned clients keep their server connection until they disconnect; the limit keeps them from taking the whole pool.",
    )
    .with(
        b'H',
        "Disconnect idle sessions that use session features, raise --max-pinned (file key max_pinned), or use --pool-mode session.",
    )
}
