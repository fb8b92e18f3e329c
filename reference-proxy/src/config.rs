//! Configuration of the proxy: command-line flags, an optional TOML file, and defaults.
//!
//! # Sources and precedence
//!
//! Every setting can be given as a flag (`--pool-size 16`) or as a key of the TOML file named
//! by `--config` (`pool_size = 16`); the key is the flag's name in snake_case. A flag given on
//! the command line wins over the file, and the file wins over the built-in default. To know
//! whether a flag was *given*, every value field of [`Cli`] is an `Option` without a clap
//! default; the defaults live in the `DEFAULT_*` constants below and are applied once, in the
//! merge. (A clap `default_value` would make "not given" indistinguishable from "given the
//! default", and the file could then never override it.) Two consequences:
//!
//! * `--client-user` replaces the file's `[[client_users]]` as a whole instead of adding to it,
//!   so the command line describes the complete set of credentials.
//! * `--allow-cleartext-without-tls` can only switch the setting on; a file that sets it cannot
//!   be overridden to `false` from the command line.
//!
//! The origin URL may also come from the `ORIGIN_URL` environment variable (clap's `env`), with
//! the same rank as `--origin`: it wins over the file. The environment and the file keep the
//! origin password out of `ps` output, where a command-line flag would be visible to every
//! user of the host.
//!
//! Relative paths (TLS files, `sslrootcert`, ...) are kept as written and therefore resolve
//! against the proxy's working directory, not the config file's directory, so a path means the
//! same thing whether it came from a flag or from the file.
//!
//! # Validation and warnings
//!
//! [`load_from_args`] returns only configurations that passed [`ProxyConfig::validate`]: a
//! configuration that cannot work (an empty pool, half a key pair, a password-less SCRAM user,
//! cleartext authentication that would refuse every client) is an error that names the flag
//! and the file key to fix. Configurations that work but are risky (`trust`, cleartext
//! passwords) are not errors; [`ProxyConfig::warnings`] lists them so the binary can log them
//! at startup ([`ProxyConfig::log_warnings`]).
//!
//! # Secrets
//!
//! Passwords (the origin's and the client users') never appear in `Debug` or `Display` output
//! nor in error messages: [`OriginConfig`], [`ClientUser`] and [`ProxyConfig`] implement
//! `Debug` by hand and print `<redacted>`; URL parse errors never echo the userinfo; TOML
//! errors are reported as `file:line:column: message` without the source line that a password
//! could be on; `--help` hides the value of `ORIGIN_URL`. [`Cli`] and [`FileConfig`] hold raw
//! secrets and deliberately do not implement `Debug`.
//!
//! # Origin TLS (`sslmode`)
//!
//! [`SslMode`] follows libpq, with one deliberate difference: `verify-ca` and `verify-full`
//! without `sslrootcert` verify against the system's root certificates (libpq would look for
//! `~/.postgresql/root.crt` and fail without it). `sslrootcert=system` (libpq 16) is accepted
//! and means the same: it is stored as `sslrootcert: None`, makes `verify-full` the default,
//! and, as in libpq, any weaker mode with it is an error. As in libpq, `require` with an
//! explicit `sslrootcert` verifies the chain like `verify-ca`
//! ([`OriginConfig::verifies_certificate`]).

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, ValueEnum};
use elephant_protocol::limits::{DEFAULT_MAX_MESSAGE_LEN, MAX_LENGTH_WORD, MAX_STARTUP_PACKET_LEN};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::Deserialize;

use crate::sql::SessionFeature;

/// Default client-facing address: loopback only, so a fresh proxy is not exposed by accident.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6432));
/// Origin port when the URL names none (Postgres's default).
pub const DEFAULT_ORIGIN_PORT: u16 = 5432;
/// Default `--pool-size`.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default `--pool-min`.
pub const DEFAULT_POOL_MIN: usize = 0;
/// Largest accepted `--pool-size`: Postgres's `MAX_BACKENDS` (2^18 - 1); no origin accepts more
/// connections, so a larger value is a typo.
pub const MAX_POOL_SIZE: usize = 262_143;
/// Default `--connect-timeout` in seconds (Hyperdrive's initial-connection limit).
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 15;
/// Default `--acquire-timeout` in seconds.
pub const DEFAULT_ACQUIRE_TIMEOUT_SECS: u64 = 10;
/// Default `--idle-timeout` in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Default `--statement-timeout` in seconds (Hyperdrive's per-statement limit).
pub const DEFAULT_STATEMENT_TIMEOUT_SECS: u64 = 60;
/// Default `--client-idle-timeout` in seconds (Hyperdrive: 10 minutes).
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_SECS: u64 = 600;
/// Default `--health-check-after` in seconds.
pub const DEFAULT_HEALTH_CHECK_AFTER_SECS: u64 = 5;
/// Default `--shutdown-grace` in seconds.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// Longest accepted timeout (365 days). Bounding every duration keeps `Instant + timeout`
/// arithmetic elsewhere far from overflow (which would panic) on any user input.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 60 * 60;
/// Default `--max-message-size`: Postgres's own limit, 1 GiB - 1 (`PQ_LARGE_MESSAGE_LIMIT`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = DEFAULT_MAX_MESSAGE_LEN;
/// Smallest accepted `--max-message-size`: the largest startup packet Postgres accepts, so
/// the limit alone can never refuse an ordinary login.
pub const MIN_MAX_MESSAGE_SIZE: usize = MAX_STARTUP_PACKET_LEN;
/// Largest accepted `--max-message-size`: what a protocol length word (Int32) can express.
pub const MAX_MAX_MESSAGE_SIZE: usize = MAX_LENGTH_WORD as usize;

/// The query parameters an origin URL may carry, listed in error messages.
const ORIGIN_PARAMETERS: &str = "sslmode, sslrootcert, sslcert, sslkey, application_name, options";
/// `sslrootcert` value meaning "the system's root certificates" (libpq 16).
const SYSTEM_ROOTS: &str = "system";
/// What `Debug` prints in place of a secret.
const REDACTED: &str = "<redacted>";
/// Characters percent-encoded when the redacted origin URL is rendered.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

// ---------------------------------------------------------------------------------------------
// The configuration the proxy runs with.
// ---------------------------------------------------------------------------------------------

/// The complete, merged and validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Address clients connect to (`--listen`).
    pub listen: SocketAddr,
    /// The one origin database (`--origin` / `ORIGIN_URL` / `origin`).
    pub origin: OriginConfig,
    /// Origin connection pool sizes.
    pub pool: PoolConfig,
    /// Every timeout.
    pub timeouts: Timeouts,
    /// How clients authenticate to the proxy.
    pub client_auth: ClientAuthConfig,
    /// TLS for client connections (`--tls-cert` + `--tls-key`); `None` = plaintext only.
    pub tls: Option<ListenerTls>,
    /// Prometheus endpoint (`--metrics`); `None` = off.
    pub metrics: Option<SocketAddr>,
    /// Largest message accepted from either side, as counted by its length word
    /// (`--max-message-size`); feed to `elephant_protocol::DecoderLimits::with_max_message_len`.
    pub max_message_size: usize,
    /// Reach the origin through a Cloudflare-style WebSocket tunnel (`--tunnel`); `None` =
    /// direct TCP to the origin host.
    pub tunnel: Option<TunnelConfig>,
    /// What transaction mode does with each session-scoped feature (`--session-feature`).
    pub session_features: SessionFeaturePolicies,
}

/// When a client's origin connection goes back to the pool (`--pool-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// When each transaction ends: connections are shared, session state is tracked, pinned
    /// or refused (`--session-feature`).
    #[default]
    Transaction,
    /// When the client disconnects: one origin connection per client, everything works as
    /// it does directly.
    Session,
}

impl PoolMode {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// What transaction mode does when a client uses a session-scoped feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionPolicy {
    /// Keep the client on its origin connection until it disconnects (counted against
    /// `--max-pinned`).
    Pin,
    /// Answer with an ErrorResponse (0A000) naming the feature and this setting.
    Refuse,
}

impl SessionPolicy {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionPolicy::Pin => "pin",
            SessionPolicy::Refuse => "refuse",
        }
    }
}

/// One [`SessionPolicy`] per [`SessionFeature`]; every feature is refused by default (as
/// Hyperdrive documents them unsupported), so nothing silently holds a pooled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFeaturePolicies {
    policies: [SessionPolicy; SessionFeature::ALL.len()],
}

impl Default for SessionFeaturePolicies {
    fn default() -> Self {
        SessionFeaturePolicies {
            policies: [SessionPolicy::Refuse; SessionFeature::ALL.len()],
        }
    }
}

impl SessionFeaturePolicies {
    /// The policy for `feature`.
    pub fn get(&self, feature: SessionFeature) -> SessionPolicy {
        self.policies[feature as usize]
    }

    /// Sets the policy for `feature`.
    pub fn set(&mut self, feature: SessionFeature, policy: SessionPolicy) {
        self.policies[feature as usize] = policy;
    }

    /// Every feature with its policy.
    pub fn iter(&self) -> impl Iterator<Item = (SessionFeature, SessionPolicy)> + '_ {
        SessionFeature::ALL
            .into_iter()
            .map(|feature| (feature, self.get(feature)))
    }
}

/// The WebSocket tunnel to the origin's private network (`--tunnel` and friends). The origin
/// URL's host and port are then only used for TLS names and logs: the tunnel decides where
/// the bytes go. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// `wss://host[:port][/path]` of the tunnel (`--tunnel`).
    pub url: String,
    /// Access service token id (`--access-client-id` / `CF_ACCESS_CLIENT_ID`).
    pub access_client_id: Option<String>,
    /// Access service token secret (`--access-client-secret` / `CF_ACCESS_CLIENT_SECRET`).
    pub access_client_secret: Option<String>,
    /// A private CA to trust for the tunnel host instead of the system roots (`--tunnel-ca`).
    pub ca: Option<PathBuf>,
    /// Limit for TCP + TLS + WebSocket upgrade (`--tunnel-handshake-timeout`).
    pub handshake_timeout: Duration,
}

impl fmt::Debug for TunnelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelConfig")
            .field("url", &self.url)
            .field("access_client_id", &self.access_client_id)
            .field(
                "access_client_secret",
                &self.access_client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("ca", &self.ca)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// Default `--tunnel-handshake-timeout`, seconds (cloudflared has none; a silent edge would
/// hang it forever).
pub const DEFAULT_TUNNEL_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// Where and how to reach the origin, parsed from a libpq URI by [`parse_origin_url`].
#[derive(Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Host name or IP address; an IPv6 address is stored without brackets (`::1`).
    pub host: String,
    /// TCP port, default 5432.
    pub port: u16,
    /// Role the proxy logs in to the origin as.
    pub user: String,
    /// Its password, if the URL has one (an empty password counts as none).
    pub password: Option<String>,
    /// Database name; defaults to `user`, as in libpq.
    pub database: String,
    /// TLS policy towards the origin; default `prefer`.
    pub sslmode: SslMode,
    /// CA bundle for verifying the origin; `None` = the system's roots.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate presented to the origin (with `sslkey`).
    pub sslcert: Option<PathBuf>,
    /// Private key of `sslcert`.
    pub sslkey: Option<PathBuf>,
    /// `application_name` sent in the startup message.
    pub application_name: Option<String>,
    /// `options` sent in the startup message (e.g. `-c search_path=app`).
    pub options: Option<String>,
}

/// libpq's `sslmode`, for the proxy's connections to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Try plaintext first; use TLS only if the server insists.
    Allow,
    /// Try TLS first; fall back to plaintext if the server does not support it (libpq's
    /// default for a URI without `sslmode`).
    #[default]
    Prefer,
    /// TLS, no certificate check (unless `sslrootcert` is given: then like `verify-ca`).
    Require,
    /// TLS; the certificate chain must lead to a trusted root.
    VerifyCa,
    /// TLS; chain verified and the certificate must name the host.
    VerifyFull,
}

/// Sizes of the pool of origin connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections kept open even when idle (`--pool-min`, default 0).
    pub min_connections: usize,
    /// Most connections open to the origin at once (`--pool-size`, default 8).
    pub max_connections: usize,
    /// When a client's connection goes back to the pool (`--pool-mode`, default transaction).
    pub mode: PoolMode,
    /// Most connections clients may hold pinned in transaction mode (`--max-pinned`, default
    /// half the pool, at least 1).
    pub max_pinned: usize,
}

/// Every timeout the proxy enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection to the origin, TLS and authentication included (`--connect-timeout`).
    pub connect: Duration,
    /// A client waiting for a pooled connection (`--acquire-timeout`).
    pub acquire: Duration,
    /// Origin connections idle this long are closed, down to `pool-min` (`--idle-timeout`).
    pub idle_origin: Duration,
    /// Longest statement (`--statement-timeout`); `None` = no limit.
    pub statement: Option<Duration>,
    /// A client connection silent this long is closed (`--client-idle-timeout`); `None` = never.
    pub client_idle: Option<Duration>,
    /// An origin connection unused this long gets a round trip before it is lent
    /// (`--health-check-after`); zero = always check.
    pub health_check_after: Duration,
    /// On SIGTERM, how long running transactions may continue (`--shutdown-grace`).
    pub shutdown_grace: Duration,
}

/// How clients authenticate to the proxy. The proxy always logs in to the origin with the
/// origin URL's credentials; these are the proxy's own front-door credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// Exchange used with clients (`--auth-method`).
    pub method: ClientAuthMethod,
    /// Accepted user names and their passwords (`--client-user`, `[[client_users]]`); never
    /// empty after merging: without any, the origin's user and password. With `trust` the
    /// passwords are unused but the names still say which users may connect.
    pub users: Vec<ClientUser>,
    /// Permit cleartext (`password`) authentication on non-TLS client connections.
    pub allow_cleartext_without_tls: bool,
}

/// One client credential. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientUser {
    /// User name the client sends in its startup message.
    pub name: String,
    /// Its password.
    pub password: String,
}

/// The authentication exchange the proxy asks clients for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, ValueEnum, Deserialize)]
pub enum ClientAuthMethod {
    /// SCRAM-SHA-256: the password never crosses the wire (Postgres's default since 14).
    #[default]
    #[value(name = "scram-sha-256")]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response (legacy; deprecated by Postgres 18).
    #[value(name = "md5")]
    #[serde(rename = "md5")]
    Md5,
    /// Cleartext password; refused on non-TLS connections unless --allow-cleartext-without-tls.
    #[value(name = "password")]
    #[serde(rename = "password")]
    Cleartext,
    /// No password at all: any client that reaches --listen gets in as a listed user.
    #[value(name = "trust")]
    #[serde(rename = "trust")]
    Trust,
}

/// Certificate and key for TLS on client connections (both PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// Private key (`--tls-key`).
    pub key: PathBuf,
}

/// A configuration that works but deserves a line in the log at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigWarning {
    /// `--auth-method trust`.
    TrustAuthentication,
    /// `--auth-method password` with TLS: clients that connect without TLS are refused.
    CleartextRefusedWithoutTls,
    /// `--auth-method password` with `--allow-cleartext-without-tls`.
    CleartextWithoutTls,
    /// `--allow-cleartext-without-tls` with another method.
    AllowCleartextUnused,
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// Why the configuration could not be loaded. Messages name the flag and the file key to fix
/// and never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Command-line parsing failed, or `--help` / `--version` was asked for: call
    /// [`clap::Error::exit`] on it, which prints to the right stream with the right status.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// The `--config` file could not be read.
    #[error("cannot read the --config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("--config file {}{at}: {message}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// `:line:column` of the problem, or empty if unknown.
        at: String,
        /// What is wrong (names the key).
        message: String,
    },
    /// No origin anywhere.
    #[error(
        "no origin database: give --origin postgres://USER:PASSWORD@HOST:PORT/DATABASE, set \
         ORIGIN_URL, or put `origin = \"postgres://...\"` in the --config file"
    )]
    MissingOrigin,
    /// The origin URL is malformed.
    #[error("invalid origin URL (--origin, ORIGIN_URL or file key `origin`): {0}")]
    OriginUrl(#[from] OriginUrlError),
    /// A `--client-user` value is not `NAME:PASSWORD`.
    #[error("--client-user #{position} is not NAME:PASSWORD: {problem}")]
    InvalidClientUser {
        /// 1-based position among the `--client-user` flags.
        position: usize,
        /// What is wrong (never the value itself, which may hold a password).
        problem: &'static str,
    },
    /// A client user without a name (from `[[client_users]]`).
    #[error("a client user has an empty name (--client-user / file key `client_users.name`)")]
    EmptyClientUserName,
    /// The same client user name twice.
    #[error("client user `{0}` is listed twice (--client-user / [[client_users]]); keep one entry")]
    DuplicateClientUser(String),
    /// A password-based method with a user whose password is empty.
    #[error(
        "client user `{name}` has no password, but --auth-method {method} needs one: give \
         --client-user {name}:PASSWORD (file: [[client_users]]), put a password in the origin \
         URL (its credentials are the default client user), or use --auth-method trust"
    )]
    EmptyClientPassword {
        /// The user.
        name: String,
        /// The method that needs a password.
        method: ClientAuthMethod,
    },
    /// Cleartext authentication that would refuse every client.
    #[error(
        "--auth-method password without TLS would refuse every client: set --tls-cert and \
         --tls-key (file keys `tls_cert`, `tls_key`), or pass --allow-cleartext-without-tls \
         (file key `allow_cleartext_without_tls = true`) to accept passwords in plaintext"
    )]
    CleartextWithoutTls,
    /// Only one of `--tls-cert` / `--tls-key`.
    #[error(
        "--tls-cert and --tls-key (file keys `tls_cert`, `tls_key`) go together, but only \
         {given} was given"
    )]
    ListenerTlsIncomplete {
        /// The one that was given.
        given: &'static str,
    },
    /// Only one of `sslcert` / `sslkey` in the origin URL.
    #[error("the origin URL has {given} but not {missing}: give both or neither")]
    OriginClientCertIncomplete {
        /// The one that was given.
        given: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// The origin host or user is empty (only possible for a hand-built [`OriginConfig`]).
    #[error("the origin {0} is empty")]
    OriginFieldEmpty(&'static str),
    /// `--pool-size` out of range.
    #[error("--pool-size (file key `pool_size`) must be between 1 and {MAX_POOL_SIZE}, not {0}")]
    PoolSize(usize),
    /// `--pool-min` above `--pool-size`.
    #[error(
        "--pool-min ({min}, file key `pool_min`) must not exceed --pool-size ({size}, file key \
         `pool_size`)"
    )]
    PoolMinAboveSize {
        /// `--pool-min`.
        min: usize,
        /// `--pool-size`.
        size: usize,
    },
    /// `--max-pinned` above `--pool-size`.
    #[error(
        "--max-pinned ({pinned}, file key `max_pinned`) must not exceed --pool-size ({size}, \
         file key `pool_size`)"
    )]
    MaxPinnedAboveSize {
        /// `--max-pinned`.
        pinned: usize,
        /// `--pool-size`.
        size: usize,
    },
    /// A `--session-feature` value is not `FEATURE=POLICY` with known names.
    #[error(
        "--session-feature {value:?} (file table `[session_features]`): {problem}; features: \
         listen, temp_tables, advisory_locks, sql_prepare, hold_cursors, \
         session_authorization; policies: pin, refuse"
    )]
    InvalidSessionFeature {
        /// The value given.
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A timeout that must be positive is zero.
    #[error("{flag} (file key `{key}`) must be at least 1 second")]
    ZeroTimeout {
        /// The flag.
        flag: &'static str,
        /// The file key.
        key: &'static str,
    },
    /// A timeout above [`MAX_TIMEOUT_SECS`].
    #[error("{flag} (file key `{key}`) must be at most {MAX_TIMEOUT_SECS} seconds (365 days)")]
    TimeoutTooLong {
        /// The flag.
        flag: &'static str,
        /// The file key.
        key: &'static str,
    },
    /// `--max-message-size` out of range.
    #[error(
        "--max-message-size (file key `max_message_size`) must be between \
         {MIN_MAX_MESSAGE_SIZE} and {MAX_MAX_MESSAGE_SIZE} bytes, not {0}"
    )]
    MaxMessageSize(usize),
    /// Only one half of the service token.
    #[error(
        "give both --access-client-id and --access-client-secret (or CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET), or neither"
    )]
    AccessTokenIncomplete,
    /// `--metrics` on the client address.
    #[error(
        "--metrics (file key `metrics`) and --listen (file key `listen`) are both {0}; give \
         the Prometheus endpoint its own address"
    )]
    MetricsOnListenAddress(SocketAddr),
}

/// What is wrong with an origin URL. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginUrlError {
    /// No `scheme://`.
    #[error("expected postgres://USER:PASSWORD@HOST:PORT/DATABASE?PARAMS")]
    NotAUrl,
    /// A scheme other than `postgres` / `postgresql`.
    #[error("unsupported scheme `{0}://`: use postgres:// or postgresql://")]
    UnsupportedScheme(String),
    /// No host.
    #[error("no host: expected postgres://USER:PASSWORD@HOST/DATABASE")]
    MissingHost,
    /// No user.
    #[error("no user: expected postgres://USER:PASSWORD@HOST/DATABASE")]
    MissingUser,
    /// `host1,host2`.
    #[error(
        "{0} hosts are given, but multiple hosts (libpq's `h1,h2` failover) are unsupported: \
         give exactly one origin host"
    )]
    MultipleHosts(usize),
    /// A Unix-domain socket directory as host.
    #[error(
        "host `{0}` is a Unix-domain socket directory, which is unsupported: the proxy reaches \
         the origin over TCP"
    )]
    UnixSocket(String),
    /// An IPv6 address without brackets.
    #[error("an IPv6 host must be written in brackets, e.g. postgres://user@[::1]:5432/db")]
    UnbracketedIpv6,
    /// `[` without `]`.
    #[error("the IPv6 host has `[` but no closing `]`")]
    UnclosedIpv6,
    /// Not an IPv6 address between the brackets.
    #[error("`[{0}]` is not an IPv6 address")]
    InvalidIpv6(String),
    /// Something other than `:PORT` after `]`.
    #[error("after the bracketed IPv6 host only `:PORT` may follow")]
    AfterIpv6,
    /// `host:` with nothing after the colon.
    #[error("the port after `:` is empty; remove the `:` to use port {DEFAULT_ORIGIN_PORT}")]
    EmptyPort,
    /// A port that is not a number.
    #[error(
        "the port is not a number (if the password contains `@`, `:`, `/`, `?` or `#`, \
         percent-encode them, e.g. `@` as %40)"
    )]
    PortNotNumeric,
    /// A port outside 1..=65535.
    #[error("port {0} is out of range: expected 1 to 65535")]
    PortOutOfRange(String),
    /// Not UTF-8 after percent-decoding.
    #[error("the {0} is not valid UTF-8 after percent-decoding")]
    NotUtf8(&'static str),
    /// A query parameter this proxy does not know.
    #[error("unknown query parameter `{0}`; supported: {ORIGIN_PARAMETERS}")]
    UnknownParameter(String),
    /// `?sslmode` without `=`.
    #[error("query parameter `{0}` has no `=VALUE`")]
    ParameterWithoutValue(String),
    /// `?sslmode=`.
    #[error("query parameter `{0}` has an empty value")]
    EmptyParameter(String),
    /// The same query parameter twice.
    #[error("query parameter `{0}` is given twice")]
    DuplicateParameter(String),
    /// An `sslmode` value libpq does not define.
    #[error(
        "invalid sslmode `{0}`; valid values: disable, allow, prefer, require, verify-ca, \
         verify-full"
    )]
    InvalidSslMode(String),
    /// `sslrootcert=system` with a weaker mode than `verify-full`.
    #[error("sslmode={0} may not be used with sslrootcert=system; use sslmode=verify-full")]
    WeakSslModeWithSystemRoots(SslMode),
}

// ---------------------------------------------------------------------------------------------
// Command line and file.
// ---------------------------------------------------------------------------------------------

/// Command-line flags. Every value is optional so that the merge can tell "given" from
/// "defaulted" (see the module docs); `--help` states each default.
#[derive(Parser)]
#[command(
    name = "reference-proxy",
    version,
    about = "A Hyperdrive-style pooled Postgres proxy: clients speak the Postgres protocol to \
             it, and it lends them connections to one origin database per transaction.",
    long_about = None,
    after_long_help = "Every flag except --config can also be set in the TOML file given by \
                       --config, under the flag's name in snake_case (--pool-size 16 becomes \
                       `pool_size = 16`; client users become [[client_users]] tables with \
                       `name` and `password`). Flags win over the file; the file wins over \
                       the defaults. Unknown keys in the file are an error."
)]
pub struct Cli {
    /// TOML configuration file whose keys mirror these flags in snake_case (`pool_size = 16`).
    /// Flags on the command line win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept Postgres clients on [default: 127.0.0.1:6432].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Origin database, postgres://USER:PASSWORD@HOST:PORT/DATABASE?PARAMS (required: here, in
    /// ORIGIN_URL, or in the file).
    ///
    /// A libpq URI (postgresql:// also works) with the query parameters sslmode (disable,
    /// allow, prefer, require, verify-ca, verify-full), sslrootcert, sslcert, sslkey,
    /// application_name and options. Percent-encode special characters in the password (`@` as
    /// %40, `:` as %3A, `/` as %2F). Port defaults to 5432, database to the user, sslmode to
    /// prefer; verify-ca and verify-full without sslrootcert use the system's root
    /// certificates. One host only; IPv6 in brackets (`[::1]`). Prefer ORIGIN_URL or the file
    /// over this flag: command-line flags are visible to every user of the host in `ps`.
    #[arg(long, value_name = "URL", env = "ORIGIN_URL", hide_env_values = true)]
    pub origin: Option<String>,

    /// Most connections the pool opens to the origin [default: 8].
    #[arg(long, value_name = "N")]
    pub pool_size: Option<usize>,

    /// Origin connections kept open even when idle; at most --pool-size [default: 0].
    #[arg(long, value_name = "N")]
    pub pool_min: Option<usize>,

    /// When a client's origin connection returns to the pool: `transaction` (when each
    /// transaction ends; session features follow --session-feature) or `session` (when the
    /// client disconnects) [default: transaction].
    #[arg(long, value_name = "MODE")]
    pub pool_mode: Option<PoolMode>,

    /// Most origin connections clients may hold pinned in transaction mode (see
    /// --session-feature); a client that would pin one more gets an error instead
    /// [default: half of --pool-size, at least 1].
    #[arg(long, value_name = "N")]
    pub max_pinned: Option<usize>,

    /// What transaction mode does when a client uses a session-scoped feature, FEATURE=POLICY.
    /// Features: listen, temp_tables, advisory_locks, sql_prepare, hold_cursors,
    /// session_authorization. Policies: `refuse` (an error naming the feature) or `pin` (the
    /// client keeps its origin connection until it disconnects). Repeatable; overrides the
    /// file's [session_features] per feature [default: refuse for every feature].
    #[arg(long, value_name = "FEATURE=POLICY")]
    pub session_feature: Vec<String>,

    /// Seconds allowed to open an origin connection, TLS and authentication included
    /// [default: 15].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,

    /// Seconds a client waits for a pooled connection before its query fails [default: 10].
    #[arg(long, value_name = "SECS")]
    pub acquire_timeout: Option<u64>,

    /// Seconds after which an idle origin connection is closed, down to --pool-min
    /// [default: 300].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,

    /// Seconds a statement may run before it is cancelled; 0 = no limit [default: 60].
    #[arg(long, value_name = "SECS")]
    pub statement_timeout: Option<u64>,

    /// Seconds a client connection may stay silent before it is closed; 0 = never
    /// [default: 600].
    #[arg(long, value_name = "SECS")]
    pub client_idle_timeout: Option<u64>,

    /// Seconds an idle origin connection may go unused before it is checked with a round trip
    /// ahead of being lent; 0 = check every time [default: 5].
    #[arg(long, value_name = "SECS")]
    pub health_check_after: Option<u64>,

    /// Seconds running transactions may continue after SIGTERM before connections are closed
    /// [default: 30].
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace: Option<u64>,

    /// How clients authenticate to the proxy [default: scram-sha-256].
    #[arg(long, value_name = "METHOD")]
    pub auth_method: Option<ClientAuthMethod>,

    /// A user clients may log in as, NAME:PASSWORD (split at the first `:`, so the password
    /// may contain `:`). Repeatable; replaces the file's `[[client_users]]`. Without any, clients
    /// log in with the origin URL's user and password.
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub client_user: Vec<String>,

    /// Accept cleartext (--auth-method password) authentication on client connections that
    /// are not TLS-encrypted; without it such clients are refused.
    #[arg(long)]
    pub allow_cleartext_without_tls: bool,

    /// PEM certificate chain for TLS on client connections; requires --tls-key.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert; requires --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Address to serve Prometheus metrics on (GET /metrics) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Largest protocol message accepted from clients or the origin, in bytes as counted by
    /// the message's length word [default: 1073741823, Postgres's own limit].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,

    /// Reach the origin through a Cloudflare Tunnel: wss://HOST[:PORT][/PATH]. The proxy opens
    /// TLS to HOST (verified against the system roots or --tunnel-ca), upgrades to a WebSocket
    /// carrying the Access service token, and speaks Postgres (with the origin URL's sslmode)
    /// inside it. The origin URL's host then names the database for TLS, not where to dial.
    #[arg(long, value_name = "URL")]
    pub tunnel: Option<String>,

    /// Cloudflare Access service token id sent as Cf-Access-Client-Id on the tunnel upgrade.
    #[arg(long, value_name = "ID", env = "CF_ACCESS_CLIENT_ID")]
    pub access_client_id: Option<String>,

    /// Cloudflare Access service token secret sent as Cf-Access-Client-Secret; never logged.
    /// Prefer the CF_ACCESS_CLIENT_SECRET environment variable: flags are visible in `ps`.
    #[arg(
        long,
        value_name = "SECRET",
        env = "CF_ACCESS_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub access_client_secret: Option<String>,

    /// PEM CA certificate(s) to trust for the tunnel host instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub tunnel_ca: Option<PathBuf>,

    /// Seconds allowed for TCP + TLS + WebSocket upgrade to the tunnel [default: 10].
    #[arg(long, value_name = "SECS")]
    pub tunnel_handshake_timeout: Option<u64>,
}

/// The `--config` TOML file: the flags in snake_case, all optional, unknown keys rejected.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--origin`.
    pub origin: Option<String>,
    /// `--pool-size`.
    pub pool_size: Option<usize>,
    /// `--pool-min`.
    pub pool_min: Option<usize>,
    /// `--pool-mode`.
    pub pool_mode: Option<PoolMode>,
    /// `--max-pinned`.
    pub max_pinned: Option<usize>,
    /// `--session-feature`, as a `[session_features]` table of `feature = "policy"`.
    #[serde(default)]
    pub session_features: std::collections::BTreeMap<String, SessionPolicy>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<u64>,
    /// `--acquire-timeout`.
    pub acquire_timeout: Option<u64>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<u64>,
    /// `--statement-timeout`.
    pub statement_timeout: Option<u64>,
    /// `--client-idle-timeout`.
    pub client_idle_timeout: Option<u64>,
    /// `--health-check-after`.
    pub health_check_after: Option<u64>,
    /// `--shutdown-grace`.
    pub shutdown_grace: Option<u64>,
    /// `--auth-method`.
    pub auth_method: Option<ClientAuthMethod>,
    /// `--client-user`, as `[[client_users]]` tables with `name` and `password`.
    #[serde(default)]
    pub client_users: Vec<ClientUser>,
    /// `--allow-cleartext-without-tls`.
    pub allow_cleartext_without_tls: Option<bool>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--max-message-size`.
    pub max_message_size: Option<usize>,
    /// `--tunnel`.
    pub tunnel: Option<String>,
    /// `--access-client-id`.
    pub access_client_id: Option<String>,
    /// `--access-client-secret`.
    pub access_client_secret: Option<String>,
    /// `--tunnel-ca`.
    pub tunnel_ca: Option<PathBuf>,
    /// `--tunnel-handshake-timeout`.
    pub tunnel_handshake_timeout: Option<u64>,
}

/// Parses `args` (the first item is the program name), reads the `--config` file if given,
/// merges flags over file over defaults and validates the result.
///
/// `--help`, `--version` and flag syntax errors come back as [`ConfigError::Cli`]; call
/// `.exit()` on the inner [`clap::Error`].
pub fn load_from_args<I, T>(args: I) -> Result<ProxyConfig, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args)?.into_config()
}

impl Cli {
    /// Reads the `--config` file if given, merges, and validates.
    pub fn into_config(self) -> Result<ProxyConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let config = merge(&self, &file)?;
        config.validate()?;
        Ok(config)
    }

    /// The long `--help` text (what `reference-proxy --help` prints).
    pub fn long_help() -> String {
        Cli::command().render_long_help().to_string()
    }
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config-file text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::ParseFile {
            path: path.to_owned(),
            at: error_location(text, error.span()),
            message: error.message().trim().to_owned(),
        })
    }
}

/// `:line:column` (1-based) of a byte offset, or empty when unknown.
fn error_location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(offset) = span.map(|s| s.start.min(text.len())) else {
        return String::new();
    };
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(":{line}:{column}")
}

/// Flag if given, else file value.
fn pick<T: Clone>(flag: Option<&T>, file: Option<&T>) -> Option<T> {
    flag.or(file).cloned()
}

fn merge(cli: &Cli, file: &FileConfig) -> Result<ProxyConfig, ConfigError> {
    let origin = merge_origin(cli, file)?;
    let client_auth = merge_client_auth(cli, file, &origin)?;
    let max_connections = cli
        .pool_size
        .or(file.pool_size)
        .unwrap_or(DEFAULT_POOL_SIZE);
    Ok(ProxyConfig {
        listen: cli.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
        pool: PoolConfig {
            min_connections: cli.pool_min.or(file.pool_min).unwrap_or(DEFAULT_POOL_MIN),
            max_connections,
            mode: cli.pool_mode.or(file.pool_mode).unwrap_or_default(),
            max_pinned: (cli.max_pinned.or(file.max_pinned))
                .unwrap_or_else(|| default_max_pinned(max_connections)),
        },
        session_features: merge_session_features(cli, file)?,
        timeouts: merge_timeouts(cli, file),
        tls: merge_listener_tls(cli, file)?,
        metrics: cli.metrics.or(file.metrics),
        max_message_size: (cli.max_message_size.or(file.max_message_size))
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
        tunnel: merge_tunnel(cli, file)?,
        origin,
        client_auth,
    })
}

/// Default `--max-pinned`: half the pool, so pinned clients can never take every connection.
pub fn default_max_pinned(pool_size: usize) -> usize {
    (pool_size / 2).max(1)
}

fn merge_session_features(
    cli: &Cli,
    file: &FileConfig,
) -> Result<SessionFeaturePolicies, ConfigError> {
    let mut policies = SessionFeaturePolicies::default();
    for (name, policy) in &file.session_features {
        let feature = SessionFeature::from_config_name(name).ok_or_else(|| {
            ConfigError::InvalidSessionFeature {
                value: name.clone(),
                problem: "unknown feature",
            }
        })?;
        policies.set(feature, *policy);
    }
    for value in &cli.session_feature {
        let (feature, policy) = parse_session_feature(value)?;
        policies.set(feature, policy);
    }
    Ok(policies)
}

fn parse_session_feature(value: &str) -> Result<(SessionFeature, SessionPolicy), ConfigError> {
    let invalid = |problem| ConfigError::InvalidSessionFeature {
        value: value.to_string(),
        problem,
    };
    let (name, policy) = value
        .split_once('=')
        .ok_or_else(|| invalid("expected FEATURE=POLICY"))?;
    let feature =
        SessionFeature::from_config_name(name.trim()).ok_or_else(|| invalid("unknown feature"))?;
    let policy = match policy.trim() {
        "pin" => SessionPolicy::Pin,
        "refuse" => SessionPolicy::Refuse,
        _ => return Err(invalid("unknown policy")),
    };
    Ok((feature, policy))
}

fn merge_tunnel(cli: &Cli, file: &FileConfig) -> Result<Option<TunnelConfig>, ConfigError> {
    let id = pick(
        cli.access_client_id.as_ref(),
        file.access_client_id.as_ref(),
    )
    .filter(|v| !v.is_empty());
    let secret = pick(
        cli.access_client_secret.as_ref(),
        file.access_client_secret.as_ref(),
    )
    .filter(|v| !v.is_empty());
    let ca = pick(cli.tunnel_ca.as_ref(), file.tunnel_ca.as_ref());
    // Without --tunnel the token settings are ignored: CF_ACCESS_CLIENT_* may well be set in
    // the environment for other tools.
    let Some(url) =
        pick(cli.tunnel.as_ref(), file.tunnel.as_ref()).filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    if id.is_some() != secret.is_some() {
        return Err(ConfigError::AccessTokenIncomplete);
    }
    let timeout = cli
        .tunnel_handshake_timeout
        .or(file.tunnel_handshake_timeout)
        .unwrap_or(DEFAULT_TUNNEL_HANDSHAKE_TIMEOUT_SECS);
    if timeout == 0 {
        return Err(ConfigError::ZeroTimeout {
            flag: "--tunnel-handshake-timeout",
            key: "tunnel_handshake_timeout",
        });
    }
    Ok(Some(TunnelConfig {
        url,
        access_client_id: id,
        access_client_secret: secret,
        ca,
        handshake_timeout: Duration::from_secs(timeout),
    }))
}

fn merge_origin(cli: &Cli, file: &FileConfig) -> Result<OriginConfig, ConfigError> {
    let url = pick(cli.origin.as_ref(), file.origin.as_ref())
        .filter(|url| !url.trim().is_empty())
        .ok_or(ConfigError::MissingOrigin)?;
    parse_origin_url(&url)
}

fn merge_timeouts(cli: &Cli, file: &FileConfig) -> Timeouts {
    let secs = |flag: Option<u64>, key: Option<u64>, default: u64| {
        Duration::from_secs(flag.or(key).unwrap_or(default))
    };
    let optional = |d: Duration| (!d.is_zero()).then_some(d);
    Timeouts {
        connect: secs(
            cli.connect_timeout,
            file.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT_SECS,
        ),
        acquire: secs(
            cli.acquire_timeout,
            file.acquire_timeout,
            DEFAULT_ACQUIRE_TIMEOUT_SECS,
        ),
        idle_origin: secs(
            cli.idle_timeout,
            file.idle_timeout,
            DEFAULT_IDLE_TIMEOUT_SECS,
        ),
        statement: optional(secs(
            cli.statement_timeout,
            file.statement_timeout,
            DEFAULT_STATEMENT_TIMEOUT_SECS,
        )),
        client_idle: optional(secs(
            cli.client_idle_timeout,
            file.client_idle_timeout,
            DEFAULT_CLIENT_IDLE_TIMEOUT_SECS,
        )),
        health_check_after: secs(
            cli.health_check_after,
            file.health_check_after,
            DEFAULT_HEALTH_CHECK_AFTER_SECS,
        ),
        shutdown_grace: secs(
            cli.shutdown_grace,
            file.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE_SECS,
        ),
    }
}

fn merge_listener_tls(cli: &Cli, file: &FileConfig) -> Result<Option<ListenerTls>, ConfigError> {
    let cert = pick(cli.tls_cert.as_ref(), file.tls_cert.as_ref());
    let key = pick(cli.tls_key.as_ref(), file.tls_key.as_ref());
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ListenerTls { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::ListenerTlsIncomplete {
            given: "--tls-cert",
        }),
        (None, Some(_)) => Err(ConfigError::ListenerTlsIncomplete { given: "--tls-key" }),
    }
}

fn merge_client_auth(
    cli: &Cli,
    file: &FileConfig,
    origin: &OriginConfig,
) -> Result<ClientAuthConfig, ConfigError> {
    let users = if !cli.client_user.is_empty() {
        parse_client_users(&cli.client_user)?
    } else if !file.client_users.is_empty() {
        file.client_users.clone()
    } else {
        vec![ClientUser::from_origin(origin)]
    };
    Ok(ClientAuthConfig {
        method: cli.auth_method.or(file.auth_method).unwrap_or_default(),
        users,
        allow_cleartext_without_tls: cli.allow_cleartext_without_tls
            || file.allow_cleartext_without_tls.unwrap_or(false),
    })
}

fn parse_client_users(values: &[String]) -> Result<Vec<ClientUser>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| parse_client_user(value, index + 1))
        .collect()
}

/// Parses one `--client-user NAME:PASSWORD`, split at the first `:`.
fn parse_client_user(value: &str, position: usize) -> Result<ClientUser, ConfigError> {
    let invalid = |problem| ConfigError::InvalidClientUser { position, problem };
    let (name, password) = value
        .split_once(':')
        .ok_or(invalid("there is no `:` between NAME and PASSWORD"))?;
    if name.is_empty() {
        return Err(invalid("NAME (before the first `:`) is empty"));
    }
    Ok(ClientUser {
        name: name.to_owned(),
        password: password.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Validation and warnings.
// ---------------------------------------------------------------------------------------------

impl ProxyConfig {
    /// Checks the invariants the rest of the proxy relies on (see [`ConfigError`]).
    /// [`load_from_args`] already calls it; call it again after editing a config by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.origin.validate()?;
        self.pool.validate()?;
        self.timeouts.validate()?;
        self.client_auth.validate(self.tls.is_some())?;
        validate_max_message_size(self.max_message_size)?;
        match self.metrics {
            Some(metrics) if metrics == self.listen && metrics.port() != 0 => {
                Err(ConfigError::MetricsOnListenAddress(metrics))
            }
            _ => Ok(()),
        }
    }

    /// Risky but working settings, to log at startup.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let auth = &self.client_auth;
        let mut warnings = Vec::new();
        match auth.method {
            ClientAuthMethod::Trust => warnings.push(ConfigWarning::TrustAuthentication),
            ClientAuthMethod::Cleartext if auth.allow_cleartext_without_tls => {
                warnings.push(ConfigWarning::CleartextWithoutTls);
            }
            ClientAuthMethod::Cleartext => {
                warnings.push(ConfigWarning::CleartextRefusedWithoutTls);
            }
            ClientAuthMethod::ScramSha256 | ClientAuthMethod::Md5 => {}
        }
        if auth.allow_cleartext_without_tls && auth.method != ClientAuthMethod::Cleartext {
            warnings.push(ConfigWarning::AllowCleartextUnused);
        }
        warnings
    }

    /// Logs every [`warning`](Self::warnings) with `tracing::warn!`.
    pub fn log_warnings(&self) {
        for warning in self.warnings() {
            tracing::warn!("{warning}");
        }
    }
}

impl OriginConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.host.is_empty() {
            return Err(ConfigError::OriginFieldEmpty("host"));
        }
        if self.user.is_empty() {
            return Err(ConfigError::OriginFieldEmpty("user"));
        }
        match (&self.sslcert, &self.sslkey) {
            (Some(_), None) => Err(ConfigError::OriginClientCertIncomplete {
                given: "sslcert",
                missing: "sslkey",
            }),
            (None, Some(_)) => Err(ConfigError::OriginClientCertIncomplete {
                given: "sslkey",
                missing: "sslcert",
            }),
            _ => Ok(()),
        }
    }

    /// Whether the origin's certificate chain must be verified: `verify-ca`, `verify-full`,
    /// and (as in libpq) `require` when `sslrootcert` is given.
    pub fn verifies_certificate(&self) -> bool {
        self.sslmode.verifies_certificate()
            || (self.sslmode == SslMode::Require && self.sslrootcert.is_some())
    }

    /// The origin as a URL without the password or file paths, for logs.
    pub fn redacted_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}@{host}:{}/{}?sslmode={}",
            utf8_percent_encode(&self.user, URL_COMPONENT),
            self.port,
            utf8_percent_encode(&self.database, URL_COMPONENT),
            self.sslmode,
        )
    }
}

impl PoolConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let size = self.max_connections;
        if !(1..=MAX_POOL_SIZE).contains(&size) {
            return Err(ConfigError::PoolSize(size));
        }
        if self.min_connections > size {
            return Err(ConfigError::PoolMinAboveSize {
                min: self.min_connections,
                size,
            });
        }
        if self.max_pinned > size {
            return Err(ConfigError::MaxPinnedAboveSize {
                pinned: self.max_pinned,
                size,
            });
        }
        Ok(())
    }
}

impl Timeouts {
    /// Every timeout with its flag, file key, and whether zero is meaningful.
    fn settings(&self) -> [(&'static str, &'static str, Duration, bool); 7] {
        let zero = Duration::ZERO;
        [
            ("--connect-timeout", "connect_timeout", self.connect, false),
            ("--acquire-timeout", "acquire_timeout", self.acquire, false),
            ("--idle-timeout", "idle_timeout", self.idle_origin, false),
            (
                "--statement-timeout",
                "statement_timeout",
                self.statement.unwrap_or(zero),
                true,
            ),
            (
                "--client-idle-timeout",
                "client_idle_timeout",
                self.client_idle.unwrap_or(zero),
                true,
            ),
            (
                "--health-check-after",
                "health_check_after",
                self.health_check_after,
                true,
            ),
            (
                "--shutdown-grace",
                "shutdown_grace",
                self.shutdown_grace,
                true,
            ),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (flag, key, duration, zero_allowed) in self.settings() {
            if duration.is_zero() && !zero_allowed {
                return Err(ConfigError::ZeroTimeout { flag, key });
            }
            if duration > Duration::from_secs(MAX_TIMEOUT_SECS) {
                return Err(ConfigError::TimeoutTooLong { flag, key });
            }
        }
        Ok(())
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_connections: DEFAULT_POOL_MIN,
            max_connections: DEFAULT_POOL_SIZE,
            mode: PoolMode::default(),
            max_pinned: default_max_pinned(DEFAULT_POOL_SIZE),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            acquire: Duration::from_secs(DEFAULT_ACQUIRE_TIMEOUT_SECS),
            idle_origin: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            statement: Some(Duration::from_secs(DEFAULT_STATEMENT_TIMEOUT_SECS)),
            client_idle: Some(Duration::from_secs(DEFAULT_CLIENT_IDLE_TIMEOUT_SECS)),
            health_check_after: Duration::from_secs(DEFAULT_HEALTH_CHECK_AFTER_SECS),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
        }
    }
}

impl ClientAuthConfig {
    fn validate(&self, listener_tls: bool) -> Result<(), ConfigError> {
        for (index, user) in self.users.iter().enumerate() {
            self.validate_user(user)?;
            if self.users[..index].iter().any(|u| u.name == user.name) {
                return Err(ConfigError::DuplicateClientUser(user.name.clone()));
            }
        }
        let cleartext = self.method == ClientAuthMethod::Cleartext;
        if cleartext && !listener_tls && !self.allow_cleartext_without_tls {
            return Err(ConfigError::CleartextWithoutTls);
        }
        Ok(())
    }

    fn validate_user(&self, user: &ClientUser) -> Result<(), ConfigError> {
        if user.name.is_empty() {
            return Err(ConfigError::EmptyClientUserName);
        }
        if user.password.is_empty() && self.method != ClientAuthMethod::Trust {
            return Err(ConfigError::EmptyClientPassword {
                name: user.name.clone(),
                method: self.method,
            });
        }
        Ok(())
    }
}

impl ClientUser {
    /// The default client credential: the origin's user and password (empty if none).
    pub fn from_origin(origin: &OriginConfig) -> Self {
        ClientUser {
            name: origin.user.clone(),
            password: origin.password.clone().unwrap_or_default(),
        }
    }
}

fn validate_max_message_size(size: usize) -> Result<(), ConfigError> {
    if (MIN_MAX_MESSAGE_SIZE..=MAX_MAX_MESSAGE_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(ConfigError::MaxMessageSize(size))
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigWarning::TrustAuthentication => {
                "--auth-method trust: any client that can reach the listen address logs in \
                 without a password"
            }
            ConfigWarning::CleartextRefusedWithoutTls => {
                "--auth-method password: clients send passwords in cleartext; those connecting \
                 without TLS will be refused (see --allow-cleartext-without-tls)"
            }
            ConfigWarning::CleartextWithoutTls => {
                "--auth-method password with --allow-cleartext-without-tls: client passwords \
                 may cross the network unencrypted"
            }
            ConfigWarning::AllowCleartextUnused => {
                "--allow-cleartext-without-tls has no effect unless --auth-method password"
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// sslmode and auth method names.
// ---------------------------------------------------------------------------------------------

impl SslMode {
    /// Every mode, weakest first.
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The libpq spelling (`verify-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a plaintext connection is unacceptable.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// Whether the first attempt is a TLS one (`prefer` and stronger).
    pub fn tries_tls_first(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Allow)
    }

    /// Whether the chain is always verified (`verify-ca`, `verify-full`); see also
    /// [`OriginConfig::verifies_certificate`].
    pub fn verifies_certificate(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// Whether the certificate must name the host (`verify-full`).
    pub fn verifies_hostname(self) -> bool {
        self == SslMode::VerifyFull
    }
}

impl FromStr for SslMode {
    type Err = OriginUrlError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == value)
            .ok_or_else(|| OriginUrlError::InvalidSslMode(value.to_owned()))
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientAuthMethod {
    /// The `--auth-method` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ScramSha256 => "scram-sha-256",
            ClientAuthMethod::Md5 => "md5",
            ClientAuthMethod::Cleartext => "password",
            ClientAuthMethod::Trust => "trust",
        }
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Origin URL parsing.
// ---------------------------------------------------------------------------------------------

/// Parses a libpq URI, `postgres[ql]://USER[:PASSWORD]@HOST[:PORT][/DATABASE][?PARAMS]`.
///
/// The authority ends at the first `/` or `?` and the userinfo at the *last* `@` before it,
/// so an unencoded `@` in a password still works, but `/`, `?` and `#` in a password must be
/// percent-encoded. User, password, host, database and query values are percent-decoded.
pub fn parse_origin_url(url: &str) -> Result<OriginConfig, ConfigError> {
    Ok(parse_origin(url.trim())?)
}

fn parse_origin(url: &str) -> Result<OriginConfig, OriginUrlError> {
    let rest = strip_scheme(url)?;
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (host, port) = parse_host_port(hostport)?;
    let (user, password) = parse_userinfo(userinfo)?;
    let database = Some(decode(path, "database")?)
        .filter(|db| !db.is_empty())
        .unwrap_or_else(|| user.clone());
    let mut origin = OriginConfig {
        host,
        port,
        user,
        password,
        database,
        sslmode: SslMode::default(),
        sslrootcert: None,
        sslcert: None,
        sslkey: None,
        application_name: None,
        options: None,
    };
    apply_query(&mut origin, query.unwrap_or(""))?;
    Ok(origin)
}

fn strip_scheme(url: &str) -> Result<&str, OriginUrlError> {
    let (scheme, rest) = url.split_once("://").ok_or(OriginUrlError::NotAUrl)?;
    if ["postgres", "postgresql"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Ok(rest);
    }
    // Echo the scheme only when it looks like one, so a misplaced password is never echoed.
    let plausible = scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if plausible && !scheme.is_empty() {
        Err(OriginUrlError::UnsupportedScheme(scheme.to_owned()))
    } else {
        Err(OriginUrlError::NotAUrl)
    }
}

fn parse_userinfo(userinfo: Option<&str>) -> Result<(String, Option<String>), OriginUrlError> {
    let userinfo = userinfo.ok_or(OriginUrlError::MissingUser)?;
    let (raw_user, raw_password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let user = decode(raw_user, "user")?;
    if user.is_empty() {
        return Err(OriginUrlError::MissingUser);
    }
    let password = match raw_password {
        Some(raw) => Some(decode(raw, "password")?).filter(|p| !p.is_empty()),
        None => None,
    };
    Ok((user, password))
}

fn parse_host_port(hostport: &str) -> Result<(String, u16), OriginUrlError> {
    if hostport.contains(',') {
        return Err(OriginUrlError::MultipleHosts(hostport.split(',').count()));
    }
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return Err(OriginUrlError::MissingHost);
    }
    if host.starts_with('/') {
        return Err(OriginUrlError::UnixSocket(host));
    }
    let port = match port {
        Some(port) => parse_port(port)?,
        None => DEFAULT_ORIGIN_PORT,
    };
    Ok((host, port))
}

/// Splits `host[:port]` or `[ipv6][:port]`; the host comes back decoded and unbracketed.
fn split_host_port(hostport: &str) -> Result<(String, Option<&str>), OriginUrlError> {
    if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or(OriginUrlError::UnclosedIpv6)?;
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| OriginUrlError::InvalidIpv6(inner.to_owned()))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(OriginUrlError::AfterIpv6)?),
        };
        return Ok((inner.to_owned(), port));
    }
    if hostport.matches(':').count() > 1 {
        return Err(OriginUrlError::UnbracketedIpv6);
    }
    let (host, port) = match hostport.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    };
    Ok((decode(host, "host")?, port))
}

fn parse_port(port: &str) -> Result<u16, OriginUrlError> {
    if port.is_empty() {
        return Err(OriginUrlError::EmptyPort);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OriginUrlError::PortNotNumeric);
    }
    port.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| OriginUrlError::PortOutOfRange(port.to_owned()))
}

fn apply_query(origin: &mut OriginConfig, query: &str) -> Result<(), OriginUrlError> {
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, raw_value) = split_parameter(pair)?;
        if seen.contains(&key) {
            return Err(OriginUrlError::DuplicateParameter(key));
        }
        set_parameter(origin, &key, raw_value)?;
        seen.push(key);
    }
    apply_system_roots(origin, seen.iter().any(|key| key == "sslmode"))
}

fn split_parameter(pair: &str) -> Result<(String, &str), OriginUrlError> {
    match pair.split_once('=') {
        Some((key, value)) => Ok((decode(key, "query parameter name")?, value)),
        None => Err(OriginUrlError::ParameterWithoutValue(decode(
            pair,
            "query parameter name",
        )?)),
    }
}

fn set_parameter(origin: &mut OriginConfig, key: &str, raw: &str) -> Result<(), OriginUrlError> {
    if !ORIGIN_PARAMETERS.split(", ").any(|known| known == key) {
        return Err(OriginUrlError::UnknownParameter(key.to_owned()));
    }
    let value = decode(raw, "query parameter value")?;
    if value.is_empty() {
        return Err(OriginUrlError::EmptyParameter(key.to_owned()));
    }
    match key {
        "sslmode" => origin.sslmode = value.parse()?,
        "sslrootcert" => origin.sslrootcert = Some(PathBuf::from(value)),
        "sslcert" => origin.sslcert = Some(PathBuf::from(value)),
        "sslkey" => origin.sslkey = Some(PathBuf::from(value)),
        "application_name" => origin.application_name = Some(value),
        _ => origin.options = Some(value),
    }
    Ok(())
}

/// `sslrootcert=system`: the system roots (stored as `None`), `verify-full` by default and
/// nothing weaker, as in libpq 16.
fn apply_system_roots(
    origin: &mut OriginConfig,
    sslmode_given: bool,
) -> Result<(), OriginUrlError> {
    if origin.sslrootcert.as_deref() != Some(Path::new(SYSTEM_ROOTS)) {
        return Ok(());
    }
    origin.sslrootcert = None;
    if !sslmode_given {
        origin.sslmode = SslMode::VerifyFull;
    }
    match origin.sslmode {
        SslMode::VerifyFull => Ok(()),
        weaker => Err(OriginUrlError::WeakSslModeWithSystemRoots(weaker)),
    }
}

fn decode(raw: &str, part: &'static str) -> Result<String, OriginUrlError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| OriginUrlError::NotUtf8(part))
}

// ---------------------------------------------------------------------------------------------
// Debug without secrets.
// ---------------------------------------------------------------------------------------------

/// Prints `<redacted>` in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Debug for OriginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("application_name", &self.application_name)
            .field("options", &self.options)
            .finish()
    }
}

/// The redacted URL (no password), as in [`OriginConfig::redacted_url`].
impl fmt::Display for OriginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_url())
    }
}

impl fmt::Debug for ClientUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientUser")
            .field("name", &self.name)
            .field("password", &Redacted)
            .finish()
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("listen", &self.listen)
            .field("origin", &self.origin)
            .field("pool", &self.pool)
            .field("timeouts", &self.timeouts)
            .field("client_auth", &self.client_auth)
            .field("tls", &self.tls)
            .field("metrics", &self.metrics)
            .field("max_message_size", &self.max_message_size)
            .field("tunnel", &self.tunnel)
            .field("session_features", &self.session_features)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const URL: &str = "postgres://app:pw@db.example:5433/appdb";

    /// Tests that rely on `ORIGIN_URL` being unset skip themselves when it is set, since the
    /// environment outranks the file (and setting it from a test would need `unsafe`).
    fn origin_env_set() -> bool {
        std::env::var_os("ORIGIN_URL").is_some()
    }

    fn load(args: &[&str]) -> Result<ProxyConfig, ConfigError> {
        load_from_args(std::iter::once("reference-proxy").chain(args.iter().copied()))
    }

    fn origin_error(url: &str) -> OriginUrlError {
        match parse_origin_url(url) {
            Err(ConfigError::OriginUrl(error)) => error,
            other => panic!("{url}: expected an origin URL error, got {other:?}"),
        }
    }

    fn toml_file(text: &str) -> Result<tempfile::NamedTempFile, std::io::Error> {
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(text.as_bytes())?;
        file.flush()?;
        Ok(file)
    }

    fn path_str(file: &tempfile::NamedTempFile) -> Result<&str, Box<dyn std::error::Error>> {
        file.path()
            .to_str()
            .ok_or_else(|| "temp path is not UTF-8".into())
    }

    #[test]
    fn url_with_every_part() -> TestResult {
        let origin = parse_origin_url(
            "postgresql://app:pw@db.example:6543/app%20db?sslmode=verify-full&sslrootcert=ca.pem\
             &sslcert=c.pem&sslkey=k.pem&application_name=my%20app&options=-c%20search_path%3Dx",
        )?;
        assert_eq!(origin.host, "db.example");
        assert_eq!(origin.port, 6543);
        assert_eq!(origin.user, "app");
        assert_eq!(origin.password.as_deref(), Some("pw"));
        assert_eq!(origin.database, "app db");
        assert_eq!(origin.sslmode, SslMode::VerifyFull);
        assert_eq!(origin.sslrootcert, Some(PathBuf::from("ca.pem")));
        assert_eq!(origin.sslcert, Some(PathBuf::from("c.pem")));
        assert_eq!(origin.sslkey, Some(PathBuf::from("k.pem")));
        assert_eq!(origin.application_name.as_deref(), Some("my app"));
        assert_eq!(origin.options.as_deref(), Some("-c search_path=x"));
        Ok(())
    }

    #[test]
    fn every_sslmode() -> TestResult {
        for (name, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Allow),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let origin = parse_origin_url(&format!("{URL}?sslmode={name}"))?;
            assert_eq!(origin.sslmode, mode);
            assert_eq!(mode.to_string(), name);
        }
        assert!(SslMode::VerifyFull.verifies_hostname());
        assert!(!SslMode::Prefer.requires_tls() && SslMode::Prefer.tries_tls_first());
        assert!(!SslMode::Allow.tries_tls_first());
        Ok(())
    }

    #[test]
    fn require_with_root_cert_verifies_like_libpq() -> TestResult {
        assert!(!parse_origin_url(&format!("{URL}?sslmode=require"))?.verifies_certificate());
        let with_root = parse_origin_url(&format!("{URL}?sslmode=require&sslrootcert=ca.pem"))?;
        assert!(with_root.verifies_certificate());
        Ok(())
    }

    #[test]
    fn sslrootcert_system_means_system_roots_and_verify_full() -> TestResult {
        let origin = parse_origin_url(&format!("{URL}?sslrootcert=system"))?;
        assert_eq!(origin.sslrootcert, None);
        assert_eq!(origin.sslmode, SslMode::VerifyFull);
        let weak = origin_error(&format!("{URL}?sslmode=require&sslrootcert=system"));
        assert_eq!(
            weak,
            OriginUrlError::WeakSslModeWithSystemRoots(SslMode::Require)
        );
        assert!(weak.to_string().contains("verify-full"));
        Ok(())
    }

    #[test]
    fn percent_encoded_credentials() -> TestResult {
        let origin = parse_origin_url("postgres://us%40er:p%40ss%3Aw%2Frd%25@h/d%2Fb")?;
        assert_eq!(origin.user, "us@er");
        assert_eq!(origin.password.as_deref(), Some("p@ss:w/rd%"));
        assert_eq!(origin.database, "d/b");
        // An unencoded `@` in the password still works: the userinfo ends at the last `@`.
        let raw_at = parse_origin_url("postgres://u:p@ss@h/db")?;
        assert_eq!(raw_at.password.as_deref(), Some("p@ss"));
        assert_eq!(raw_at.host, "h");
        // And a `:` in the password splits only at the first one.
        let colon = parse_origin_url("postgres://u:a:b@h")?;
        assert_eq!(colon.password.as_deref(), Some("a:b"));
        Ok(())
    }

    #[test]
    fn ipv6_hosts() -> TestResult {
        let with_port = parse_origin_url("postgres://u:p@[::1]:6000/db")?;
        assert_eq!((with_port.host.as_str(), with_port.port), ("::1", 6000));
        let without = parse_origin_url("postgres://u@[2001:db8::5]/db")?;
        assert_eq!((without.host.as_str(), without.port), ("2001:db8::5", 5432));
        assert_eq!(
            without.redacted_url(),
            "postgres://u@[2001:db8::5]:5432/db?sslmode=prefer"
        );
        Ok(())
    }

    #[test]
    fn url_defaults() -> TestResult {
        for url in [
            "postgres://alice@db",
            "postgres://alice@db/",
            "postgres://alice:@db/?",
        ] {
            let origin = parse_origin_url(url)?;
            assert_eq!(origin.port, DEFAULT_ORIGIN_PORT, "{url}");
            assert_eq!(origin.database, "alice", "{url}");
            assert_eq!(origin.password, None, "{url}");
            assert_eq!(origin.sslmode, SslMode::Prefer, "{url}");
            assert_eq!(origin.application_name, None, "{url}");
        }
        Ok(())
    }

    #[test]
    fn url_rejections_name_the_problem() {
        let cases: [(&str, OriginUrlError, &str); 20] = [
            (
                "mysql://u@h/db",
                OriginUrlError::UnsupportedScheme("mysql".into()),
                "postgres://",
            ),
            ("u:p@h/db", OriginUrlError::NotAUrl, "postgres://USER"),
            ("postgres://u:p@/db", OriginUrlError::MissingHost, "no host"),
            (
                "postgres://u:p@:5432/db",
                OriginUrlError::MissingHost,
                "no host",
            ),
            (
                "postgres://h:5432/db",
                OriginUrlError::MissingUser,
                "no user",
            ),
            ("postgres://:p@h/db", OriginUrlError::MissingUser, "no user"),
            (
                "postgres://u@h:70000/db",
                OriginUrlError::PortOutOfRange("70000".into()),
                "70000",
            ),
            (
                "postgres://u@h:0/db",
                OriginUrlError::PortOutOfRange("0".into()),
                "1 to 65535",
            ),
            (
                "postgres://u@h:x1/db",
                OriginUrlError::PortNotNumeric,
                "percent-encode",
            ),
            ("postgres://u@h:/db", OriginUrlError::EmptyPort, "empty"),
            (
                "postgres://u@h1,h2/db",
                OriginUrlError::MultipleHosts(2),
                "unsupported",
            ),
            (
                "postgres://u@h1:1,h2:2/db",
                OriginUrlError::MultipleHosts(2),
                "exactly one",
            ),
            (
                "postgres://u@h/db?sslmode=on",
                OriginUrlError::InvalidSslMode("on".into()),
                "verify-full",
            ),
            (
                "postgres://u@h/db?sslmde=require",
                OriginUrlError::UnknownParameter("sslmde".into()),
                "sslmde",
            ),
            (
                "postgres://u@h/db?sslmode",
                OriginUrlError::ParameterWithoutValue("sslmode".into()),
                "=VALUE",
            ),
            (
                "postgres://u@h/db?sslmode=",
                OriginUrlError::EmptyParameter("sslmode".into()),
                "empty",
            ),
            (
                "postgres://u@h/db?sslmode=require&sslmode=disable",
                OriginUrlError::DuplicateParameter("sslmode".into()),
                "twice",
            ),
            (
                "postgres://u@::1/db",
                OriginUrlError::UnbracketedIpv6,
                "brackets",
            ),
            ("postgres://u@[::1/db", OriginUrlError::UnclosedIpv6, "`]`"),
            (
                "postgres://u@%2Ftmp/db",
                OriginUrlError::UnixSocket("/tmp".into()),
                "TCP",
            ),
        ];
        for (url, expected, fragment) in cases {
            let error = origin_error(url);
            assert_eq!(error, expected, "{url}");
            let message = ConfigError::OriginUrl(error).to_string();
            assert!(message.contains(fragment), "{url}: {message}");
            assert!(message.contains("--origin"), "{url}: {message}");
        }
    }

    #[test]
    fn unknown_parameter_message_lists_the_supported_ones() {
        let message = origin_error(&format!("{URL}?connect_timeout=3")).to_string();
        assert!(message.contains("`connect_timeout`"), "{message}");
        assert!(
            message.contains("sslrootcert") && message.contains("options"),
            "{message}"
        );
    }

    #[test]
    fn url_errors_never_echo_the_password() {
        for url in [
            "postgres://u:hunter2/x@h/db",
            "postgres://u:hunter2?@h/db",
            "postgres://u:hunter2#@h:p/db",
            "postgres://u:hunter2@h/db?password=hunter2",
            "postgres://u:hunter2@h/db?sslmode=hunter2x",
        ] {
            if let Err(error) = parse_origin_url(url) {
                let shown = format!("{error} {error:?}");
                let leaked = shown.contains("hunter2") && !url.contains("sslmode=hunter2x");
                assert!(!leaked, "{url}: {shown}");
            }
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() -> TestResult {
        let config = load(&["--origin", URL])?;
        assert_eq!(config.listen, "127.0.0.1:6432".parse()?);
        assert_eq!(
            config.pool,
            PoolConfig {
                min_connections: 0,
                max_connections: 8,
                mode: PoolMode::Transaction,
                max_pinned: 4,
            }
        );
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.timeouts.connect, Duration::from_secs(15));
        assert_eq!(config.timeouts.acquire, Duration::from_secs(10));
        assert_eq!(config.timeouts.idle_origin, Duration::from_secs(300));
        assert_eq!(config.timeouts.statement, Some(Duration::from_secs(60)));
        assert_eq!(config.timeouts.client_idle, Some(Duration::from_secs(600)));
        assert_eq!(config.timeouts.health_check_after, Duration::from_secs(5));
        assert_eq!(config.timeouts.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.client_auth.method, ClientAuthMethod::ScramSha256);
        assert!(!config.client_auth.allow_cleartext_without_tls);
        assert_eq!(config.tls, None);
        assert_eq!(config.metrics, None);
        assert_eq!(config.max_message_size, 1_073_741_823);
        assert!(config.warnings().is_empty());
        Ok(())
    }

    #[test]
    fn every_flag_is_applied() -> TestResult {
        let config = load(&[
            "--origin",
            URL,
            "--listen",
            "0.0.0.0:7000",
            "--pool-size",
            "20",
            "--pool-min",
            "3",
            "--connect-timeout",
            "4",
            "--acquire-timeout",
            "5",
            "--idle-timeout",
            "6",
            "--statement-timeout",
            "0",
            "--client-idle-timeout",
            "0",
            "--health-check-after",
            "0",
            "--shutdown-grace",
            "9",
            "--auth-method",
            "password",
            "--client-user",
            "a:b",
            "--allow-cleartext-without-tls",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--metrics",
            "127.0.0.1:9187",
            "--max-message-size",
            "65536",
            "--pool-mode",
            "session",
            "--max-pinned",
            "7",
            "--session-feature",
            "listen=pin",
            "--session-feature",
            "hold_cursors=pin",
        ])?;
        assert_eq!(config.listen, "0.0.0.0:7000".parse()?);
        assert_eq!(
            config.pool,
            PoolConfig {
                min_connections: 3,
                max_connections: 20,
                mode: PoolMode::Session,
                max_pinned: 7,
            }
        );
        let pinned: Vec<_> = config
            .session_features
            .iter()
            .filter(|(_, policy)| *policy == SessionPolicy::Pin)
            .map(|(feature, _)| feature)
            .collect();
        assert_eq!(
            pinned,
            [SessionFeature::Listen, SessionFeature::HoldCursors]
        );
        let t = config.timeouts;
        assert_eq!(
            (t.connect, t.acquire, t.idle_origin),
            (
                Duration::from_secs(4),
                Duration::from_secs(5),
                Duration::from_secs(6)
            )
        );
        assert_eq!((t.statement, t.client_idle), (None, None));
        assert_eq!(t.health_check_after, Duration::ZERO);
        assert_eq!(t.shutdown_grace, Duration::from_secs(9));
        assert_eq!(config.client_auth.method, ClientAuthMethod::Cleartext);
        assert!(config.client_auth.allow_cleartext_without_tls);
        let tls = ListenerTls {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        assert_eq!(config.tls, Some(tls));
        assert_eq!(config.metrics, Some("127.0.0.1:9187".parse()?));
        assert_eq!(config.max_message_size, 65536);
        assert_eq!(config.warnings(), [ConfigWarning::CleartextWithoutTls]);
        Ok(())
    }

    #[test]
    fn flags_win_over_file_and_file_wins_over_defaults() -> TestResult {
        let file = toml_file(
            r#"
            listen = "127.0.0.1:7001"
            origin = "postgres://file:filepw@file-host/filedb"
            pool_size = 30
            pool_min = 2
            statement_timeout = 5
            auth_method = "md5"
            metrics = "127.0.0.1:9100"

            [[client_users]]
            name = "from-file"
            password = "file-secret"
            "#,
        )?;
        let config = load(&[
            "--config",
            path_str(&file)?,
            "--origin",
            URL,
            "--pool-size",
            "12",
            "--auth-method",
            "scram-sha-256",
            "--client-user",
            "cli:cli-secret",
        ])?;
        // Flags win.
        assert_eq!(config.origin.host, "db.example");
        assert_eq!(config.pool.max_connections, 12);
        assert_eq!(config.client_auth.method, ClientAuthMethod::ScramSha256);
        let cli_user = ClientUser {
            name: "cli".into(),
            password: "cli-secret".into(),
        };
        assert_eq!(config.client_auth.users, [cli_user]);
        // The file wins where no flag is given.
        assert_eq!(config.listen, "127.0.0.1:7001".parse()?);
        assert_eq!(config.pool.min_connections, 2);
        assert_eq!(config.timeouts.statement, Some(Duration::from_secs(5)));
        assert_eq!(config.metrics, Some("127.0.0.1:9100".parse()?));
        // Defaults fill the rest.
        assert_eq!(config.timeouts.connect, Duration::from_secs(15));
        assert_eq!(config.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
        Ok(())
    }

    #[test]
    fn file_alone_configures_origin_and_users() -> TestResult {
        if origin_env_set() {
            return Ok(());
        }
        let file = toml_file(
            "origin = \"postgres://file:filepw@file-host/filedb\"\n\
             [[client_users]]\nname = \"alice\"\npassword = \"a:1\"\n",
        )?;
        let config = load(&["--config", path_str(&file)?])?;
        assert_eq!(config.origin.host, "file-host");
        let alice = ClientUser {
            name: "alice".into(),
            password: "a:1".into(),
        };
        assert_eq!(config.client_auth.users, [alice]);
        Ok(())
    }

    #[test]
    fn example_config_file_parses() -> TestResult {
        let text = include_str!("../../testdata/config/reference-proxy.example.toml");
        let file = FileConfig::parse(text, Path::new("example.toml"))?;
        assert_eq!(file.pool_size, Some(16));
        assert_eq!(file.client_users.len(), 2);
        assert_eq!(file.session_features.len(), 6);
        let origin = parse_origin_url(file.origin.as_deref().unwrap_or(""))?;
        assert_eq!(origin.password.as_deref(), Some("s3cr@t:pw"));
        assert_eq!(origin.sslmode, SslMode::VerifyFull);
        Ok(())
    }

    #[test]
    fn unknown_file_key_is_named_with_its_line() -> TestResult {
        let file = toml_file("pool_size = 4\npool_sise = 5\n")?;
        let error = load(&["--origin", URL, "--config", path_str(&file)?]).unwrap_err();
        assert!(matches!(error, ConfigError::ParseFile { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("`pool_sise`"), "{message}");
        assert!(message.contains(":2:1:"), "{message}");
        Ok(())
    }

    #[test]
    fn file_errors_do_not_quote_the_offending_line() -> TestResult {
        let file = toml_file("origin = \"postgres://u:hunter2@h/db\" trailing\n")?;
        let error = load(&["--origin", URL, "--config", path_str(&file)?]).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
        Ok(())
    }

    #[test]
    fn missing_config_file_names_the_flag() {
        let error = load(&["--origin", URL, "--config", "/nonexistent/proxy.toml"]).unwrap_err();
        assert!(matches!(error, ConfigError::ReadFile { .. }));
        assert!(
            error
                .to_string()
                .contains("--config file /nonexistent/proxy.toml")
        );
    }

    #[test]
    fn missing_origin_is_an_error() {
        if origin_env_set() {
            return;
        }
        let error = load(&[]).unwrap_err();
        assert!(matches!(error, ConfigError::MissingOrigin));
        assert!(error.to_string().contains("ORIGIN_URL"));
    }

    #[test]
    fn origin_flag_reads_origin_url_env() {
        let command = Cli::command();
        let origin = command.get_arguments().find(|arg| arg.get_id() == "origin");
        let env = origin.and_then(|arg| arg.get_env());
        assert_eq!(env, Some(std::ffi::OsStr::new("ORIGIN_URL")));
    }

    #[test]
    fn client_users_default_to_origin_credentials() -> TestResult {
        let config = load(&["--origin", URL])?;
        let origin_user = ClientUser {
            name: "app".into(),
            password: "pw".into(),
        };
        assert_eq!(config.client_auth.users, [origin_user]);
        Ok(())
    }

    #[test]
    fn client_user_flags_split_at_the_first_colon() -> TestResult {
        let config = load(&[
            "--origin",
            URL,
            "--client-user",
            "a:x:y",
            "--client-user",
            "b:",
        ])
        .map(|c| c.client_auth.users);
        // `b:` has an empty password, which SCRAM cannot use.
        let error = config.unwrap_err();
        assert!(matches!(&error, ConfigError::EmptyClientPassword { name, .. } if name == "b"));
        assert!(
            error.to_string().contains("--client-user b:PASSWORD"),
            "{error}"
        );
        let config = load(&[
            "--origin",
            URL,
            "--client-user",
            "a:x:y",
            "--client-user",
            "b:z",
        ])?;
        let users: Vec<_> = config
            .client_auth
            .users
            .iter()
            .map(|u| (&*u.name, &*u.password))
            .collect();
        assert_eq!(users, [("a", "x:y"), ("b", "z")]);
        Ok(())
    }

    #[test]
    fn malformed_client_users_are_rejected_without_echo() {
        for (value, problem) in [("secretonly", "no `:`"), (":secret", "NAME")] {
            let error = load(&[
                "--origin",
                URL,
                "--client-user",
                "ok:1",
                "--client-user",
                value,
            ])
            .unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("--client-user #2") && message.contains(problem),
                "{message}"
            );
            assert!(!message.contains("secret"), "{message}");
        }
        let error = load(&[
            "--origin",
            URL,
            "--client-user",
            "a:1",
            "--client-user",
            "a:2",
        ])
        .unwrap_err();
        assert!(matches!(error, ConfigError::DuplicateClientUser(name) if name == "a"));
    }

    #[test]
    fn passwordless_origin_needs_client_users_unless_trust() -> TestResult {
        let no_password = "postgres://app@h/db";
        let error = load(&["--origin", no_password]).unwrap_err();
        assert!(error.to_string().contains("origin"), "{error}");
        let trust = load(&["--origin", no_password, "--auth-method", "trust"])?;
        assert_eq!(trust.warnings(), [ConfigWarning::TrustAuthentication]);
        assert_eq!(trust.client_auth.users[0].name, "app");
        Ok(())
    }

    #[test]
    fn validation_errors_name_the_flag() {
        let cases: [(&[&str], &str); 12] = [
            (&["--pool-size", "0"], "--pool-size"),
            (&["--pool-size", "4", "--pool-min", "5"], "--pool-min (5"),
            (&["--connect-timeout", "0"], "--connect-timeout"),
            (&["--acquire-timeout", "0"], "--acquire-timeout"),
            (&["--idle-timeout", "0"], "`idle_timeout`"),
            (&["--shutdown-grace", "99999999999"], "--shutdown-grace"),
            (&["--tls-cert", "c.pem"], "only --tls-cert"),
            (&["--tls-key", "k.pem"], "only --tls-key"),
            (
                &["--auth-method", "password"],
                "--allow-cleartext-without-tls",
            ),
            (&["--max-message-size", "100"], "--max-message-size"),
            (&["--max-message-size", "4294967296"], "--max-message-size"),
            (&["--metrics", "127.0.0.1:6432"], "--metrics"),
        ];
        for (args, fragment) in cases {
            let mut all = vec!["--origin", URL];
            all.extend_from_slice(args);
            let message = load(&all).unwrap_err().to_string();
            assert!(message.contains(fragment), "{args:?}: {message}");
        }
    }

    #[test]
    fn origin_client_certificate_needs_both_halves() {
        let error = load(&["--origin", &format!("{URL}?sslcert=c.pem")]).unwrap_err();
        assert!(error.to_string().contains("sslkey"), "{error}");
        let error = load(&["--origin", &format!("{URL}?sslkey=k.pem")]).unwrap_err();
        assert!(error.to_string().contains("sslcert"), "{error}");
    }

    #[test]
    fn cleartext_with_tls_is_a_warning_not_an_error() -> TestResult {
        let config = load(&[
            "--origin",
            URL,
            "--auth-method",
            "password",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ])?;
        assert_eq!(
            config.warnings(),
            [ConfigWarning::CleartextRefusedWithoutTls]
        );
        let unused = load(&["--origin", URL, "--allow-cleartext-without-tls"])?;
        assert_eq!(unused.warnings(), [ConfigWarning::AllowCleartextUnused]);
        Ok(())
    }

    #[test]
    fn debug_never_shows_passwords() -> TestResult {
        let config = load(&[
            "--origin",
            "postgres://app:origin-secret@h/db",
            "--client-user",
            "c:client-secret",
        ])?;
        let shown = format!(
            "{config:?} {config:#?} {} {:?}",
            config.origin, config.client_auth
        );
        assert!(!shown.contains("origin-secret"), "{shown}");
        assert!(!shown.contains("client-secret"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
        assert_eq!(
            config.origin.to_string(),
            "postgres://app@h:5432/db?sslmode=prefer"
        );
        Ok(())
    }

    #[test]
    fn help_mentions_every_flag() {
        // Collapse the wrapping, which depends on the terminal's width.
        let help = Cli::long_help()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for flag in [
            "--config",
            "--listen",
            "--origin",
            "--pool-size",
            "--pool-min",
            "--connect-timeout",
            "--acquire-timeout",
            "--idle-timeout",
            "--statement-timeout",
            "--client-idle-timeout",
            "--health-check-after",
            "--shutdown-grace",
            "--auth-method",
            "--client-user",
            "--allow-cleartext-without-tls",
            "--tls-cert",
            "--tls-key",
            "--metrics",
            "--max-message-size",
            "--pool-mode",
            "--max-pinned",
            "--session-feature",
            "ORIGIN_URL",
            "scram-sha-256",
            "verify-full",
        ] {
            assert!(
                help.contains(flag),
                "--help does not mention {flag}:\n{help}"
            );
        }
        for default in [
            DEFAULT_POOL_SIZE as u64,
            DEFAULT_CONNECT_TIMEOUT_SECS,
            DEFAULT_ACQUIRE_TIMEOUT_SECS,
            DEFAULT_IDLE_TIMEOUT_SECS,
            DEFAULT_STATEMENT_TIMEOUT_SECS,
            DEFAULT_CLIENT_IDLE_TIMEOUT_SECS,
            DEFAULT_HEALTH_CHECK_AFTER_SECS,
            DEFAULT_SHUTDOWN_GRACE_SECS,
            DEFAULT_MAX_MESSAGE_SIZE as u64,
        ] {
            assert!(
                help.contains(&format!("[default: {default}")),
                "default {default}:\n{help}"
            );
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn help_and_version_come_back_as_clap_errors() {
        for (flag, kind) in [
            ("--help", clap::error::ErrorKind::DisplayHelp),
            ("--version", clap::error::ErrorKind::DisplayVersion),
            ("--pool-size=many", clap::error::ErrorKind::ValueValidation),
        ] {
            match load(&[flag]) {
                Err(ConfigError::Cli(error)) => assert_eq!(error.kind(), kind, "{flag}"),
                other => panic!("{flag}: expected a clap error, got {other:?}"),
            }
        }
    }

    #[test]
    fn auth_method_names_match_in_flags_and_file() -> TestResult {
        for method in [
            ClientAuthMethod::ScramSha256,
            ClientAuthMethod::Md5,
            ClientAuthMethod::Cleartext,
            ClientAuthMethod::Trust,
        ] {
            let text = format!("auth_method = \"{method}\"");
            let file = FileConfig::parse(&text, Path::new("t.toml"))?;
            assert_eq!(file.auth_method, Some(method));
            assert_eq!(
                ClientAuthMethod::from_str(method.as_str(), false),
                Ok(method)
            );
        }
        Ok(())
    }

    #[test]
    fn session_features_from_file_and_flags() -> TestResult {
        let file = toml_file(
            "pool_mode = \"transaction\"\nmax_pinned = 2\n[session_features]\nlisten = \"pin\"\ntemp_tables = \"pin\"\n",
        )?;
        let config = load(&[
            "--origin",
            URL,
            "--config",
            path_str(&file)?,
            "--session-feature",
            "temp_tables=refuse",
        ])?;
        assert_eq!(config.pool.mode, PoolMode::Transaction);
        assert_eq!(config.pool.max_pinned, 2);
        let policies = config.session_features;
        assert_eq!(policies.get(SessionFeature::Listen), SessionPolicy::Pin);
        assert_eq!(
            policies.get(SessionFeature::TempTables),
            SessionPolicy::Refuse
        );
        assert_eq!(
            policies.get(SessionFeature::SqlPrepare),
            SessionPolicy::Refuse
        );
        Ok(())
    }

    #[test]
    fn invalid_session_features_are_named() {
        for (value, problem) in [
            ("listen", "expected FEATURE=POLICY"),
            ("lisen=pin", "unknown feature"),
            ("listen=keep", "unknown policy"),
        ] {
            let error = load(&["--origin", URL, "--session-feature", value])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(problem), "{value}: {error}");
            assert!(error.contains("--session-feature"), "{error}");
        }
        let error = load(&["--origin", URL, "--pool-size", "2", "--max-pinned", "3"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("--max-pinned"), "{error}");
    }

    #[test]
    fn max_pinned_defaults_to_half_the_pool() -> TestResult {
        let config = load(&["--origin", URL, "--pool-size", "1"])?;
        assert_eq!(config.pool.max_pinned, 1);
        let config = load(&["--origin", URL, "--pool-size", "10"])?;
        assert_eq!(config.pool.max_pinned, 5);
        Ok(())
    }
}
