//! Goal: real clients — psql, pgbench (all three query modes), the sync `postgres` crate —
//! behave through the proxy exactly as they do against Postgres directly.
//! Method: run each against a real Postgres 15, directly and through an in-process proxy
//! with transaction pooling, and compare results (psql: byte-identical output of a script).

mod common;

use common::{TestProxy, postgres, run_client};
use fixtures::{Postgres, Role};
use std::process::Output;

const PSQL_SCRIPT: &str = r#"
\set ON_ERROR_STOP 0
TRUNCATE scripted;
INSERT INTO scripted VALUES (1, 'one', '2024-01-01 00:00:00+00'), (2, NULL, NULL);
SELECT * FROM scripted ORDER BY id;
BEGIN;
UPDATE scripted SET name = 'uno' WHERE id = 1;
SELECT 1/0;
SELECT 'in failed transaction';
ROLLBACK;
SELECT name FROM scripted WHERE id = 1;
COPY scripted (id, name) FROM STDIN;
3	three
4	\N
\.
SELECT count(*), count(name) FROM scripted;
SELECT 'a' AS x \gset
SELECT :'x' || 'b' AS concatenated;
BEGIN;
SET LOCAL datestyle = 'German';
SELECT seen FROM scripted WHERE id = 1;
COMMIT;
DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$;
SELECT generate_series(1, 3) AS n;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psql_script_prints_the_same_through_the_proxy() {
    let Some(pg) = postgres("a_psql_script_prints_the_same_through_the_proxy") else {
        return;
    };
    pg.psql(
        Role::Scram,
        "CREATE TABLE scripted (id int PRIMARY KEY, name text, seen timestamptz)",
    )
    .expect("setup");
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let args = ["-X", "-a", "-f", "-"];
    let direct = run_client(&pg, "psql", pg.port(), &args, Some(PSQL_SCRIPT)).await;
    let proxied = run_client(&pg, "psql", proxy.address.port(), &args, Some(PSQL_SCRIPT)).await;
    let text = |output: &Output| {
        format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    assert!(direct.status.success(), "{}", text(&direct));
    assert_eq!(
        text(&proxied),
        text(&direct),
        "psql output differs through the proxy"
    );
    assert!(text(&direct).contains("division by zero"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_dash_c_works() {
    let Some(pg) = postgres("psql_dash_c_works") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &[]).await;
    let output = run_client(
        &pg,
        "psql",
        proxy.address.port(),
        &["-X", "-A", "-t", "-c", "SELECT 40 + 2"],
        None,
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42");
    proxy.stop().await;
}

/// Runs pgbench through the proxy and returns its stdout (panics on failure).
async fn pgbench(pg: &Postgres, port: u16, mode: &str, select_only: bool) -> String {
    let mut args = vec!["-n", "-c", "32", "-j", "2", "-t", "30", "-M", mode];
    if select_only {
        args.push("-S");
    }
    let output = run_client(pg, "pgbench", port, &args, None).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "pgbench -M {mode} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "pgbench -M {mode}:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_in_every_query_mode_with_32_clients_on_a_pool_of_8() {
    let Some(pg) = postgres("pgbench_runs_in_every_query_mode_with_32_clients_on_a_pool_of_8")
    else {
        return;
    };
    let init = run_client(&pg, "pgbench", pg.port(), &["-i", "-s", "1", "-q"], None).await;
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let proxy = TestProxy::start(&pg, &["--pool-size", "8"]).await;
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(&pg, proxy.address.port(), mode, false).await;
        assert!(
            out.contains("number of transactions actually processed: 960/960"),
            "{out}"
        );
    }
    // PgBouncer 1.18 fails this one with `prepared statement "P_0" already exists`.
    let out = pgbench(&pg, proxy.address.port(), "prepared", true).await;
    assert!(out.contains("960/960"), "{out}");
    assert!(proxy.context.pool.open_connections() <= 8);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_postgres_crate_works() {
    let Some(pg) = postgres("the_sync_postgres_crate_works") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let conninfo = proxy.conninfo(&pg);
    let result = tokio::task::spawn_blocking(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&conninfo, postgres::NoTls)?;
        client.batch_execute("CREATE TABLE sync_items (id int, payload bytea)")?;
        let insert = client.prepare("INSERT INTO sync_items VALUES ($1, $2)")?;
        let mut transaction = client.transaction()?;
        for id in 0..50i32 {
            transaction.execute(&insert, &[&id, &vec![id as u8; 100]])?;
        }
        transaction.commit()?;
        let rows = client.query(
            "SELECT id, payload FROM sync_items WHERE id >= $1 ORDER BY id",
            &[&45i32],
        )?;
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].get::<_, Vec<u8>>(1), vec![45u8; 100]);
        let mut writer = client.copy_in("COPY sync_items (id) FROM STDIN")?;
        std::io::Write::write_all(&mut writer, b"100\n101\n").expect("copy data");
        assert_eq!(writer.finish()?, 2);
        let count: i64 = client
            .query_one("SELECT count(*) FROM sync_items", &[])?
            .get(0);
        assert_eq!(count, 52);
        Ok(())
    })
    .await
    .expect("task");
    result.expect("sync client session");
    proxy.stop().await;
}
