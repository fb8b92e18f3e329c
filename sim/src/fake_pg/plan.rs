//! Static analysis of a parsed statement: the types of its `$n` parameters, the columns it
//! returns, and how long its `pg_sleep` calls will sleep. This is what Parse and Describe
//! report before anything runs, and it must agree with what Execute later produces.

use super::error::PgError;
use super::settings::Settings;
use super::sql::{Expr, Function, SelectItem, Statement};
use super::types::{PgType, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// OID the fake gives the `accounts` table in RowDescription.
pub const ACCOUNTS_TABLE_OID: u32 = 16_384;
/// Attribute number of `accounts.id`.
pub const ID_COLUMN: i16 = 1;
/// Attribute number of `accounts.balance`.
pub const BALANCE_COLUMN: i16 = 2;

/// Longest sleep the fake performs for one statement (longer requests are clamped).
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type.
    pub ty: PgType,
    /// Table OID and attribute number for table columns.
    pub table: Option<(u32, i16)>,
}

impl Column {
    fn expr(name: impl Into<String>, ty: PgType) -> Self {
        Column {
            name: name.into(),
            ty,
            table: None,
        }
    }
}

/// Parameter types the statement's context implies (`id = $1` is an integer, ...).
pub fn infer_parameter_types(statement: &Statement) -> BTreeMap<usize, PgType> {
    let mut types = BTreeMap::new();
    let mut note = |expr: &Expr, ty: PgType| infer(expr, Some(ty), &mut types);
    match statement {
        Statement::Select(items) => {
            for item in items {
                infer(&item.expr, None, &mut types);
            }
        }
        Statement::SelectBalance(id) => note(id, PgType::Int4),
        Statement::UpdateBalance { delta, id } => {
            note(delta, PgType::Int4);
            note(id, PgType::Int4);
        }
        Statement::InsertTransfer([id, from, to, amount]) => {
            note(id, PgType::Int8);
            note(from, PgType::Int4);
            note(to, PgType::Int4);
            note(amount, PgType::Int4);
        }
        _ => {}
    }
    types
}

fn infer(expr: &Expr, context: Option<PgType>, types: &mut BTreeMap<usize, PgType>) {
    match expr {
        Expr::Param(n) => {
            if let Some(ty) = context {
                types.entry(*n).or_insert(ty);
            }
        }
        Expr::Cast(inner, ty) => infer(inner, Some(*ty), types),
        Expr::Negate(inner) => infer(inner, context, types),
        Expr::Call(function, args) => {
            let ty = match function {
                Function::PgSleep => PgType::Float8,
                _ => PgType::Text,
            };
            for arg in args {
                infer(arg, Some(ty), types);
            }
        }
        _ => {}
    }
}

/// Final parameter types: the client's (non-zero OIDs in Parse) over the inferred ones.
pub fn parameter_types(
    statement: Option<&Statement>,
    declared: &[u32],
) -> Result<Vec<PgType>, PgError> {
    let inferred = statement.map(infer_parameter_types).unwrap_or_default();
    let referenced = statement.map_or(0, highest_parameter);
    let count = referenced.max(declared.len());
    (1..=count)
        .map(
            |n| match declared.get(n - 1).copied().filter(|oid| *oid != 0) {
                Some(oid) => PgType::from_oid(oid).ok_or_else(|| {
                    PgError::not_supported(format!(
                        "parameter type OID {oid} is not supported by the fake Postgres"
                    ))
                }),
                None => inferred.get(&n).copied().ok_or_else(|| {
                    PgError::new(
                        "42P18",
                        format!("could not determine data type of parameter ${n}"),
                    )
                }),
            },
        )
        .collect()
}

/// The highest `$n` the statement uses.
pub fn highest_parameter(statement: &Statement) -> usize {
    let exprs: Vec<&Expr> = match statement {
        Statement::Select(items) => items.iter().map(|i| &i.expr).collect(),
        Statement::SelectBalance(id) => vec![id],
        Statement::UpdateBalance { delta, id } => vec![delta, id],
        Statement::InsertTransfer(values) => values.iter().collect(),
        _ => Vec::new(),
    };
    exprs.into_iter().map(highest_in).max().unwrap_or(0)
}

fn highest_in(expr: &Expr) -> usize {
    match expr {
        Expr::Param(n) => *n,
        Expr::Cast(inner, _) | Expr::Negate(inner) => highest_in(inner),
        Expr::Call(_, args) => args.iter().map(highest_in).max().unwrap_or(0),
        _ => 0,
    }
}

/// The columns the statement returns (empty for commands without a result).
pub fn columns(
    statement: &Statement,
    settings: &Settings,
    params: &[PgType],
) -> Result<Vec<Column>, PgError> {
    Ok(match statement {
        Statement::Select(items) => items
            .iter()
            .map(|item| select_column(item, params))
            .collect::<Result<_, _>>()?,
        Statement::SelectBalance(_) => vec![Column {
            name: "balance".into(),
            ty: PgType::Int4,
            table: Some((ACCOUNTS_TABLE_OID, BALANCE_COLUMN)),
        }],
        Statement::SelectAccounts => vec![
            Column {
                name: "id".into(),
                ty: PgType::Int4,
                table: Some((ACCOUNTS_TABLE_OID, ID_COLUMN)),
            },
            Column {
                name: "balance".into(),
                ty: PgType::Int4,
                table: Some((ACCOUNTS_TABLE_OID, BALANCE_COLUMN)),
            },
        ],
        Statement::SelectSum => vec![Column::expr("sum", PgType::Int8)],
        Statement::CountTransfers => vec![Column::expr("count", PgType::Int8)],
        Statement::SessionSettings => vec![
            Column::expr("name", PgType::Text),
            Column::expr("setting", PgType::Text),
        ],
        Statement::Show(name) => {
            let (canonical, _) = settings.get(name)?;
            vec![Column::expr(canonical, PgType::Text)]
        }
        _ => Vec::new(),
    })
}

fn select_column(item: &SelectItem, params: &[PgType]) -> Result<Column, PgError> {
    let ty = expr_type(&item.expr, params)?;
    let name = item
        .alias
        .clone()
        .unwrap_or_else(|| default_name(&item.expr));
    Ok(Column::expr(name, ty))
}

/// The name Postgres gives an unaliased expression column.
fn default_name(expr: &Expr) -> String {
    match expr {
        Expr::Call(function, _) => function.name().into(),
        Expr::Cast(inner, ty) => match inner.as_ref() {
            Expr::Call(..) | Expr::Cast(..) => default_name(inner),
            _ => ty.column_name().into(),
        },
        _ => "?column?".into(),
    }
}

/// The type of an expression.
pub fn expr_type(expr: &Expr, params: &[PgType]) -> Result<PgType, PgError> {
    Ok(match expr {
        Expr::Int(i) if i32::try_from(*i).is_ok() => PgType::Int4,
        Expr::Int(_) => PgType::Int8,
        Expr::Decimal(_) => {
            return Err(PgError::not_supported(
                "numeric values are not supported by the fake Postgres (cast to double precision)",
            ));
        }
        Expr::Str(_) | Expr::Null => PgType::Text,
        Expr::Bool(_) => PgType::Bool,
        Expr::Param(n) => params.get(n - 1).copied().ok_or_else(|| no_parameter(*n))?,
        Expr::Cast(_, ty) => *ty,
        Expr::Negate(inner) => expr_type(inner, params)?,
        Expr::Call(Function::PgSleep | Function::PgAdvisoryUnlockAll, _) => PgType::Void,
        Expr::Call(Function::CurrentSetting | Function::SetConfig, _) => PgType::Text,
        Expr::Call(Function::PgBackendPid, _) => PgType::Int4,
    })
}

fn no_parameter(n: usize) -> PgError {
    PgError::new("42P02", format!("there is no parameter ${n}"))
}

/// What expressions can read while they are evaluated.
pub struct EvalContext<'a> {
    /// Bound parameter values (already of their declared types).
    pub params: &'a [Value],
    /// The session's settings.
    pub settings: &'a Settings,
    /// The backend's process id.
    pub pid: i32,
}

/// Evaluates an expression (`pg_sleep` evaluates to void; its sleeping is done beforehand).
pub fn eval(expr: &Expr, ctx: &EvalContext<'_>) -> Result<Value, PgError> {
    match expr {
        Expr::Int(i) => Ok(Value::Int(*i)),
        Expr::Decimal(d) => d
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| PgError::syntax(format!("invalid number \"{d}\""))),
        Expr::Str(s) => Ok(Value::Text(s.clone())),
        Expr::Bool(b) => Ok(Value::Bool(*b)),
        Expr::Null => Ok(Value::Null),
        Expr::Param(n) => ctx
            .params
            .get(n - 1)
            .cloned()
            .ok_or_else(|| no_parameter(*n)),
        Expr::Cast(inner, ty) => eval(inner, ctx)?.cast(*ty),
        Expr::Negate(inner) => negate(eval(inner, ctx)?),
        Expr::Call(function, args) => call(*function, args, ctx),
    }
}

fn negate(value: Value) -> Result<Value, PgError> {
    match value {
        Value::Int(i) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| PgError::new("22003", "bigint out of range")),
        Value::Float(f) => Ok(Value::Float(-f)),
        Value::Null => Ok(Value::Null),
        _ => Err(PgError::new(
            "42883",
            "operator does not exist: - text (the fake Postgres negates numbers only)",
        )),
    }
}

fn call(function: Function, args: &[Expr], ctx: &EvalContext<'_>) -> Result<Value, PgError> {
    match function {
        Function::PgSleep | Function::PgAdvisoryUnlockAll => Ok(Value::Void),
        Function::PgBackendPid => Ok(Value::Int(i64::from(ctx.pid))),
        Function::CurrentSetting => {
            let name = match args.first().map(|a| eval(a, ctx)).transpose()? {
                Some(Value::Text(name)) => name,
                Some(Value::Null) | None => return Ok(Value::Null),
                Some(other) => other.to_text(),
            };
            let (_, value) = ctx.settings.get(&name)?;
            Ok(Value::Text(value.to_string()))
        }
        // The backend applied it before evaluating the row ([`set_config_calls`]); the
        // result is the new value, as Postgres returns.
        Function::SetConfig => {
            let name = match args.first().map(|a| eval(a, ctx)).transpose()? {
                Some(Value::Null) | None => return Ok(Value::Null),
                Some(other) => other.to_text(),
            };
            let (_, value) = ctx.settings.get(&name)?;
            Ok(Value::Text(value.to_string()))
        }
    }
}

/// The `set_config(name, value, is_local)` calls of a SELECT list, evaluated: applied by the
/// backend, in order, before the row is computed.
pub fn set_config_calls(
    items: &[super::sql::SelectItem],
    ctx: &EvalContext<'_>,
) -> Result<Vec<(String, String, bool)>, PgError> {
    let mut calls = Vec::new();
    for item in items {
        if let Expr::Call(Function::SetConfig, args) = &item.expr {
            let values = args
                .iter()
                .map(|arg| eval(arg, ctx))
                .collect::<Result<Vec<_>, _>>()?;
            let [name, value, local] = values.as_slice() else {
                return Err(PgError::new("42883", "set_config takes 3 arguments"));
            };
            if matches!(name, Value::Null) {
                return Err(PgError::new("22004", "SET requires parameter name"));
            }
            let local = matches!(local, Value::Bool(true))
                || matches!(local, Value::Text(t) if t == "true" || t == "t");
            calls.push((name.to_text(), value.to_text(), local));
        }
    }
    Ok(calls)
}

/// Total time the statement's `pg_sleep` calls ask for.
pub fn sleep_time(statement: &Statement, ctx: &EvalContext<'_>) -> Result<Duration, PgError> {
    let Statement::Select(items) = statement else {
        return Ok(Duration::ZERO);
    };
    let mut total = Duration::ZERO;
    for item in items {
        total += sleep_in(&item.expr, ctx)?;
    }
    Ok(total.min(MAX_SLEEP))
}

fn sleep_in(expr: &Expr, ctx: &EvalContext<'_>) -> Result<Duration, PgError> {
    match expr {
        Expr::Call(Function::PgSleep, args) => {
            let seconds = match args.first().map(|a| eval(a, ctx)).transpose()? {
                Some(value) => value.cast(PgType::Float8)?,
                None => Value::Null,
            };
            Ok(match seconds {
                Value::Float(s) if s.is_finite() && s > 0.0 => {
                    Duration::from_secs_f64(s.min(MAX_SLEEP.as_secs_f64()))
                }
                _ => Duration::ZERO,
            })
        }
        Expr::Cast(inner, _) | Expr::Negate(inner) => sleep_in(inner, ctx),
        _ => Ok(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_pg::sql::parse_query;

    fn statement(sql: &str) -> Statement {
        parse_query(sql).expect("parses").remove(0)
    }

    #[test]
    fn parameter_types_come_from_context_or_casts() {
        let update = statement("UPDATE accounts SET balance = balance + $1 WHERE id = $2");
        assert_eq!(
            parameter_types(Some(&update), &[]),
            Ok(vec![PgType::Int4, PgType::Int4])
        );
        let echo = statement("SELECT $1::text, pg_sleep($2)");
        assert_eq!(
            parameter_types(Some(&echo), &[]),
            Ok(vec![PgType::Text, PgType::Float8])
        );
        let bare = statement("SELECT $1");
        assert_eq!(
            parameter_types(Some(&bare), &[]).map_err(|e| e.code),
            Err("42P18")
        );
        assert_eq!(parameter_types(Some(&bare), &[25]), Ok(vec![PgType::Text]));
    }

    #[test]
    fn column_names_follow_postgres() {
        let settings = Settings::new("u", 10);
        let select = statement("SELECT 1, 'a'::text, pg_sleep(0), 2 AS two");
        let names: Vec<String> = columns(&select, &settings, &[])
            .expect("ok")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, vec!["?column?", "text", "pg_sleep", "two"]);
    }
}
