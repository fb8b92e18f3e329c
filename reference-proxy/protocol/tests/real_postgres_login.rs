//! Goal: our client-side authentication logs in to a real Postgres 15 with every method, and
//! our server-side verifier accepts logins against the secrets a real Postgres stores.
//! Method: start a native cluster (fixtures; one role per method), drive `ClientHandshake` over
//! a blocking TCP socket with the codec, run a query, and check wrong passwords get the real
//! server's ErrorResponse. Then read `pg_authid.rolpassword` from that cluster and log in
//! against it with `ServerHandshake` in memory.

use bytes::BytesMut;
use elephant_auth::{AuthMethod, StoredPassword};
use elephant_protocol::startup::{
    ClientHandshake, ClientHandshakeConfig, ClientStep, HandshakeError, ServerAuthConfig,
    ServerHandshake, ServerSession, ServerStep,
};
use elephant_protocol::{
    BackendDecoder, BackendMessage, DecoderLimits, FrontendDecoder, FrontendMessage,
    TransactionStatus,
};
use fixtures::{Postgres, PostgresConfig, Role};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Bound on how long any single read may block, so a broken server fails the test instead of
/// hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A minimal blocking connection: the codec over a std socket.
struct Connection {
    socket: TcpStream,
    buffer: BytesMut,
    decoder: BackendDecoder,
}

impl Connection {
    fn open(pg: &Postgres) -> Self {
        let socket = TcpStream::connect((pg.host(), pg.port())).expect("connect");
        socket
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        Connection {
            socket,
            buffer: BytesMut::new(),
            decoder: BackendDecoder::new(DecoderLimits::default()),
        }
    }

    fn send(&mut self, message: &FrontendMessage) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("encodable");
        self.socket.write_all(&bytes).expect("write");
    }

    fn receive(&mut self) -> BackendMessage {
        loop {
            if let Some(message) = self
                .decoder
                .decode(&mut self.buffer)
                .expect("valid server bytes")
            {
                return message;
            }
            let mut chunk = [0u8; 8192];
            let read = self.socket.read(&mut chunk).expect("read");
            assert!(read > 0, "server closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Runs the client handshake to the end.
    fn login(&mut self, config: ClientHandshakeConfig) -> Result<ServerSession, HandshakeError> {
        let (mut handshake, startup) = ClientHandshake::start(config);
        self.send(&startup);
        loop {
            match handshake.handle(self.receive())? {
                ClientStep::Send(message) => self.send(&message),
                ClientStep::Continue => {}
                ClientStep::Ready(session) => return Ok(session),
            }
        }
    }

    /// Runs a simple query and returns the first column of each row as text.
    fn query(&mut self, sql: &str) -> Vec<String> {
        self.send(&FrontendMessage::Query(sql.into()));
        let mut rows = Vec::new();
        loop {
            match self.receive() {
                BackendMessage::DataRow(row) => rows.push(
                    row.values()[0]
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default(),
                ),
                BackendMessage::ReadyForQuery(status) => {
                    assert_eq!(status, TransactionStatus::Idle);
                    return rows;
                }
                BackendMessage::ErrorResponse(fields) => panic!("query failed: {fields:?}"),
                _ => {}
            }
        }
    }
}

fn config(pg: &Postgres, role: Role, password: Option<&str>) -> ClientHandshakeConfig {
    ClientHandshakeConfig {
        user: pg.user(role).to_string(),
        database: Some(pg.database().to_string()),
        password: password.map(str::to_string),
        parameters: vec![("application_name".into(), "elephant-protocol-test".into())],
        tls_server_end_point: None,
    }
}

#[test]
fn our_client_logs_in_to_real_postgres_with_every_method() {
    let Some(pg) = Postgres::start_or_skip(
        "our_client_logs_in_to_real_postgres_with_every_method",
        PostgresConfig::default(),
    ) else {
        return;
    };
    for role in [Role::Scram, Role::Md5, Role::Cleartext, Role::Trust] {
        let mut connection = Connection::open(&pg);
        let session = connection
            .login(config(&pg, role, Some(pg.password(role))))
            .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        assert!(session.backend_key.is_some(), "{role:?}: no BackendKeyData");
        let version = session
            .parameter("server_version")
            .expect("server_version")
            .to_string();
        assert!(
            version.starts_with("15") || version.starts_with("16") || version.starts_with("17"),
            "{version}"
        );
        assert_eq!(
            session
                .parameter("application_name")
                .map(|v| v.to_string())
                .as_deref(),
            Some("elephant-protocol-test")
        );
        assert_eq!(
            connection.query("SELECT current_user"),
            vec![pg.user(role).to_string()],
            "{role:?}"
        );
    }
}

#[test]
fn real_postgres_refuses_wrong_passwords_and_we_report_its_error() {
    let Some(pg) = Postgres::start_or_skip(
        "real_postgres_refuses_wrong_passwords_and_we_report_its_error",
        PostgresConfig::default(),
    ) else {
        return;
    };
    for role in [Role::Scram, Role::Md5, Role::Cleartext] {
        let error = Connection::open(&pg)
            .login(config(&pg, role, Some("not-the-password")))
            .expect_err("wrong password");
        let HandshakeError::Server(fields) = &error else {
            panic!("{role:?}: expected the server's ErrorResponse, got {error}");
        };
        assert_eq!(
            fields.code().map(|c| c.to_string()).as_deref(),
            Some("28P01"),
            "{role:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "server rejected the connection: password authentication failed for user \"{}\"",
                pg.user(role)
            )
        );
    }
    let error = Connection::open(&pg)
        .login(config(&pg, Role::Scram, None))
        .expect_err("no password");
    assert!(
        matches!(error, HandshakeError::PasswordRequired { .. }),
        "{error}"
    );
}

/// Logs in to our ServerHandshake in memory; returns whether it accepted.
fn login_against(stored: StoredPassword, method: AuthMethod, user: &str, password: &str) -> bool {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let server_config = ServerAuthConfig {
        method: Some(method),
        mock_key: b"mock".to_vec(),
        tls_server_end_point: None,
    };
    let mut frontend = FrontendDecoder::running(DecoderLimits::default());
    let (mut client, startup) = ClientHandshake::start(ClientHandshakeConfig {
        user: user.into(),
        password: Some(password.into()),
        ..ClientHandshakeConfig::default()
    });
    let FrontendMessage::Startup(startup) = startup else {
        unreachable!()
    };
    let (mut server, mut step) =
        ServerHandshake::start(&startup, &server_config, Some(stored), &mut rng).expect("start");
    for _round in 0..4 {
        let message = match step {
            ServerStep::Authenticated(_) => return true,
            ServerStep::Send { message, expect } => {
                frontend.expect_auth_response(expect);
                message
            }
        };
        let Ok(ClientStep::Send(reply)) = client.handle(message) else {
            return false;
        };
        let mut bytes = BytesMut::new();
        reply.encode(&mut bytes).expect("encodable");
        let reply = frontend
            .decode(&mut bytes)
            .expect("decodable")
            .expect("whole");
        step = match server.handle(reply) {
            Ok(step) => step,
            Err(_) => return false,
        };
    }
    false
}

#[test]
fn our_verifier_accepts_logins_against_secrets_stored_by_real_postgres() {
    let Some(pg) = Postgres::start_or_skip(
        "our_verifier_accepts_logins_against_secrets_stored_by_real_postgres",
        PostgresConfig::default(),
    ) else {
        return;
    };
    for (role, method) in [
        (Role::Scram, AuthMethod::ScramSha256),
        (Role::Md5, AuthMethod::Md5),
        (Role::Scram, AuthMethod::Cleartext),
        (Role::Md5, AuthMethod::Cleartext),
    ] {
        let user = pg.user(role);
        let rolpassword = pg
            .psql(
                Role::Superuser,
                &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
            )
            .expect("read pg_authid");
        let stored = StoredPassword::parse(&rolpassword).expect("Postgres's own format");
        assert!(
            login_against(stored.clone(), method, user, pg.password(role)),
            "{role:?} via {method:?}"
        );
        assert!(
            !login_against(stored, method, user, "wrong"),
            "{role:?} via {method:?} accepted a wrong password"
        );
    }
}
