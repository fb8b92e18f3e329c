//! Time to first row of a new client connection: a direct SCRAM+TLS login to a distant
//! origin versus a fresh client of a proxy whose pool to that origin is already warm.

use elephant_protocol::{BackendMessage, FrontendMessage};
use reference_proxy::origin::OriginConnector;
use std::time::Duration;
use tokio::time::Instant;

/// Dials (through the relay), negotiates TLS, logs in with SCRAM, sends `SELECT 1` and
/// stops the clock at the first DataRow.
pub async fn direct_once(connector: &OriginConnector) -> Result<Duration, String> {
    let start = Instant::now();
    let mut connection = connector.connect().await.map_err(|e| e.to_string())?;
    connection
        .link
        .send(&FrontendMessage::Query("SELECT 1".into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match connection.link.receive().await.map_err(|e| e.to_string())? {
            BackendMessage::DataRow(_) => break,
            BackendMessage::ErrorResponse(fields) => {
                return Err(format!(
                    "SELECT 1 failed: {}",
                    fields.message().map(|m| m.to_string()).unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    let _ = connection.link.send(&FrontendMessage::Terminate).await;
    Ok(elapsed)
}

/// Connects a new tokio-postgres client (no TLS, SCRAM to the proxy on loopback), runs
/// `SELECT 1` with the simple protocol (one round trip, as the direct path) and stops the
/// clock when the result (one row, arriving with its CommandComplete) is in.
pub async fn proxied_once(conninfo: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect through the proxy: {e}"))?;
    let driver = tokio::spawn(connection);
    let messages = client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| format!("SELECT 1 through the proxy: {e}"))?;
    let elapsed = start.elapsed();
    let got_row = messages
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)));
    drop(client);
    let _ = driver.await;
    if !got_row {
        return Err("SELECT 1 through the proxy returned no row".to_string());
    }
    Ok(elapsed)
}

/// Median and 90th percentile.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// 50th percentile.
    pub median: Duration,
    /// 90th percentile (nearest rank).
    pub p90: Duration,
}

impl Summary {
    /// Summarises `samples` (not empty).
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        let rank = (n * 9).div_ceil(10).max(1);
        Some(Summary {
            median,
            p90: sorted[rank - 1],
        })
    }
}
