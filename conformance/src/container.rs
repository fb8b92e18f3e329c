//! The container arms: the corpus against Postgres in a container (`fixtures::container`),
//! directly and through the proxy, compared with the same snapshots as the native arms.
//!
//! The container has one role, its superuser (`elephant`, SCRAM-SHA-256). So only transcripts
//! that log in as the `scram` role run here ([`skip_reason`] says which others are left out and
//! why), and the lines that name the session's role are mapped back to the native arm's role
//! (`scram_user`, not a superuser): the StartupMessage's `user`, the `session_authorization` and
//! `is_superuser` ParameterStatus values, and the role in authentication failures. Nothing else
//! is changed; the shared normalizer does the rest (server_version, TimeZone spelling, table
//! OIDs, source locations).

use crate::real::{RunningProxy, auth_flags, start_proxy};
use crate::runner::{self, Line, Login};
use crate::snapshot::Checker;
use crate::suite::{BANK_SQL, corpus, snapshot_name};
use crate::transcript::{DEFAULT_TIMEOUT, RoleName, Transcript};
use fixtures::ContainerPostgres;
use reference_proxy::stream::{Dialer, TcpDialer};
use std::sync::Arc;

/// The role the native arms log in as, which the container's superuser stands in for.
const NATIVE_ROLE: &str = "scram_user";

/// Why a transcript does not run against the container, or `None` when it does.
pub fn skip_reason(t: &Transcript) -> Option<&'static str> {
    if t.scenario.is_some() {
        return Some("access scenarios run against the native Postgres only");
    }
    if t.role != RoleName::Scram {
        return Some("needs a role the container does not have (only its SCRAM superuser)");
    }
    match t.name.as_str() {
        "auth-scram" => Some("its rows show the role name, which differs (elephant)"),
        "pool-replication-refused" => {
            Some("a superuser may open a replication connection; the native role may not")
        }
        _ => None,
    }
}

fn login(pg: &ContainerPostgres, t: &Transcript) -> Login {
    Login {
        user: t.user.clone().unwrap_or_else(|| pg.user().to_string()),
        password: Some(
            t.password
                .clone()
                .unwrap_or_else(|| pg.password().to_string()),
        ),
        database: pg.database().to_string(),
        parameters: t.startup_parameters(),
    }
}

/// Maps the lines naming the container's superuser to the native role (see the module docs).
fn as_native_role(lines: Vec<Line>, user: &str) -> Vec<Line> {
    let rules = [
        (
            format!("user=\"{user}\" "),
            format!("user=\"{NATIVE_ROLE}\" "),
        ),
        (
            format!("session_authorization=\"{user}\""),
            format!("session_authorization=\"{NATIVE_ROLE}\""),
        ),
        (
            "is_superuser=\"on\"".to_string(),
            "is_superuser=\"off\"".to_string(),
        ),
        (
            format!("for user \\\"{user}\\\""),
            format!("for user \\\"{NATIVE_ROLE}\\\""),
        ),
    ];
    lines
        .into_iter()
        .map(|mut line| {
            let original = line.text.clone();
            for (from, to) in &rules {
                line.text = line.text.replace(from.as_str(), to);
            }
            if line.text != original {
                // The mapped text is now the line; the normalizer's text rules apply to it.
                line.message = None;
            }
            line
        })
        .collect()
}

/// Runs the corpus against a fresh container, directly (`through_proxy` false) or through a
/// proxy. Each way gets its own container, because transcripts create tables.
pub async fn run_container_arm(through_proxy: bool) {
    let arm = if through_proxy {
        "container-proxy"
    } else {
        "container"
    };
    let Some(pg) = ContainerPostgres::start_or_skip(&format!("conformance_{arm}")).await else {
        return;
    };
    let direct: Arc<dyn Dialer> = Arc::new(TcpDialer::new(pg.host(), pg.port()));
    let bank = Login {
        parameters: Vec::new(),
        ..login(&pg, &corpus()[0])
    };
    if let Err(error) = runner::setup(BANK_SQL, &bank, direct.clone(), DEFAULT_TIMEOUT).await {
        panic!("the bank tables in {}: {error}", pg.image());
    }
    let mut checker = Checker::new(arm);
    let mut proxies: Vec<(Vec<String>, RunningProxy)> = Vec::new();
    for t in corpus() {
        if let Some(reason) = skip_reason(&t) {
            eprintln!("{arm}: {} skipped: {reason}", t.name);
            continue;
        }
        let (kind, dialer) = if through_proxy {
            match proxy_for(&pg, &t, &mut proxies).await {
                Ok(port) => (
                    "proxy",
                    Arc::new(TcpDialer::new("127.0.0.1", port)) as Arc<dyn Dialer>,
                ),
                Err(error) => {
                    checker.fail(format!("{}: {error}", t.name));
                    continue;
                }
            }
        } else {
            ("direct", direct.clone())
        };
        let result = run_one(&pg, &t, dialer).await;
        checker.check(&snapshot_name(&t, kind), result);
    }
    eprintln!("{arm} ran against the image {}", pg.image());
    checker.finish();
}

async fn run_one(
    pg: &ContainerPostgres,
    t: &Transcript,
    dialer: Arc<dyn Dialer>,
) -> Result<Vec<Line>, runner::RunFailure> {
    let login = login(pg, t);
    for sql in &t.setup {
        if let Err(message) = runner::setup(sql, &login, dialer.clone(), t.timeout).await {
            return Err(runner::RunFailure {
                line: 0,
                message: format!("setup failed: {message}"),
                trace: Vec::new(),
            });
        }
    }
    let lines = runner::run(t, &login, dialer, None).await?;
    Ok(as_native_role(lines, pg.user()))
}

/// The proxy in front of the container for this transcript's extra flags (started once).
async fn proxy_for(
    pg: &ContainerPostgres,
    t: &Transcript,
    proxies: &mut Vec<(Vec<String>, RunningProxy)>,
) -> Result<u16, String> {
    if let Some((_, proxy)) = proxies.iter().find(|(args, _)| *args == t.proxy_args) {
        return Ok(proxy.port);
    }
    let origin = format!("{}?sslmode=disable", pg.url());
    let mut args = auth_flags(RoleName::Scram);
    args.extend(t.proxy_args.iter().cloned());
    let proxy = start_proxy(&origin, &args).await?;
    let port = proxy.port;
    proxies.push((t.proxy_args.clone(), proxy));
    Ok(port)
}
