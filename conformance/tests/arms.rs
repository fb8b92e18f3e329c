//! Goal: every transcript of the corpus gives the same normalized trace — its reviewed
//! snapshot — in every arm: real Postgres directly, through the proxy over TCP, client TLS and
//! the tunnel, and the simulator's fake directly and through the proxy.
//! Method: one test per arm (nextest runs them as parallel processes), each with its own
//! native Postgres and proxies; all failures of an arm are reported together with line diffs.

use conformance::real::Route;
use conformance::suite::run_real_arm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_postgres() {
    run_real_arm(Route::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_tcp() {
    run_real_arm(Route::Proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_client_tls() {
    run_real_arm(Route::ProxyTls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_through_tunnel() {
    run_real_arm(Route::Tunnel).await;
}

#[test]
fn fake_postgres_direct_and_through_proxy() {
    conformance::fake::run_fake_arms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_matrix_and_tunnel_failures() {
    conformance::access::run_access_arm().await;
}

/// Postgres in a container (the image users pull elsewhere, or the one `just images` builds);
/// skips loudly when Docker is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_postgres() {
    conformance::container::run_container_arm(false).await;
}

/// The proxy in front of Postgres in a container (its own container: transcripts create
/// tables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_postgres_through_proxy() {
    conformance::container::run_container_arm(true).await;
}
