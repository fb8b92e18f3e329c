//! Connection startup of the fake: encryption requests, cancel requests, the connection
//! limit, authentication through `ServerHandshake`, startup parameters, and the first
//! ReadyForQuery. Ordered as in Postgres: the limit is checked once the StartupMessage has
//! arrived, the database and the parameters after authentication.

use super::backend::{Backend, Session};
use super::conn::{Conn, ConnError};
use super::error::PgError;
use super::settings::Settings;
use super::{Shared, Slot};
use bytes::Bytes;
use elephant_protocol::startup::{InvalidOption, parse_startup_options};
use elephant_protocol::startup::{ServerHandshake, ServerStep};
use elephant_protocol::{
    BackendKeyData, BackendMessage, FrontendMessage, PgString, StartupMessage, TransactionStatus,
};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// SSLRequest / GSSENCRequest packets accepted before the StartupMessage (one of each).
pub const MAX_NEGOTIATION_PACKETS: usize = 2;

/// Authentication round trips before the fake gives up (SCRAM takes two).
pub const MAX_AUTH_ROUNDS: usize = 4;

/// The protocol version the fake speaks: 3.0.
pub const PROTOCOL_MAJOR: u16 = 3;

/// Answer to SSLRequest and GSSENCRequest: the fake has no TLS.
const ENCRYPTION_REFUSED: u8 = b'N';

/// Startup parameters that are not settings.
const CONNECTION_PARAMETERS: [&str; 4] = ["user", "database", "options", "replication"];

/// Serves one connection from its first byte to its close.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, stream: S) {
    let mut conn = Conn::new(stream);
    conn.tap(shared.config.wire_tap.clone(), shared.connection_label());
    let Ok(Some(startup)) = first_packet(&shared, &mut conn).await else {
        return;
    };
    let Some(_slot) = Slot::take(&shared) else {
        conn.fatal(PgError::fatal("53300", "sorry, too many clients already"))
            .await;
        return;
    };
    let Ok(session) = login(&shared, &mut conn, &startup).await else {
        return;
    };
    let mut backend = Backend::new(shared, session);
    let _ = backend.run(&mut conn).await;
}

/// Reads packets until the StartupMessage; `None` when the connection is done (it closed,
/// carried a cancel request, or broke the protocol and was told so).
async fn first_packet<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut Conn<S>,
) -> Result<Option<StartupMessage>, ConnError> {
    let mut negotiations = 0;
    loop {
        let message = match conn.read().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
            Err(ConnError::Protocol(error)) => {
                let fatal = PgError::fatal(error.sqlstate(), error.to_string());
                return Err(conn.fatal(fatal).await);
            }
            Err(error) => return Err(error),
        };
        match message {
            FrontendMessage::Startup(startup) => return Ok(Some(startup)),
            FrontendMessage::CancelRequest(request) => {
                shared.cancel(request.process_id, &request.secret_key);
                return Ok(None);
            }
            FrontendMessage::SslRequest | FrontendMessage::GssEncRequest
                if negotiations < MAX_NEGOTIATION_PACKETS =>
            {
                negotiations += 1;
                conn.send_byte(ENCRYPTION_REFUSED).await?;
            }
            other => {
                let message = format!("unsupported frontend protocol message {}", other.name());
                return Err(conn.fatal(PgError::fatal("08P01", message)).await);
            }
        }
    }
}

/// Version check, authentication, parameters; ends with the first ReadyForQuery.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut Conn<S>,
    startup: &StartupMessage,
) -> Result<Session, ConnError> {
    let version = startup.version;
    if version.major != PROTOCOL_MAJOR {
        let message = format!(
            "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
            version.major, version.minor
        );
        return Err(conn.fatal(PgError::fatal("0A000", message)).await);
    }
    negotiate_version(conn, startup)?;
    let user = authenticate(shared, conn, startup).await?;
    check_database(shared, conn, startup, &user).await?;
    let settings = match startup_settings(shared, startup, &user) {
        Ok(settings) => settings,
        Err(error) => return Err(conn.fatal(error).await),
    };
    let (pid, secret, cancel) = shared.register_backend();
    conn.tap(shared.config.wire_tap.clone(), format!("origin pid {pid}"));
    for (name, value) in settings.reported() {
        conn.send(&BackendMessage::ParameterStatus {
            name: PgString::from(name.as_str()),
            value: PgString::from(value.as_str()),
        })?;
    }
    conn.send(&BackendMessage::BackendKeyData(BackendKeyData {
        process_id: pid,
        secret_key: Bytes::copy_from_slice(&secret),
    }))?;
    conn.send(&BackendMessage::ReadyForQuery(TransactionStatus::Idle))?;
    let session = Session {
        pid,
        cancel,
        settings,
    };
    conn.flush().await?;
    Ok(session)
}

/// A 3.x minor above 0 or `_pq_` options get NegotiateProtocolVersion, as in Postgres 15.
fn negotiate_version<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    startup: &StartupMessage,
) -> Result<(), ConnError> {
    let unrecognized: Vec<PgString> = startup
        .parameters
        .iter()
        .filter(|(name, _)| name.as_bytes().starts_with(b"_pq_."))
        .map(|(name, _)| name.clone())
        .collect();
    if startup.version.minor == 0 && unrecognized.is_empty() {
        return Ok(());
    }
    conn.send(&BackendMessage::NegotiateProtocolVersion {
        newest_minor: 0,
        unrecognized_options: unrecognized,
    })
}

/// Runs the password exchange; returns the user.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut Conn<S>,
    startup: &StartupMessage,
) -> Result<String, ConnError> {
    let user = startup
        .parameter("user")
        .map(|u| u.to_string())
        .unwrap_or_default();
    let stored = (user == shared.config.user)
        .then(|| shared.stored.clone())
        .flatten();
    let started = shared
        .with_state(|state| ServerHandshake::start(startup, &shared.auth, stored, &mut state.rng));
    let (mut handshake, mut step) = match started {
        Ok(started) => started,
        Err(error) => {
            let fatal = PgError::fatal(error.sqlstate(), error.to_string());
            return Err(conn.fatal(fatal).await);
        }
    };
    for _round in 0..MAX_AUTH_ROUNDS {
        let (message, expect) = match step {
            ServerStep::Authenticated(messages) => {
                for message in &messages {
                    conn.send(message)?;
                }
                return Ok(handshake.user().to_string());
            }
            ServerStep::Send { message, expect } => (message, expect),
        };
        conn.send(&message)?;
        conn.flush().await?;
        conn.expect_auth_response(expect);
        let Some(reply) = conn.read().await? else {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        };
        step = match handshake.handle(reply) {
            Ok(step) => step,
            Err(error) => {
                shared.with_state(|state| state.stats.auth_failures += 1);
                let fatal = PgError::fatal(error.sqlstate(), error.to_string());
                return Err(conn.fatal(fatal).await);
            }
        };
    }
    let fatal = PgError::fatal("08P01", "authentication exchange did not finish");
    Err(conn.fatal(fatal).await)
}

async fn check_database<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut Conn<S>,
    startup: &StartupMessage,
    user: &str,
) -> Result<(), ConnError> {
    let database = startup
        .parameter("database")
        .filter(|d| !d.is_empty())
        .map_or_else(|| user.to_string(), |d| d.to_string());
    if database == shared.config.database {
        return Ok(());
    }
    let message = format!("database \"{database}\" does not exist");
    Err(conn.fatal(PgError::fatal("3D000", message)).await)
}

/// Session defaults from the startup packet and its `options`.
fn startup_settings(
    shared: &Shared,
    startup: &StartupMessage,
    user: &str,
) -> Result<Settings, PgError> {
    let mut settings = Settings::new(user, shared.config.max_connections);
    for (name, value) in &startup.parameters {
        let name = name.to_string();
        if name.starts_with("_pq_.") || CONNECTION_PARAMETERS.contains(&name.as_str()) {
            continue;
        }
        settings.apply_startup(&name, &value.to_string())?;
    }
    if let Some(options) = startup.parameter("options") {
        for (name, value) in parse_options(&options.to_string())? {
            settings.apply_startup(&name, &value)?;
        }
    }
    if startup
        .parameter("replication")
        .is_some_and(|r| !matches!(r.to_string().as_str(), "false" | "off" | "0" | "no"))
    {
        return Err(PgError::not_supported(
            "replication connections are not supported by the fake Postgres",
        ));
    }
    Ok(settings)
}

/// `options` read by the protocol core's parser (the proxy uses the same one).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, PgError> {
    parse_startup_options(options)
        .map_err(|error| PgError::fatal(InvalidOption::SQLSTATE, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_options;

    #[test]
    fn options_like_postgres() {
        assert_eq!(
            parse_options("-c statement_timeout=5000 --lock-timeout=1s -cfoo.bar=a\\ b"),
            Ok(vec![
                ("statement_timeout".into(), "5000".into()),
                ("lock_timeout".into(), "1s".into()),
                ("foo.bar".into(), "a b".into()),
            ])
        );
        assert!(parse_options("-x").is_err());
    }
}
