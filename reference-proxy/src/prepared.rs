//! Protocol-level prepared statements across pooled connections.
//!
//! A client names its statements (`P_0`, `s1`, ...) per session, but the proxy lends it a
//! different origin connection for each transaction. So the proxy keeps each client's
//! statements itself ([`ClientStatements`]) and prepares them on origin connections under
//! *content-addressed* names ([`StatementDefinition::origin_name`]): the same query text and
//! parameter types always get the same origin name, whichever client prepared it. Two clients
//! can never collide (PgBouncer 1.18's `prepared statement "P_0" already exists`), a statement
//! prepared once on a connection serves every client, and a connection knows exactly which
//! statements it holds ([`OriginStatements`]), checked by full text, not just by hash, so a
//! crafted hash collision cannot make one client's Bind run another client's SQL.

use elephant_protocol::PgString;
use elephant_protocol::display::fnv1a_64;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most statements kept prepared on one origin connection; the least recently prepared is
/// closed beyond this (Postgres keeps them in backend memory).
pub const MAX_STATEMENTS_PER_ORIGIN_CONNECTION: usize = 1024;

/// Most named statements one client may hold (Postgres has no limit but memory; a proxy
/// serving many clients needs one).
pub const MAX_STATEMENTS_PER_CLIENT: usize = 10_000;

/// What a Parse defined: enough to prepare it again anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementDefinition {
    /// Query text.
    pub query: PgString,
    /// Parameter types the client fixed.
    pub parameter_types: Vec<u32>,
    /// Name used on origin connections.
    pub origin_name: PgString,
    /// Executing it may leave session state behind (decided once, from the text), so the
    /// connection it runs on needs a reset before the next borrower.
    pub may_change_session: bool,
    /// Executing it may change a run-time setting (`SET`, `set_config`...): the session reads
    /// its settings back from the origin after the transaction ([`crate::sql`]).
    pub may_change_settings: bool,
}

impl StatementDefinition {
    /// Defines a statement, deriving its origin name from its content.
    pub fn new(query: PgString, parameter_types: Vec<u32>) -> Self {
        let mut content = query.as_bytes().to_vec();
        content.push(0);
        for oid in &parameter_types {
            content.extend_from_slice(&oid.to_be_bytes());
        }
        let origin_name = PgString::from(format!("et_{:016x}", fnv1a_64(&content)));
        let may_change_session = crate::session::may_change_session_state(&query);
        let may_change_settings = crate::sql::may_change_settings(query.as_bytes());
        StatementDefinition {
            query,
            parameter_types,
            origin_name,
            may_change_session,
            may_change_settings,
        }
    }
}

/// A client's prepared statements, by the names the client chose.
#[derive(Debug, Default)]
pub struct ClientStatements {
    named: HashMap<PgString, Arc<StatementDefinition>>,
    /// The unnamed statement and the origin connection it was last prepared on.
    unnamed: Option<(Arc<StatementDefinition>, Option<u64>)>,
}

impl ClientStatements {
    /// Looks up a named statement.
    pub fn get(&self, name: &PgString) -> Option<&Arc<StatementDefinition>> {
        self.named.get(name)
    }

    /// The definition a Bind or Describe of `name` refers to (the unnamed one for "").
    pub fn definition(&self, name: &PgString) -> Option<&Arc<StatementDefinition>> {
        if name.is_empty() {
            self.unnamed.as_ref().map(|(definition, _)| definition)
        } else {
            self.named.get(name)
        }
    }

    /// True when the client already has a statement of this name.
    pub fn contains(&self, name: &PgString) -> bool {
        self.named.contains_key(name)
    }

    /// Number of named statements.
    pub fn len(&self) -> usize {
        self.named.len()
    }

    /// True when the client has no named statements.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// Records a named statement.
    pub fn insert(&mut self, name: PgString, definition: Arc<StatementDefinition>) {
        self.named.insert(name, definition);
    }

    /// Forgets a named statement (Close, or a failed Parse).
    pub fn remove(&mut self, name: &PgString) {
        self.named.remove(name);
    }

    /// Records the unnamed statement, prepared on `connection`.
    pub fn set_unnamed(&mut self, definition: Arc<StatementDefinition>, connection: u64) {
        self.unnamed = Some((definition, Some(connection)));
    }

    /// The unnamed statement, if it must be prepared again on `connection` first.
    pub fn unnamed_to_reprepare(&mut self, connection: u64) -> Option<Arc<StatementDefinition>> {
        match &mut self.unnamed {
            Some((definition, on)) if *on != Some(connection) => {
                *on = Some(connection);
                Some(definition.clone())
            }
            _ => None,
        }
    }

    /// The proxy ran a simple query of its own (a reset), which destroyed the unnamed
    /// statement on that connection: the client's must be prepared again before use.
    pub fn unnamed_invalidated(&mut self) {
        if crate::buggify::enabled(crate::buggify::Bug::StaleUnnamedStatement) {
            return;
        }
        if let Some((_, on)) = &mut self.unnamed {
            *on = None;
        }
    }

    /// The client's simple query destroyed the unnamed statement (as in Postgres).
    pub fn unnamed_destroyed(&mut self) {
        self.unnamed = None;
    }
}

/// Which statements an origin connection holds, by origin name, with their full definitions.
#[derive(Debug, Default)]
pub struct OriginStatements {
    prepared: HashMap<PgString, Arc<StatementDefinition>>,
    order: VecDeque<PgString>,
}

/// What must happen on an origin connection before a statement can be used there.
#[derive(Debug, PartialEq, Eq)]
pub enum Preparation {
    /// Already prepared with this exact definition.
    Ready,
    /// Prepare it; first close these (evicted, or a different statement under the same name).
    Prepare {
        /// Origin statement names to close first.
        close_first: Vec<PgString>,
    },
}

impl OriginStatements {
    /// Decides how to make `definition` usable, and records it as prepared.
    pub fn prepare(&mut self, definition: &Arc<StatementDefinition>) -> Preparation {
        let name = &definition.origin_name;
        let mut close_first = Vec::new();
        match self.prepared.get(name) {
            Some(existing)
                if existing.query == definition.query
                    && existing.parameter_types == definition.parameter_types =>
            {
                return Preparation::Ready;
            }
            Some(_) => {
                // Same hash, different statement: replace it on the connection.
                self.forget(name);
                close_first.push(name.clone());
            }
            None => {}
        }
        while self.prepared.len() >= MAX_STATEMENTS_PER_ORIGIN_CONNECTION {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.prepared.remove(&oldest).is_some() {
                close_first.push(oldest);
            }
        }
        self.prepared.insert(name.clone(), definition.clone());
        self.order.push_back(name.clone());
        Preparation::Prepare { close_first }
    }

    /// Forgets one statement (its Parse failed, or it was closed).
    pub fn forget(&mut self, name: &PgString) {
        if self.prepared.remove(name).is_some() {
            self.order.retain(|n| n != name);
        }
    }

    /// Forgets everything (after `DEALLOCATE ALL` or `DISCARD ALL` ran on the connection).
    pub fn clear(&mut self) {
        self.prepared.clear();
        self.order.clear();
    }

    /// Number of statements held.
    pub fn len(&self) -> usize {
        self.prepared.len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(query: &str) -> Arc<StatementDefinition> {
        Arc::new(StatementDefinition::new(PgString::from(query), vec![23]))
    }

    #[test]
    fn the_same_statement_gets_the_same_origin_name_for_every_client() {
        assert_eq!(
            definition("SELECT $1").origin_name,
            definition("SELECT $1").origin_name
        );
        assert_ne!(
            definition("SELECT $1").origin_name,
            definition("SELECT $1 + 1").origin_name
        );
        let typed = StatementDefinition::new(PgString::from("SELECT $1"), vec![25]);
        assert_ne!(typed.origin_name, definition("SELECT $1").origin_name);
    }

    #[test]
    fn a_connection_prepares_each_statement_once() {
        let mut statements = OriginStatements::default();
        let select = definition("SELECT 1");
        assert_eq!(
            statements.prepare(&select),
            Preparation::Prepare {
                close_first: vec![]
            }
        );
        assert_eq!(statements.prepare(&select), Preparation::Ready);
        statements.clear();
        assert_eq!(
            statements.prepare(&select),
            Preparation::Prepare {
                close_first: vec![]
            }
        );
    }

    #[test]
    fn a_hash_collision_replaces_instead_of_reusing() {
        let mut statements = OriginStatements::default();
        let real = definition("SELECT secret FROM vault");
        let forged = Arc::new(StatementDefinition {
            query: PgString::from("SELECT 'pwned'"),
            parameter_types: vec![23],
            origin_name: real.origin_name.clone(),
            may_change_session: false,
            may_change_settings: false,
        });
        statements.prepare(&forged);
        assert_eq!(
            statements.prepare(&real),
            Preparation::Prepare {
                close_first: vec![real.origin_name.clone()]
            }
        );
    }

    #[test]
    fn the_oldest_statement_is_evicted_at_the_limit() {
        let mut statements = OriginStatements::default();
        let first = definition("SELECT 0");
        statements.prepare(&first);
        for i in 1..MAX_STATEMENTS_PER_ORIGIN_CONNECTION {
            statements.prepare(&definition(&format!("SELECT {i}")));
        }
        let next = definition("SELECT 'one more'");
        assert_eq!(
            statements.prepare(&next),
            Preparation::Prepare {
                close_first: vec![first.origin_name.clone()]
            }
        );
        assert_eq!(statements.len(), MAX_STATEMENTS_PER_ORIGIN_CONNECTION);
    }

    #[test]
    fn the_unnamed_statement_is_reprepared_only_on_another_connection() {
        let mut client = ClientStatements::default();
        client.set_unnamed(definition("SELECT 1"), 7);
        assert!(client.unnamed_to_reprepare(7).is_none());
        assert!(client.unnamed_to_reprepare(8).is_some());
        assert!(client.unnamed_to_reprepare(8).is_none());
        client.unnamed_destroyed();
        assert!(client.unnamed_to_reprepare(9).is_none());
    }
}
