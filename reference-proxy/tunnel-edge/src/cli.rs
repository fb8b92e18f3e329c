//! The `tunnel-edge` binary's flags and startup.
//!
//! Why in the library: the flag rules (origin scheme, `ID:SECRET` splitting, TLS files in pairs)
//! are unit-tested here, and the binary stays a thin `main` that only owns the process-wide
//! concerns (logging, runtime, signals, the startup line on stdout).
//!
//! Service tokens given with `--service-token` are parsed after clap, not by a clap value parser,
//! because clap quotes a rejected value in its error message and that value may be a secret.

use crate::access::{AccessControl, ServiceToken, TokenSet};
use crate::config::EdgeConfig;
use crate::edge::Edge;
use crate::error::{StartupError, TokenError};
use crate::tls::EdgeTls;
use clap::{ArgGroup, Parser};
use reference_proxy::stream::{Dialer, TcpDialer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:18443";
/// The only origin scheme (cloudflared's `tcp://` ingress).
pub const ORIGIN_SCHEME: &str = "tcp://";
/// Largest accepted `--ping-interval` / `--dial-timeout`, seconds (one day).
const MAX_SECONDS_FLAG: u64 = 86_400;

/// A cloudflared-compatible tunnel edge: TLS, Cloudflare Access service-token checks, a
/// WebSocket upgrade and raw TCP to one origin.
#[derive(Debug, Parser)]
#[command(name = "tunnel-edge", version, about, long_about = LONG_ABOUT)]
#[command(group(ArgGroup::new("access").required(true).multiple(true)
    .args(["service_tokens", "tokens", "login_only"])))]
pub struct Cli {
    /// Address to listen on (HOST:PORT; port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Where tunnels lead, like cloudflared's ingress service: tcp://HOST:PORT. The origin is
    /// dialled for every upgrade before the 101 is sent; if that fails the client gets 502.
    #[arg(long, value_name = "tcp://HOST:PORT", value_parser = parse_origin)]
    pub origin: OriginAddr,

    /// PEM certificate chain for TLS to clients (with --key). Without --cert/--key the edge
    /// speaks plain WebSocket, which the real cloudflared client cannot use.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,

    /// A valid Access service token, ID:SECRET (split at the first ':', the secret may contain
    /// more). Repeat for several valid tokens (rotation). Visible in the process list: prefer
    /// --tokens outside tests.
    #[arg(
        long = "service-token",
        value_name = "ID:SECRET",
        conflicts_with = "tokens"
    )]
    pub service_tokens: Vec<String>,

    /// TOML token file (`--tokens`), reloaded on SIGHUP and on change.
    #[arg(long, value_name = "FILE", conflicts_with = "login_only", help = TOKENS_HELP)]
    pub tokens: Option<PathBuf>,

    /// Answer every upgrade with the Access login redirect (`--login-only`).
    #[arg(long, help = LOGIN_ONLY_HELP)]
    pub login_only: bool,

    /// Seconds between keepalives on each tunnel (a Ping plus an unsolicited empty Pong, as
    /// cloudflared sends).
    #[arg(long, value_name = "SECS", default_value_t = 54,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS_FLAG))]
    pub ping_interval: u64,

    /// Seconds allowed for dialling the origin before answering 502.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS_FLAG))]
    pub dial_timeout: u64,
}

const LONG_ABOUT: &str = "\
A stand-in for the Cloudflare edge, Cloudflare Access and cloudflared in one process.

Clients (the reference proxy's tunnel egress, or `cloudflared access tcp`) open TLS to this \
edge and send a WebSocket upgrade carrying Cf-Access-Client-Id and Cf-Access-Client-Secret. \
A valid service token gets the origin dialled and a 101; missing or wrong tokens get 403; \
--login-only gets the 302 login redirect; an unreachable origin gets 502 with \
Cf-Cloudflared-Response-Meta. Binary WebSocket messages are then piped to the origin like \
cloudflared does it (text dropped, messages cut to 16 KiB, no half-close).

One access-log line per tunnel goes to stderr (RUST_LOG, default info). SIGTERM or Ctrl-C \
stops the edge.";

const TOKENS_HELP: &str = "TOML token file: policy = \"service-auth\" | \"login-only\" \
(default service-auth) and [[tokens]] tables with id and secret. Reloaded on SIGHUP and whenever \
it changes (checked every second); a file that fails to load keeps the previous tokens. Tunnels \
already open are never cut by a reload.";

const LOGIN_ONLY_HELP: &str = "Act as an Access application without a Service Auth policy: \
every upgrade gets a 302 to /cdn-cgi/access/login/<host>, which cloudflared reports as \
\"no service token policy\".";

/// `--origin` after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginAddr {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses `tcp://HOST:PORT` (`HOST` may be `[v6]`).
pub fn parse_origin(text: &str) -> Result<OriginAddr, String> {
    let rest = text.strip_prefix(ORIGIN_SCHEME).ok_or_else(|| {
        "the origin must be tcp://HOST:PORT (cloudflared's TCP ingress; other schemes are not \
         supported)"
            .to_owned()
    })?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "the origin needs a port: tcp://HOST:PORT".to_owned())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("the origin port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("the origin port must not be 0".to_owned());
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err("the origin must be tcp://HOST:PORT with a plain host name or IP".to_owned());
    }
    Ok(OriginAddr {
        host: host.to_owned(),
        port,
    })
}

impl Cli {
    /// The token set the flags describe (`--tokens` is loaded from disk).
    pub fn token_set(&self) -> Result<TokenSet, StartupError> {
        if let Some(path) = &self.tokens {
            return TokenSet::load(path).map_err(StartupError::TokenFile);
        }
        if self.login_only {
            return Ok(TokenSet::login_only());
        }
        let tokens = self
            .service_tokens
            .iter()
            .enumerate()
            .map(|(position, text)| parse_token_flag(position + 1, text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartupError::ServiceToken)?;
        TokenSet::service_auth(tokens).map_err(StartupError::ServiceToken)
    }

    /// A dialer for `--origin`.
    pub fn dialer(&self) -> TcpDialer {
        TcpDialer::new(self.origin.host.clone(), self.origin.port)
    }

    /// The edge configuration the flags describe.
    pub fn edge_config(&self) -> EdgeConfig {
        EdgeConfig {
            origin_description: format!("tcp://{}", self.dialer().describe()),
            ping_interval: Duration::from_secs(self.ping_interval),
            dial_timeout: Duration::from_secs(self.dial_timeout),
            ..EdgeConfig::default()
        }
    }
}

/// `ID:SECRET` of the `position`-th `--service-token`.
fn parse_token_flag(position: usize, text: &str) -> Result<ServiceToken, TokenError> {
    let (id, secret) = text.split_once(':').ok_or(TokenError::MissingSeparator)?;
    let token = ServiceToken::new(id, secret);
    token.validate(position)?;
    Ok(token)
}

/// A started edge, before it serves.
pub struct Startup {
    /// The edge.
    pub edge: Arc<Edge>,
    /// The bound listener.
    pub listener: TcpListener,
    /// Its actual address (port 0 resolved).
    pub local_addr: SocketAddr,
    /// The token file watcher (`--tokens` only); abort it when done.
    pub watcher: Option<JoinHandle<()>>,
}

/// Loads tokens and TLS, builds the edge and binds the listener.
pub async fn start(cli: &Cli) -> Result<Startup, StartupError> {
    let access = Arc::new(AccessControl::new(cli.token_set()?));
    let tls = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => {
            Some(EdgeTls::from_pem_files(cert, key).map_err(StartupError::Tls)?)
        }
        _ => None,
    };
    let dialer = Arc::new(cli.dialer());
    let edge = Arc::new(Edge::new(cli.edge_config(), access.clone(), dialer, tls));
    let listener = TcpListener::bind(&cli.listen)
        .await
        .map_err(|source| StartupError::Bind {
            address: cli.listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
        address: cli.listen.clone(),
        source,
    })?;
    let watcher = cli.tokens.clone().map(|path| access.watch_file(path));
    Ok(Startup {
        edge,
        listener,
        local_addr,
        watcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec!["tunnel-edge", "--origin", "tcp://127.0.0.1:5432"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
    }

    #[test]
    fn origins_must_be_tcp_urls_with_a_port() {
        assert_eq!(
            parse_origin("tcp://db.internal:5432"),
            Ok(OriginAddr {
                host: "db.internal".into(),
                port: 5432
            })
        );
        assert_eq!(
            parse_origin("tcp://[::1]:5432").map(|o| o.host),
            Ok("::1".into())
        );
        for bad in [
            "http://db:5432",
            "postgres://db:5432",
            "db:5432",
            "tcp://db",
            "tcp://:5432",
            "tcp://db:0",
            "tcp://db:99999",
            "tcp://u@db:5432",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_tokens_are_repeatable_and_split_at_the_first_colon() {
        let cli = cli(&["--service-token", "a.access:x:y", "--service-token", "b:z"]).unwrap();
        let set = cli.token_set().unwrap();
        assert_eq!(set.token_ids(), ["a.access", "b"]);
        assert_eq!(set.tokens()[0].secret, "x:y");
    }

    #[test]
    fn a_bad_service_token_error_never_echoes_it() {
        let cli = cli(&[
            "--service-token",
            "ok:fine",
            "--service-token",
            "topsecretvalue",
        ])
        .unwrap();
        let error = cli.token_set().unwrap_err().to_string();
        assert!(error.contains("--service-token"), "{error}");
        assert!(!error.contains("topsecretvalue"), "{error}");
    }

    #[test]
    fn access_must_be_configured_and_tls_files_come_in_pairs() {
        assert!(cli(&[]).is_err());
        assert!(cli(&["--login-only"]).is_ok());
        assert!(cli(&["--login-only", "--cert", "c.pem"]).is_err());
        assert!(cli(&["--service-token", "a:b", "--tokens", "t.toml"]).is_err());
        assert!(cli(&["--login-only", "--ping-interval", "0"]).is_err());
    }
}
