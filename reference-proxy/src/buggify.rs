//! Planted bugs, in the spirit of FoundationDB's BUGGIFY: known pooler mistakes that the
//! simulator must catch, switched on at run time by the simulator.
//!
//! Why: a checker that never fails proves nothing. Each [`Bug`] is a one-line hook at the spot
//! where a real pooler gets it wrong (a reset skipped on return to the pool, a cancel forwarded
//! to another session's backend, the unnamed statement not prepared again after a connection
//! switch); `sim run --buggify <bug>` and `sim/tests/bites.rs` show the invariants catching
//! each one within a bounded number of seeds.
//!
//! Without the cargo feature `buggify` (the default, and every shipped build) [`enabled`] is a
//! `const fn` returning `false`, so every hook folds away and the set of enabled bugs does not
//! exist. With it, the set is process-global (an atomic bit set): hooks sit deep in code that
//! has no handle to the simulator, and a simulator process runs one bug selection at a time.

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The reset is skipped: a connection goes back to the pool without being marked for
    /// one, and the next borrower's attach applies its own settings without `RESET ALL`
    /// first, so it inherits whatever else the previous borrower changed (a `SET` leaks).
    SkipResetOnReturn,
    /// A cancel request is forwarded to the backend of another session that holds a
    /// connection, instead of the cancelling session's own.
    CancelWrongConnection,
    /// After a connection switch the client's unnamed statement is not prepared again, so a
    /// later `Bind ""` runs whatever unnamed statement another session left on that backend.
    StaleUnnamedStatement,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 3] = [
        Bug::SkipResetOnReturn,
        Bug::CancelWrongConnection,
        Bug::StaleUnnamedStatement,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipResetOnReturn => "skip-reset",
            Bug::CancelWrongConnection => "cancel-wrong-connection",
            Bug::StaleUnnamedStatement => "stale-unnamed-statement",
        }
    }

    /// The bug called `name`.
    pub fn named(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }

    #[cfg(feature = "buggify")]
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// True when this build can plant bugs (the `buggify` feature).
pub const COMPILED: bool = cfg!(feature = "buggify");

#[cfg(feature = "buggify")]
static ENABLED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// True when `bug` is planted. Always `false` without the `buggify` feature.
#[cfg(not(feature = "buggify"))]
#[inline(always)]
pub const fn enabled(_bug: Bug) -> bool {
    false
}

/// True when `bug` is planted.
#[cfg(feature = "buggify")]
#[inline]
pub fn enabled(bug: Bug) -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed) & bug.bit() != 0
}

/// Plants exactly `bugs` (an empty slice removes them all), for the whole process. Fails
/// when bugs are asked for in a build without the `buggify` feature.
pub fn plant(bugs: &[Bug]) -> Result<(), NotCompiled> {
    #[cfg(feature = "buggify")]
    {
        let bits = bugs.iter().fold(0, |bits, bug| bits | bug.bit());
        ENABLED.store(bits, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    #[cfg(not(feature = "buggify"))]
    {
        if bugs.is_empty() {
            Ok(())
        } else {
            Err(NotCompiled)
        }
    }
}

/// The bugs planted now, in [`Bug::ALL`] order (always empty without the feature).
pub fn planted() -> Vec<Bug> {
    Bug::ALL.into_iter().filter(|bug| enabled(*bug)).collect()
}

/// Bugs were asked for in a build without the `buggify` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("planted bugs need a build with the `buggify` feature (cargo --features buggify)")]
pub struct NotCompiled;

/// For [`Bug::CancelWrongConnection`]: of the other sessions' targets, the one of the
/// lowest process id (a fixed choice, so the simulation stays deterministic).
pub fn other_target<T: Clone>(
    own: i32,
    targets: impl Iterator<Item = (i32, Option<T>)>,
) -> Option<T> {
    targets
        .filter(|(id, target)| *id != own && target.is_some())
        .min_by_key(|(id, _)| *id)
        .and_then(|(_, target)| target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for bug in Bug::ALL {
            assert_eq!(Bug::named(bug.name()), Some(bug));
        }
        assert_eq!(Bug::named("nonsense"), None);
    }

    #[test]
    fn other_target_never_picks_the_own_session() {
        let targets = [(3, Some("c")), (1, None), (2, Some("b")), (5, Some("e"))];
        assert_eq!(other_target(2, targets.into_iter()), Some("c"));
        assert_eq!(other_target(3, targets.into_iter()), Some("b"));
        assert_eq!(other_target(2, [(2, Some("b"))].into_iter()), None);
    }
}
