//! Run-time parameters (GUCs) of one fake backend: SET, RESET, SHOW, `current_setting`, the
//! values given at startup, and which changes must be reported with ParameterStatus.
//!
//! What matters for a pooling proxy is modelled faithfully: startup values (including
//! `options=-c name=value`) become the *session defaults* that RESET and RESET ALL return to;
//! settings are transactional (a rolled-back SET is undone, SET LOCAL ends with the
//! transaction); reportable parameters are re-sent when they change, just before
//! ReadyForQuery, as Postgres 14+ does. Everything else about GUCs (units beyond time, enum
//! validation of most parameters, `SHOW ALL`) is out of scope.

use super::error::PgError;
use super::sql::SetValue;
use std::collections::BTreeMap;
use std::time::Duration;

/// `server_version` the fake reports.
pub const SERVER_VERSION: &str = "15.0 (elephant fake)";

/// Longest `application_name` kept (Postgres: NAMEDATALEN - 1).
pub const MAX_APPLICATION_NAME_LEN: usize = 63;

/// Most custom (`prefix.name`) parameters one session may create.
pub const MAX_CUSTOM_SETTINGS: usize = 256;

/// Longest value accepted for any parameter.
pub const MAX_SETTING_VALUE_LEN: usize = 1024;

/// How a parameter's values are checked and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Free text.
    Text,
    /// `application_name`: truncated and cleaned like Postgres 15.
    ApplicationName,
    /// A time in milliseconds (`statement_timeout`), shown with the largest exact unit.
    Milliseconds,
    /// `on`/`off`.
    Bool,
    /// `client_encoding`: only UTF8.
    Encoding,
    /// `DateStyle`: output style and field order.
    DateStyle,
    /// An integer.
    Integer,
}

/// One known parameter.
struct Definition {
    name: &'static str,
    default: &'static str,
    kind: Kind,
    reported: bool,
    read_only: bool,
}

const fn def(name: &'static str, default: &'static str, kind: Kind) -> Definition {
    Definition {
        name,
        default,
        kind,
        reported: false,
        read_only: false,
    }
}

const fn reported(mut definition: Definition) -> Definition {
    definition.reported = true;
    definition
}

const fn read_only(mut definition: Definition) -> Definition {
    definition.read_only = true;
    definition
}

/// The parameters the fake knows, in the order Postgres 15 reports them at startup.
const DEFINITIONS: &[Definition] = &[
    reported(def("application_name", "", Kind::ApplicationName)),
    reported(def("client_encoding", "UTF8", Kind::Encoding)),
    reported(def("DateStyle", "ISO, MDY", Kind::DateStyle)),
    reported(def("default_transaction_read_only", "off", Kind::Bool)),
    reported(read_only(def("in_hot_standby", "off", Kind::Bool))),
    reported(read_only(def("integer_datetimes", "on", Kind::Bool))),
    reported(def("IntervalStyle", "postgres", Kind::Text)),
    reported(read_only(def("is_superuser", "off", Kind::Bool))),
    reported(read_only(def("server_encoding", "UTF8", Kind::Text))),
    reported(read_only(def("server_version", SERVER_VERSION, Kind::Text))),
    // The default is replaced by the session's user.
    reported(read_only(def("session_authorization", "", Kind::Text))),
    reported(def("standard_conforming_strings", "on", Kind::Bool)),
    reported(def("TimeZone", "UTC", Kind::Text)),
    def("statement_timeout", "0", Kind::Milliseconds),
    def("lock_timeout", "0", Kind::Milliseconds),
    def(
        "idle_in_transaction_session_timeout",
        "0",
        Kind::Milliseconds,
    ),
    def("search_path", "\"$user\", public", Kind::Text),
    def("extra_float_digits", "1", Kind::Integer),
    def("work_mem", "4MB", Kind::Text),
    def("synchronous_commit", "on", Kind::Text),
    read_only(def("max_connections", "100", Kind::Integer)),
];

/// One parameter's state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Canonical spelling (`DateStyle`).
    name: String,
    /// Current value.
    value: String,
    /// What RESET returns to: the server default, or the value given at startup.
    session_default: String,
    kind: Kind,
    reported: bool,
    read_only: bool,
    /// Set in this session by SET or `set_config` (and not reset since): what `pg_settings`
    /// reports with `source = 'session'`.
    set_in_session: bool,
}

/// All parameters of one session, keyed by lower-cased name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    entries: BTreeMap<String, Entry>,
}

impl Settings {
    /// Server defaults for a session of `user`, with `max_connections` as configured.
    pub fn new(user: &str, max_connections: usize) -> Self {
        let mut entries = BTreeMap::new();
        for definition in DEFINITIONS {
            let default = match definition.name {
                "session_authorization" => user.to_string(),
                "max_connections" => max_connections.to_string(),
                _ => definition.default.to_string(),
            };
            entries.insert(
                definition.name.to_ascii_lowercase(),
                Entry {
                    name: definition.name.to_string(),
                    value: default.clone(),
                    session_default: default,
                    kind: definition.kind,
                    reported: definition.reported,
                    read_only: definition.read_only,
                    set_in_session: false,
                },
            );
        }
        Settings { entries }
    }

    /// Applies a startup parameter (or `-c` option): sets the value and the session default.
    pub fn apply_startup(&mut self, name: &str, value: &str) -> Result<(), PgError> {
        let key = self.key_for_write(name)?;
        let normalized = self.normalize(&key, value)?;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.value = normalized.clone();
            entry.session_default = normalized;
        }
        Ok(())
    }

    /// `SET name = value` / `SET name TO DEFAULT`.
    pub fn set(&mut self, name: &str, value: &SetValue) -> Result<(), PgError> {
        let key = self.key_for_write(name)?;
        let normalized = match value {
            SetValue::Default => self.entries.get(&key).map(|e| e.session_default.clone()),
            SetValue::Value(value) => Some(self.normalize(&key, value)?),
        };
        let set_in_session = matches!(value, SetValue::Value(_));
        if let (Some(entry), Some(value)) = (self.entries.get_mut(&key), normalized) {
            entry.value = value;
            entry.set_in_session = set_in_session;
        }
        Ok(())
    }

    /// `RESET name`.
    pub fn reset(&mut self, name: &str) -> Result<(), PgError> {
        self.set(name, &SetValue::Default)
    }

    /// `RESET ALL`: every changeable parameter back to its session default (the session
    /// user is not affected, as in Postgres).
    pub fn reset_all(&mut self) {
        for entry in self.entries.values_mut() {
            if !entry.read_only {
                entry.value = entry.session_default.clone();
                entry.set_in_session = false;
            }
        }
    }

    /// `SET SESSION AUTHORIZATION DEFAULT`.
    pub fn reset_session_authorization(&mut self) {
        if let Some(entry) = self.entries.get_mut("session_authorization") {
            entry.value = entry.session_default.clone();
        }
    }

    /// The value `SHOW` and `current_setting` report, with the canonical name.
    pub fn get(&self, name: &str) -> Result<(&str, &str), PgError> {
        self.entries
            .get(&name.to_ascii_lowercase())
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .ok_or_else(|| unrecognized(name))
    }

    /// The current value of `name` if it exists.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.entries
            .get(&name.to_ascii_lowercase())
            .map(|e| e.value.as_str())
    }

    /// Reportable parameters and their current values, in report order.
    pub fn reported(&self) -> Vec<(String, String)> {
        DEFINITIONS
            .iter()
            .filter(|d| d.reported)
            .filter_map(|d| self.entries.get(&d.name.to_ascii_lowercase()))
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    /// Parameters set in this session (`pg_settings` rows with `source = 'session'`) as
    /// `(name, setting)`, ordered by name; times in milliseconds without a unit, as
    /// `pg_settings.setting` shows them.
    pub fn session_sourced(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .entries
            .values()
            .filter(|e| e.set_in_session)
            .map(|e| {
                let setting = match e.kind {
                    Kind::Milliseconds => parse_milliseconds(&e.value)
                        .map_or_else(|_| e.value.clone(), |millis| millis.to_string()),
                    _ => e.value.clone(),
                };
                (e.name.clone(), setting)
            })
            .collect();
        rows.sort();
        rows
    }

    /// `statement_timeout`, `None` when 0 (no limit).
    pub fn statement_timeout(&self) -> Option<Duration> {
        let millis = self
            .value("statement_timeout")
            .and_then(|v| parse_milliseconds(v).ok())
            .unwrap_or(0);
        (millis > 0).then(|| Duration::from_millis(millis))
    }

    /// Copies `names`' values from `other` (ending SET LOCAL at transaction end).
    pub fn restore_from(&mut self, other: &Settings, names: &[String]) {
        for name in names {
            let key = name.to_ascii_lowercase();
            if let (Some(entry), Some(old)) = (self.entries.get_mut(&key), other.entries.get(&key))
            {
                entry.value = old.value.clone();
                entry.set_in_session = old.set_in_session;
            }
        }
    }

    /// The lower-cased key for a parameter about to be written, creating custom
    /// (`prefix.name`) parameters on first use as Postgres does.
    fn key_for_write(&mut self, name: &str) -> Result<String, PgError> {
        let key = name.to_ascii_lowercase();
        match self.entries.get(&key) {
            Some(entry) if entry.read_only => Err(PgError::new(
                "55P02",
                format!("parameter \"{}\" cannot be changed", entry.name),
            )),
            Some(_) => Ok(key),
            None if key.contains('.') => {
                if self.entries.len() >= DEFINITIONS.len() + MAX_CUSTOM_SETTINGS {
                    return Err(PgError::program_limit(format!(
                        "a session of the fake Postgres may create at most {MAX_CUSTOM_SETTINGS} custom parameters"
                    )));
                }
                self.entries.insert(
                    key.clone(),
                    Entry {
                        name: name.to_string(),
                        value: String::new(),
                        session_default: String::new(),
                        kind: Kind::Text,
                        reported: false,
                        read_only: false,
                        set_in_session: false,
                    },
                );
                Ok(key)
            }
            None => Err(unrecognized(name)),
        }
    }

    fn normalize(&self, key: &str, value: &str) -> Result<String, PgError> {
        let Some(entry) = self.entries.get(key) else {
            return Err(unrecognized(key));
        };
        if value.len() > MAX_SETTING_VALUE_LEN {
            return Err(invalid_value(&entry.name, value));
        }
        match entry.kind {
            Kind::Text => Ok(value.to_string()),
            Kind::ApplicationName => Ok(clean_application_name(value)),
            Kind::Milliseconds => {
                let millis =
                    parse_milliseconds(value).map_err(|_| invalid_value(&entry.name, value))?;
                Ok(show_milliseconds(millis))
            }
            Kind::Bool => normalize_bool(&entry.name, value),
            Kind::Encoding => normalize_encoding(value),
            Kind::DateStyle => normalize_date_style(&entry.value, value)
                .ok_or_else(|| invalid_value(&entry.name, value)),
            Kind::Integer => value
                .trim()
                .parse::<i64>()
                .map(|i| i.to_string())
                .map_err(|_| invalid_value(&entry.name, value)),
        }
    }
}

fn unrecognized(name: &str) -> PgError {
    PgError::new(
        "42704",
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

fn invalid_value(name: &str, value: &str) -> PgError {
    PgError::new(
        "22023",
        format!("invalid value for parameter \"{name}\": \"{value}\""),
    )
}

/// Postgres 15 truncates to NAMEDATALEN - 1 bytes and replaces non-printable ASCII with `?`.
fn clean_application_name(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    cleaned.chars().take(MAX_APPLICATION_NAME_LEN).collect()
}

const MILLIS_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("min", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Largest value of a milliseconds parameter (Postgres: INT_MAX).
const MAX_MILLISECONDS: u64 = i32::MAX as u64;

/// `5000`, `'5s'`, `'1min'`, `'250ms'` → milliseconds.
pub fn parse_milliseconds(value: &str) -> Result<u64, ()> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| ())?;
    let unit = unit.trim();
    let factor = if unit.is_empty() {
        1
    } else if unit == "us" {
        return Ok((number / 1000.0).round() as u64);
    } else {
        MILLIS_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, factor)| *factor)
            .ok_or(())?
    };
    let millis = (number * factor as f64).round();
    if !(0.0..=MAX_MILLISECONDS as f64).contains(&millis) {
        return Err(());
    }
    Ok(millis as u64)
}

/// Shows milliseconds as Postgres does: `0`, or the largest unit that divides exactly.
pub fn show_milliseconds(millis: u64) -> String {
    if millis == 0 {
        return "0".into();
    }
    MILLIS_UNITS
        .iter()
        .find(|(_, factor)| millis.is_multiple_of(*factor))
        .map_or_else(
            || format!("{millis}ms"),
            |(unit, factor)| format!("{}{unit}", millis / factor),
        )
}

fn normalize_bool(name: &str, value: &str) -> Result<String, PgError> {
    let on = match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => true,
        "off" | "false" | "no" | "0" | "f" | "n" => false,
        _ => return Err(invalid_value(name, value)),
    };
    if name == "standard_conforming_strings" && !on {
        return Err(PgError::not_supported(
            "the fake Postgres supports only standard_conforming_strings = on",
        ));
    }
    Ok(if on { "on" } else { "off" }.into())
}

fn normalize_encoding(value: &str) -> Result<String, PgError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "utf8" | "utf-8" | "unicode" => Ok("UTF8".into()),
        _ => Err(PgError::not_supported(format!(
            "the fake Postgres supports only client_encoding UTF8, not \"{value}\""
        ))),
    }
}

/// `DateStyle` is an output style and a field order; either may be given alone.
fn normalize_date_style(current: &str, value: &str) -> Option<String> {
    const STYLES: [&str; 4] = ["ISO", "SQL", "Postgres", "German"];
    const ORDERS: [(&str, &str); 7] = [
        ("MDY", "MDY"),
        ("DMY", "DMY"),
        ("YMD", "YMD"),
        ("US", "MDY"),
        ("NONEURO", "MDY"),
        ("EURO", "DMY"),
        ("EUROPEAN", "DMY"),
    ];
    let mut parts = current.split(", ");
    let mut style = parts.next().unwrap_or("ISO").to_string();
    let mut order = parts.next().unwrap_or("MDY").to_string();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if let Some(found) = STYLES.iter().find(|s| s.eq_ignore_ascii_case(word)) {
            style = (*found).to_string();
        } else if let Some((_, canonical)) = ORDERS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
        {
            order = (*canonical).to_string();
        } else {
            return None;
        }
    }
    Some(format!("{style}, {order}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_values_are_what_reset_returns_to() {
        let mut settings = Settings::new("app", 100);
        settings
            .apply_startup("application_name", "proxy")
            .expect("ok");
        settings
            .set("application_name", &SetValue::Value("client".into()))
            .expect("ok");
        assert_eq!(settings.get("APPLICATION_NAME").expect("ok").1, "client");
        settings.reset_all();
        assert_eq!(settings.value("application_name"), Some("proxy"));
    }

    #[test]
    fn statement_timeout_units() {
        let mut settings = Settings::new("app", 100);
        settings
            .apply_startup("statement_timeout", "5000")
            .expect("ok");
        assert_eq!(settings.value("statement_timeout"), Some("5s"));
        assert_eq!(settings.statement_timeout(), Some(Duration::from_secs(5)));
        settings
            .set("statement_timeout", &SetValue::Value("1500ms".into()))
            .expect("ok");
        assert_eq!(settings.value("statement_timeout"), Some("1500ms"));
        assert!(
            settings
                .set("statement_timeout", &SetValue::Value("soon".into()))
                .is_err()
        );
    }

    #[test]
    fn unknown_read_only_and_custom_parameters() {
        let mut settings = Settings::new("app", 100);
        assert_eq!(
            settings
                .set("nonsense", &SetValue::Value("1".into()))
                .map_err(|e| e.code),
            Err("42704")
        );
        assert_eq!(
            settings
                .set("server_version", &SetValue::Value("1".into()))
                .map_err(|e| e.code),
            Err("55P02")
        );
        settings
            .set("myapp.user", &SetValue::Value("7".into()))
            .expect("custom");
        assert_eq!(settings.value("MyApp.User"), Some("7"));
        assert_eq!(
            settings.get("datestyle").expect("ok"),
            ("DateStyle", "ISO, MDY")
        );
    }
}
