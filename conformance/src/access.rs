//! The Access matrix and tunnel failures, as the client sees them through the proxy.
//!
//! A transcript with `scenario NAME` runs only here. Each scenario builds its own tunnel edge
//! (in front of the native Postgres, with Postgres TLS inside the tunnel) and its own proxy,
//! configured to hit one row of the matrix; the transcript then records what a client of the
//! proxy sees — an ErrorResponse it can act on, or a working session — and the trace is
//! snapshotted like any other.

use crate::real::{
    RunningProxy, TOKEN_ID, TOKEN_SECRET, auth_flags, login, origin_url, start_edge, start_proxy,
    tunnel_flags,
};
use crate::runner::Hooks;
use crate::snapshot::Checker;
use crate::suite::{corpus, postgres, run_and_check};
use crate::transcript::Transcript;
use fixtures::{Postgres, TestPki};
use futures_util::FutureExt;
use reference_proxy::stream::TcpDialer;
use std::sync::Arc;
use tokio::sync::oneshot;
use tunnel_edge::{Edge, ServiceToken, TokenSet};

/// A second token, for rotation and revocation.
const NEW_TOKEN_ID: &str = "rotated.access";
/// Its secret.
pub const NEW_TOKEN_SECRET: &str = "rotated-tunnel-secret";

/// What keeps one scenario's edge and proxy alive, and how to reach the proxy.
struct Built {
    proxy: RunningProxy,
    hooks: Hooks,
    _edge_stop: oneshot::Sender<()>,
}

fn tokens(list: &[(&str, &str)]) -> TokenSet {
    TokenSet::service_auth(
        list.iter()
            .map(|(id, secret)| ServiceToken::new(*id, *secret))
            .collect(),
    )
    .expect("valid token set")
}

/// A service token: id and secret.
type Token = (&'static str, &'static str);

/// The edge's starting token set and origin port, and the proxy's token, per scenario.
fn scenario_setup(name: &str, pg_port: u16) -> Result<(TokenSet, u16, Option<Token>), String> {
    let valid = || tokens(&[(TOKEN_ID, TOKEN_SECRET)]);
    let ours = Some((TOKEN_ID, TOKEN_SECRET));
    Ok(match name {
        "no-token" => (valid(), pg_port, None),
        "wrong-id" => (valid(), pg_port, Some(("unknown.access", TOKEN_SECRET))),
        "wrong-secret" => (valid(), pg_port, Some((TOKEN_ID, "not-the-secret"))),
        "revoked" | "ca-mismatch" | "edge-killed" => (valid(), pg_port, ours),
        "rotated" => (
            tokens(&[(TOKEN_ID, TOKEN_SECRET), (NEW_TOKEN_ID, NEW_TOKEN_SECRET)]),
            pg_port,
            Some((NEW_TOKEN_ID, NEW_TOKEN_SECRET)),
        ),
        "login-only" => (TokenSet::login_only(), pg_port, ours),
        "origin-down" => (valid(), closed_port()?, ours),
        other => return Err(format!("unknown scenario `{other}`")),
    })
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

async fn build(name: &str, pg: &Postgres, pki: &TestPki, t: &Transcript) -> Result<Built, String> {
    let (set, origin_port, token) = scenario_setup(name, pg.port())?;
    let (edge_port, stop, edge) = start_edge(pki, origin_port, set).await?;
    let mut flags = auth_flags(t.role);
    let mut tunnel = tunnel_flags(edge_port, pki, token);
    if name == "ca-mismatch" {
        tunnel[3] = pki.other_ca_cert().display().to_string();
    }
    flags.extend(tunnel);
    flags.extend(t.proxy_args.iter().cloned());
    let origin = origin_url(pg, t.role, "127.0.0.1", "sslmode=require");
    let proxy = start_proxy(&origin, &flags).await?;
    if name == "revoked" {
        // The token was valid when the proxy was configured; the edge no longer accepts it.
        edge.access()
            .replace(tokens(&[(NEW_TOKEN_ID, NEW_TOKEN_SECRET)]));
    }
    Ok(Built {
        proxy,
        hooks: hooks(edge),
        _edge_stop: stop,
    })
}

/// `hook kill-tunnels`: the edge drops every live tunnel, as if it died.
fn hooks(edge: Arc<Edge>) -> Hooks {
    Arc::new(move |name: String| {
        let edge = edge.clone();
        async move {
            match name.as_str() {
                "kill-tunnels" => {
                    edge.kill_all_tunnels();
                    Ok(())
                }
                other => Err(format!("unknown hook `{other}`")),
            }
        }
        .boxed()
    })
}

/// Runs every scenario transcript against its own edge and proxy.
pub async fn run_access_arm() {
    let Some((pg, pki)) = postgres("conformance_access") else {
        return;
    };
    let mut checker = Checker::new("access");
    for transcript in corpus() {
        let Some(name) = transcript.scenario.clone() else {
            continue;
        };
        let built = match build(&name, &pg, &pki, &transcript).await {
            Ok(built) => built,
            Err(error) => {
                checker.fail(format!("{}: scenario {name}: {error}", transcript.name));
                continue;
            }
        };
        let dialer = Arc::new(TcpDialer::new("127.0.0.1", built.proxy.port));
        let login = login(&pg, &transcript);
        let hooks = Some(built.hooks.clone());
        run_and_check(
            &mut checker,
            &transcript,
            &login,
            dialer,
            hooks,
            &transcript.name,
        )
        .await;
    }
    checker.finish();
}
