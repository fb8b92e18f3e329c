//! A client's startup: TLS negotiation, cancel requests, authentication, and the session
//! parameters it is told about.

use super::io::{ClientIoError, read_message, write_messages};
use crate::context::ProxyContext;
use crate::origin::PROXY_ERROR_SQLSTATE;
use crate::session::apply_settings_query;
use crate::stream::BoxedStream;
use bytes::BytesMut;
use elephant_auth::AuthMethod;
use elephant_protocol::startup::{
    InvalidOption, ServerAuthConfig, ServerHandshake, ServerStep, parse_startup_options,
};
use elephant_protocol::{
    BackendKeyData, BackendMessage, ErrorFields, FrontendDecoder, FrontendMessage, PgString,
    StartupMessage, TransactionStatus,
};
use tokio::io::AsyncWriteExt;

/// SSLRequest/GSSENCRequest packets a client may send before its StartupMessage (one of each,
/// as libpq does at most).
pub const MAX_NEGOTIATION_PACKETS: usize = 2;

/// Startup parameters that are not session settings.
const NON_SETTING_PARAMETERS: &[&str] = &["user", "database", "options", "replication"];

/// A client that finished startup.
pub struct StartedClient {
    /// The stream (TLS if negotiated).
    pub stream: BoxedStream,
    /// Bytes already read past the startup.
    pub buffer: BytesMut,
    /// The decoder, now in the running phase.
    pub decoder: FrontendDecoder,
    /// The role the client logged in as.
    pub user: String,
    /// Settings to apply on every origin connection the client uses.
    pub settings: Vec<(String, String)>,
    /// The cancel key issued to the client.
    pub key: BackendKeyData,
}

/// How startup ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The client's connection failed or it broke the protocol.
    #[error("{0}")]
    Io(#[from] ClientIoError),
    /// The client was refused with this error (already sent).
    #[error("{}", .0.message().map(|m| m.to_string()).unwrap_or_default())]
    Refused(ErrorFields),
    /// The connection carried a cancel request and is done.
    #[error("cancel request handled")]
    CancelHandled,
}

fn fatal(sqlstate: &str, message: impl Into<String>) -> ErrorFields {
    ErrorFields::new("FATAL", sqlstate, message)
}

/// Sends a FATAL error and reports the refusal.
async fn refuse(stream: &mut BoxedStream, fields: ErrorFields) -> StartupError {
    let _ = write_messages(stream, &[BackendMessage::ErrorResponse(fields.clone())]).await;
    StartupError::Refused(fields)
}

/// Runs a client's startup up to (and including) its first ReadyForQuery.
pub async fn start_client(
    ctx: &ProxyContext,
    mut stream: BoxedStream,
) -> Result<StartedClient, StartupError> {
    let mut buffer = BytesMut::new();
    let mut decoder = FrontendDecoder::new(ctx.limits);
    let mut tls = false;
    let mut negotiations = 0;
    let startup = loop {
        let message = match read_message(&mut stream, &mut buffer, &mut decoder).await {
            Ok(message) => message,
            Err(ClientIoError::Protocol(error)) => {
                ctx.metrics
                    .errors_total
                    .with_label_values(&["protocol"])
                    .inc();
                return Err(refuse(&mut stream, fatal(error.sqlstate(), error.to_string())).await);
            }
            Err(error) => return Err(error.into()),
        };
        match message {
            FrontendMessage::Startup(startup) => break startup,
            FrontendMessage::CancelRequest(request) => {
                ctx.cancels
                    .cancel(&request, ctx.pool.connector(), &ctx.metrics)
                    .await;
                return Err(StartupError::CancelHandled);
            }
            message @ (FrontendMessage::SslRequest | FrontendMessage::GssEncRequest) => {
                negotiations += 1;
                if negotiations > MAX_NEGOTIATION_PACKETS {
                    return Err(refuse(
                        &mut stream,
                        fatal("08P01", "too many SSL/GSS negotiation requests"),
                    )
                    .await);
                }
                let wants_tls = matches!(message, FrontendMessage::SslRequest);
                stream = negotiate(ctx, stream, &buffer, wants_tls && !tls).await?;
                tls |= wants_tls && ctx.client_tls.is_some();
            }
            other => {
                let message = format!("expected a startup message, received {}", other.name());
                return Err(refuse(&mut stream, fatal("08P01", message)).await);
            }
        }
    };
    let user = check_startup(ctx, &mut stream, &startup, tls).await?;
    authenticate(ctx, &mut stream, &mut buffer, &mut decoder, &startup, tls).await?;
    let settings = match client_settings(&startup) {
        Ok(settings) => settings,
        Err(error) => {
            return Err(refuse(
                &mut stream,
                fatal(InvalidOption::SQLSTATE, error.to_string()),
            )
            .await);
        }
    };
    let parameters = match session_parameters(ctx, &settings).await {
        Ok(parameters) => parameters,
        Err(fields) => return Err(refuse(&mut stream, fields).await),
    };
    let key = ctx.with_rng(|rng| ctx.cancels.register(rng));
    let mut messages = negotiate_protocol_version(&startup);
    messages.extend(
        parameters
            .into_iter()
            .map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
    );
    messages.push(BackendMessage::BackendKeyData(key.clone()));
    messages.push(BackendMessage::ReadyForQuery(TransactionStatus::Idle));
    if let Err(error) = write_messages(&mut stream, &messages).await {
        ctx.cancels.unregister(key.process_id);
        return Err(error.into());
    }
    Ok(StartedClient {
        stream,
        buffer,
        decoder,
        user,
        settings,
        key,
    })
}

/// Answers SSLRequest (`S` and a TLS handshake when configured, else `N`) or GSSENCRequest
/// (always `N`).
async fn negotiate(
    ctx: &ProxyContext,
    mut stream: BoxedStream,
    buffer: &BytesMut,
    tls: bool,
) -> Result<BoxedStream, StartupError> {
    let Some(client_tls) = ctx.client_tls.as_ref().filter(|_| tls) else {
        stream.write_all(b"N").await.map_err(ClientIoError::from)?;
        return Ok(stream);
    };
    if !buffer.is_empty() {
        // Bytes sent after SSLRequest but before the handshake could have been injected by a
        // man in the middle (CVE-2021-23222): refuse, as Postgres does.
        let fields = fatal("08P01", "received unencrypted data after SSL request");
        return Err(refuse(&mut stream, fields).await);
    }
    stream.write_all(b"S").await.map_err(ClientIoError::from)?;
    stream.flush().await.map_err(ClientIoError::from)?;
    client_tls.accept(stream).await.map_err(|error| {
        ctx.metrics.errors_total.with_label_values(&["tls"]).inc();
        StartupError::Io(ClientIoError::Io(std::io::Error::other(error.to_string())))
    })
}

/// Checks user, database and replication; returns the user.
async fn check_startup(
    ctx: &ProxyContext,
    stream: &mut BoxedStream,
    startup: &StartupMessage,
    tls: bool,
) -> Result<String, StartupError> {
    let Some(user) = startup
        .parameter("user")
        .filter(|u| !u.is_empty())
        .map(|u| u.to_string())
    else {
        return Err(refuse(
            stream,
            fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ),
        )
        .await);
    };
    let database = startup
        .parameter("database")
        .filter(|d| !d.is_empty())
        .map_or(user.clone(), |d| d.to_string());
    if database != ctx.database {
        let message = format!("database \"{database}\" does not exist");
        let fields = fatal("3D000", message).with(
            b'H',
            format!("This proxy serves database \"{}\".", ctx.database),
        );
        return Err(refuse(stream, fields).await);
    }
    if startup
        .parameter("replication")
        .is_some_and(|r| r != "false" && r != "0" && r != "off")
    {
        return Err(refuse(
            stream,
            fatal(
                "0A000",
                "replication connections are not supported through this proxy",
            ),
        )
        .await);
    }
    if ctx.auth.method == Some(AuthMethod::Cleartext)
        && !tls
        && !ctx.auth.allow_cleartext_without_tls
    {
        let fields = fatal("28000", "cleartext password authentication requires TLS").with(
            b'H',
            "Connect with sslmode=require, or start the proxy with --allow-cleartext-without-tls.",
        );
        return Err(refuse(stream, fields).await);
    }
    Ok(user)
}

async fn authenticate(
    ctx: &ProxyContext,
    stream: &mut BoxedStream,
    buffer: &mut BytesMut,
    decoder: &mut FrontendDecoder,
    startup: &StartupMessage,
    tls: bool,
) -> Result<(), StartupError> {
    let config = ServerAuthConfig {
        method: ctx.auth.method,
        mock_key: ctx.auth.mock_key.clone(),
        tls_server_end_point: ctx
            .client_tls
            .as_ref()
            .filter(|_| tls)
            .and_then(|t| t.tls_server_end_point()),
    };
    let user = startup
        .parameter("user")
        .map(|u| u.to_string())
        .unwrap_or_default();
    let stored = ctx.auth.users.get(&user).cloned();
    let started = ctx.with_rng(|rng| ServerHandshake::start(startup, &config, stored, rng));
    let (mut handshake, mut step) = match started {
        Ok(started) => started,
        Err(error) => return Err(refuse(stream, error_fields(&error.error_response())).await),
    };
    // SCRAM takes two client messages; a bound keeps a confused client from looping.
    for _round in 0..4 {
        let (message, expect) = match step {
            ServerStep::Authenticated(messages) => {
                write_messages(stream, &messages).await?;
                return Ok(());
            }
            ServerStep::Send { message, expect } => (message, expect),
        };
        write_messages(stream, &[message]).await?;
        decoder.expect_auth_response(expect);
        let reply = read_message(stream, buffer, decoder).await?;
        step = match handshake.handle(reply) {
            Ok(step) => step,
            Err(error) => {
                ctx.metrics.client_auth_failures_total.inc();
                ctx.metrics.errors_total.with_label_values(&["auth"]).inc();
                tracing::info!(user = %user, %error, "client authentication failed");
                return Err(refuse(stream, error_fields(&error.error_response())).await);
            }
        };
    }
    Err(refuse(
        stream,
        fatal("08P01", "authentication exchange did not finish"),
    )
    .await)
}

fn error_fields(message: &BackendMessage) -> ErrorFields {
    match message {
        BackendMessage::ErrorResponse(fields) => fields.clone(),
        _ => fatal(PROXY_ERROR_SQLSTATE, "authentication failed"),
    }
}

/// The client's session settings: startup parameters that are GUCs, plus `-c name=value`
/// (and `--name=value`) from `options`.
pub fn client_settings(startup: &StartupMessage) -> Result<Vec<(String, String)>, InvalidOption> {
    let mut settings = Vec::new();
    for (name, value) in &startup.parameters {
        let name = name.to_string();
        if name.starts_with("_pq_.") || NON_SETTING_PARAMETERS.contains(&name.as_str()) {
            continue;
        }
        settings.push((name, value.to_string()));
    }
    if let Some(options) = startup.parameter("options") {
        settings.extend(parse_startup_options(&options.to_string())?);
    }
    Ok(settings)
}

/// Settings whose reported value can be predicted without asking the origin.
fn predictable(name: &str, value: &str) -> Option<String> {
    match name.to_ascii_lowercase().as_str() {
        "application_name"
            if value.len() < 64 && value.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Some(value.to_string())
        }
        "client_encoding"
            if matches!(
                value.to_ascii_lowercase().as_str(),
                "utf8" | "utf-8" | "unicode"
            ) =>
        {
            Some("UTF8".into())
        }
        _ => None,
    }
}

/// The ParameterStatus set the client sees: the origin's, with the client's settings applied.
/// When a setting's effect cannot be predicted, the origin is asked (which also rejects
/// invalid settings, as Postgres rejects them at startup).
async fn session_parameters(
    ctx: &ProxyContext,
    settings: &[(String, String)],
) -> Result<Vec<(PgString, PgString)>, ErrorFields> {
    let mut parameters = ctx.pool.origin_parameters().await.map_err(|e| {
        let mut fields = e.to_error_fields();
        fields
            .fields
            .retain(|(code, _)| *code != b'S' && *code != b'V');
        fields.fields.insert(0, (b'V', PgString::from("FATAL")));
        fields.fields.insert(0, (b'S', PgString::from("FATAL")));
        fields
    })?;
    let mut unpredictable = Vec::new();
    for (name, value) in settings {
        match predictable(name, value) {
            Some(reported) => set_parameter(&mut parameters, name, reported),
            None => unpredictable.push((name.clone(), value.clone())),
        }
    }
    if !unpredictable.is_empty() {
        for (name, value) in ask_origin(ctx, &unpredictable).await? {
            set_parameter(&mut parameters, &name.to_string(), value.to_string());
        }
    }
    Ok(parameters)
}

fn set_parameter(parameters: &mut [(PgString, PgString)], name: &str, value: String) {
    if let Some((_, existing)) = parameters
        .iter_mut()
        .find(|(n, _)| n.to_string().eq_ignore_ascii_case(name))
    {
        *existing = PgString::from(value);
    }
}

/// Applies settings on a pooled connection and collects what the origin reports.
async fn ask_origin(
    ctx: &ProxyContext,
    settings: &[(String, String)],
) -> Result<Vec<(PgString, PgString)>, ErrorFields> {
    let mut lent = ctx.pool.acquire().await.map_err(|e| e.to_error_fields())?;
    let sql = apply_settings_query(settings);
    let connection = &mut lent.connection;
    let mut reported = Vec::new();
    let mut failure = None;
    let result: Result<(), crate::origin::OriginError> = async {
        connection
            .link
            .send(&FrontendMessage::Query(PgString::from(sql)))
            .await?;
        loop {
            match connection.link.receive().await? {
                BackendMessage::ParameterStatus { name, value } => reported.push((name, value)),
                BackendMessage::ErrorResponse(fields) => failure = Some(fields),
                BackendMessage::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
        }
    }
    .await;
    connection.needs_reset = true;
    let reusable = result.is_ok();
    ctx.pool.release(lent, reusable);
    if let Err(error) = result {
        return Err(error.to_error_fields());
    }
    match failure {
        Some(mut fields) => {
            for (code, value) in &mut fields.fields {
                if *code == b'S' || *code == b'V' {
                    *value = PgString::from("FATAL");
                }
            }
            Err(fields)
        }
        None => Ok(reported),
    }
}

/// The proxy speaks protocol 3.0 and no `_pq_` options: tell clients that asked for more.
fn negotiate_protocol_version(startup: &StartupMessage) -> Vec<BackendMessage> {
    let unrecognized: Vec<PgString> = startup
        .parameters
        .iter()
        .filter(|(name, _)| name.as_bytes().starts_with(b"_pq_."))
        .map(|(name, _)| name.clone())
        .collect();
    if startup.version.minor == 0 && unrecognized.is_empty() {
        return Vec::new();
    }
    vec![BackendMessage::NegotiateProtocolVersion {
        newest_minor: 0,
        unrecognized_options: unrecognized,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_exclude_connection_parameters() {
        let startup = StartupMessage::new([
            ("user", "u"),
            ("database", "d"),
            ("application_name", "app"),
            ("_pq_.x", "1"),
            ("options", "-c TimeZone=UTC"),
        ]);
        assert_eq!(
            client_settings(&startup).expect("valid options"),
            vec![
                ("application_name".into(), "app".into()),
                ("TimeZone".into(), "UTC".into())
            ]
        );
    }
}
