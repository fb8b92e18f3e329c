//! Statement handling tokio-postgres cannot produce, through [`crate::raw::RawClient`]: every
//! client prepares *the same statement names* with its own SQL, binds the unnamed statement
//! in a later transaction than its Parse, and pipelines three batches of which the middle
//! one fails. Each answer must be exactly this client's.

use super::{Client, PROXY_PORT, now};
use crate::invariants::Invariant;
use crate::raw::{self, Login, RawClient};
use crate::trace::Outcome;
use elephant_protocol::{BackendMessage, FrontendMessage};
use std::time::Duration;

/// The statement name every client uses for its own SQL.
pub const SHARED_NAME: &str = "q";

/// SQLSTATE of the deliberately broken statement in the pipelined batches.
const BROKEN_SQL_CODE: &str = "42601";

impl Client {
    fn login(&self) -> Login {
        Login {
            host: self.spec.proxy_host.clone(),
            port: PROXY_PORT,
            user: self.spec.user.clone(),
            password: self.spec.password.clone(),
            database: self.spec.database.clone(),
            application_name: self.spec.application_name(),
        }
    }

    /// The raw sequence; stops at the first step that fails.
    pub(super) async fn raw_statements(&mut self) {
        let start = now();
        let connected =
            tokio::time::timeout(self.spec.call_timeout, RawClient::connect(&self.login()))
                .await
                .unwrap_or(Err(Outcome::Timeout));
        let mut client = match connected {
            Ok(client) => client,
            Err(outcome) => return self.record_raw("raw connect", start, outcome),
        };
        self.record_raw("raw connect", start, Outcome::Ok(String::new()));
        if self.raw_sequence(&mut client).await.is_some() {
            client.terminate().await;
        }
    }

    async fn raw_sequence(&self, client: &mut RawClient) -> Option<()> {
        let me = self.spec.index.to_string();
        let token = |step: &str| format!("{}-{step}-{}", self.name(), self.op);
        let named = format!("SELECT {me} AS owner, $1::text AS token");
        self.raw_step(
            client,
            "raw: Parse q",
            vec![raw::parse(SHARED_NAME, &named), FrontendMessage::Sync],
            &[],
        )
        .await?;
        let t1 = token("named");
        let bind_named = vec![
            raw::bind("", SHARED_NAME, &[&t1]),
            raw::execute(),
            FrontendMessage::Sync,
        ];
        self.raw_step(client, "raw: Bind q", bind_named, &[vec![me.clone(), t1]])
            .await?;
        let unnamed = format!("SELECT $1::text AS token, {me} AS owner");
        self.raw_unnamed(client, &unnamed, &token("unnamed"), &me)
            .await?;
        self.raw_pipeline(client, &me, &token("p1"), &token("p2"))
            .await?;
        let t3 = token("v2");
        let redefined = format!("SELECT {me} AS owner, 'v2' AS version, $1::text AS token");
        let redefine = vec![
            raw::close(SHARED_NAME),
            raw::parse(SHARED_NAME, &redefined),
            raw::bind("", SHARED_NAME, &[&t3]),
            raw::execute(),
            FrontendMessage::Sync,
        ];
        self.raw_step(
            client,
            "raw: Close q and Parse it again",
            redefine,
            &[vec![me, "v2".into(), t3]],
        )
        .await
    }

    /// Parse of the unnamed statement, then its Bind: in a later transaction when the
    /// scenario exercises known bugs, in the same batch otherwise.
    async fn raw_unnamed(
        &self,
        client: &mut RawClient,
        sql: &str,
        token: &str,
        me: &str,
    ) -> Option<()> {
        let expected = [vec![token.to_string(), me.to_string()]];
        let bind = [
            raw::bind("", "", &[token]),
            raw::execute(),
            FrontendMessage::Sync,
        ];
        if !self.spec.known_bugs {
            let mut batch = vec![raw::parse("", sql)];
            batch.extend(bind);
            return self
                .raw_step(client, "raw: Parse and Bind unnamed", batch, &expected)
                .await;
        }
        let parse = vec![raw::parse("", sql), FrontendMessage::Sync];
        self.raw_step(client, "raw: Parse unnamed", parse, &[])
            .await?;
        self.raw_step(client, "raw: Bind unnamed later", bind.to_vec(), &expected)
            .await
    }

    /// Three batches in one write; the middle one fails to parse and must not disturb the
    /// others.
    async fn raw_pipeline(
        &self,
        client: &mut RawClient,
        me: &str,
        first: &str,
        last: &str,
    ) -> Option<()> {
        let messages = vec![
            raw::bind("", SHARED_NAME, &[first]),
            raw::execute(),
            FrontendMessage::Sync,
            raw::parse("", "SELEC broken"),
            raw::bind("", "", &[]),
            raw::execute(),
            FrontendMessage::Sync,
            raw::bind("", SHARED_NAME, &[last]),
            raw::execute(),
            FrontendMessage::Sync,
        ];
        let start = now();
        let batches = self.exchange(client, &messages, 3).await;
        let what = "raw: three pipelined batches, the middle one broken";
        let batches = match batches {
            Ok(batches) => batches,
            Err(outcome) => return self.fail(what, start, outcome),
        };
        let [a, broken, b] = batches.as_slice() else {
            return self.fail(what, start, Outcome::Closed);
        };
        let middle = raw::outcome(broken);
        if middle.code() != Some(BROKEN_SQL_CODE) {
            let outcome = if middle.is_ok() {
                Outcome::Client("the broken statement succeeded".into())
            } else {
                middle
            };
            return self.fail(what, start, outcome);
        }
        for (answer, token) in [(a, first), (b, last)] {
            let outcome = raw::outcome(answer);
            if !outcome.is_ok() {
                return self.fail(what, start, outcome);
            }
            self.check_rows(
                what,
                &raw::rows(answer),
                &[vec![me.to_string(), token.to_string()]],
            );
        }
        self.record_raw(
            what,
            start,
            Outcome::Ok(format!("{BROKEN_SQL_CODE} in the middle only")),
        );
        Some(())
    }

    /// Sends `messages` (one batch), records the call, checks the rows; `None` ends the
    /// sequence.
    async fn raw_step(
        &self,
        client: &mut RawClient,
        what: &str,
        messages: Vec<FrontendMessage>,
        expected: &[Vec<String>],
    ) -> Option<()> {
        let start = now();
        let answer = self
            .exchange(client, &messages, 1)
            .await
            .map(|mut b| b.pop().unwrap_or_default());
        let outcome = match &answer {
            Ok(messages) => raw::outcome(messages),
            Err(outcome) => outcome.clone(),
        };
        let ok = outcome.is_ok();
        self.record_raw(what, start, outcome);
        let messages = answer.ok().filter(|_| ok)?;
        self.check_rows(what, &raw::rows(&messages), expected);
        Some(())
    }

    /// Writes `messages` and reads `batches` answers, within the call timeout.
    async fn exchange(
        &self,
        client: &mut RawClient,
        messages: &[FrontendMessage],
        batches: usize,
    ) -> Result<Vec<Vec<BackendMessage>>, Outcome> {
        let work = async {
            client.send(messages).await?;
            let mut answers = Vec::new();
            for _ in 0..batches {
                let answer = client.batch().await?;
                let fatal = answer.iter().any(|m| matches!(m, BackendMessage::ErrorResponse(f) if f.severity().is_some_and(|s| s == "FATAL")));
                answers.push(answer);
                if fatal {
                    break;
                }
            }
            Ok(answers)
        };
        tokio::time::timeout(self.spec.call_timeout, work)
            .await
            .unwrap_or(Err(Outcome::Timeout))
    }

    fn check_rows(&self, what: &str, seen: &[Vec<String>], expected: &[Vec<String>]) {
        self.log.checked(Invariant::SessionIsolation);
        if seen != expected {
            let detail = format!(
                "{} `{what}` expected rows {expected:?} and got {seen:?}",
                self.name()
            );
            self.observe(Invariant::SessionIsolation, detail);
        }
    }

    /// Records a failed step; `None` ends the sequence.
    fn fail(&self, what: &str, start: Duration, outcome: Outcome) -> Option<()> {
        self.record_raw(what, start, outcome);
        None
    }

    /// Records a raw call (raw connections are separate from `self.conn`).
    fn record_raw(&self, what: &str, start: Duration, outcome: Outcome) {
        self.log.call(crate::trace::CallRecord {
            client: self.spec.index,
            what: what.to_string(),
            start,
            end: now(),
            outcome,
        });
    }
}
