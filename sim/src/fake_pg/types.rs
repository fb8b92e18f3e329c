//! The handful of Postgres types the fake knows, with their OIDs and their text and binary
//! wire formats (as `int4send`, `textout`, ... produce them), so that tokio-postgres — which
//! asks for binary results — decodes the fake's rows exactly as it decodes Postgres's.

use super::error::PgError;
use bytes::Bytes;

/// A type the fake can send or receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `boolean` (OID 16).
    Bool,
    /// `bigint` (OID 20).
    Int8,
    /// `smallint` (OID 21), accepted as a parameter type.
    Int2,
    /// `integer` (OID 23).
    Int4,
    /// `text` (OID 25).
    Text,
    /// `real` (OID 700), accepted as a parameter type.
    Float4,
    /// `double precision` (OID 701).
    Float8,
    /// `varchar` (OID 1043), accepted as a parameter type, treated as text.
    Varchar,
    /// `void` (OID 2278): what `pg_sleep` returns.
    Void,
}

impl PgType {
    /// The type's OID.
    pub fn oid(self) -> u32 {
        match self {
            PgType::Bool => 16,
            PgType::Int8 => 20,
            PgType::Int2 => 21,
            PgType::Int4 => 23,
            PgType::Text => 25,
            PgType::Float4 => 700,
            PgType::Float8 => 701,
            PgType::Varchar => 1043,
            PgType::Void => 2278,
        }
    }

    /// The type with this OID, if the fake knows it.
    pub fn from_oid(oid: u32) -> Option<PgType> {
        [
            PgType::Bool,
            PgType::Int8,
            PgType::Int2,
            PgType::Int4,
            PgType::Text,
            PgType::Float4,
            PgType::Float8,
            PgType::Varchar,
            PgType::Void,
        ]
        .into_iter()
        .find(|t| t.oid() == oid)
    }

    /// The type a cast names (`::int`, `::text`, ...).
    pub fn from_name(name: &str) -> Option<PgType> {
        Some(match name {
            "bool" | "boolean" => PgType::Bool,
            "int8" | "bigint" => PgType::Int8,
            "int2" | "smallint" => PgType::Int2,
            "int" | "int4" | "integer" => PgType::Int4,
            "text" => PgType::Text,
            "varchar" => PgType::Varchar,
            "float4" | "real" => PgType::Float4,
            "float8" => PgType::Float8,
            _ => return None,
        })
    }

    /// The name Postgres gives a column that is just a cast to this type.
    pub fn column_name(self) -> &'static str {
        match self {
            PgType::Bool => "bool",
            PgType::Int8 => "int8",
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Text => "text",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Varchar => "varchar",
            PgType::Void => "void",
        }
    }

    /// `typlen` for RowDescription.
    pub fn size(self) -> i16 {
        match self {
            PgType::Bool => 1,
            PgType::Int2 => 2,
            PgType::Int4 | PgType::Float4 | PgType::Void => 4,
            PgType::Int8 | PgType::Float8 => 8,
            PgType::Text | PgType::Varchar => -1,
        }
    }

    fn sql_name(self) -> &'static str {
        match self {
            PgType::Bool => "boolean",
            PgType::Int8 => "bigint",
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Text => "text",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Varchar => "character varying",
            PgType::Void => "void",
        }
    }
}

/// A value as the fake computes with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// Any float type.
    Float(f64),
    /// Text.
    Text(String),
    /// The `void` result.
    Void,
}

/// Wire format code for text.
pub const FORMAT_TEXT: i16 = 0;
/// Wire format code for binary.
pub const FORMAT_BINARY: i16 = 1;

impl Value {
    /// Converts to `target`, as an implicit or explicit cast would.
    pub fn cast(self, target: PgType) -> Result<Value, PgError> {
        match (self, target) {
            (Value::Null, _) => Ok(Value::Null),
            (Value::Void, PgType::Void) => Ok(Value::Void),
            (Value::Int(i), PgType::Int8) => Ok(Value::Int(i)),
            (Value::Int(i), PgType::Int4) => in_range(i, i64::from(i32::MIN), i64::from(i32::MAX)),
            (Value::Int(i), PgType::Int2) => in_range(i, i64::from(i16::MIN), i64::from(i16::MAX)),
            (Value::Int(i), PgType::Float4 | PgType::Float8) => Ok(Value::Float(i as f64)),
            (Value::Float(f), PgType::Float4 | PgType::Float8) => Ok(Value::Float(f)),
            (Value::Float(f), PgType::Int2 | PgType::Int4 | PgType::Int8) => {
                Value::Int(f.round() as i64).cast(target)
            }
            (Value::Bool(b), PgType::Bool) => Ok(Value::Bool(b)),
            (value, PgType::Text | PgType::Varchar) => Ok(Value::Text(value.to_text())),
            (Value::Text(text), target) => parse_text(&text, target),
            (value, target) => Err(PgError::new(
                "42846",
                format!("cannot cast {} to {}", value.describe(), target.sql_name()),
            )),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "double precision",
            Value::Text(_) => "text",
            Value::Void => "void",
        }
    }

    /// The text output form (`int4out`, `boolout`, ...).
    pub fn to_text(&self) -> String {
        match self {
            Value::Null | Value::Void => String::new(),
            Value::Bool(true) => "t".into(),
            Value::Bool(false) => "f".into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Text(t) => t.clone(),
        }
    }

    /// The value as a DataRow column in `format` for a column of type `ty`.
    pub fn encode(&self, ty: PgType, format: i16) -> Option<Bytes> {
        if *self == Value::Null {
            return None;
        }
        if format == FORMAT_TEXT {
            return Some(Bytes::from(self.to_text()));
        }
        Some(match (self, ty) {
            (Value::Int(i), PgType::Int2) => Bytes::copy_from_slice(&(*i as i16).to_be_bytes()),
            (Value::Int(i), PgType::Int4) => Bytes::copy_from_slice(&(*i as i32).to_be_bytes()),
            (Value::Int(i), _) => Bytes::copy_from_slice(&i.to_be_bytes()),
            (Value::Float(f), PgType::Float4) => Bytes::copy_from_slice(&(*f as f32).to_be_bytes()),
            (Value::Float(f), _) => Bytes::copy_from_slice(&f.to_be_bytes()),
            (Value::Bool(b), _) => Bytes::copy_from_slice(&[u8::from(*b)]),
            (Value::Void, _) | (Value::Null, _) => Bytes::new(),
            (Value::Text(t), _) => Bytes::from(t.clone()),
        })
    }

    /// The integer inside, or an error naming what was expected.
    pub fn as_int(&self, what: &str) -> Result<Option<i64>, PgError> {
        match self {
            Value::Null => Ok(None),
            Value::Int(i) => Ok(Some(*i)),
            other => Err(PgError::new(
                "42804",
                format!("{what} must be an integer, not {}", other.describe()),
            )),
        }
    }
}

fn in_range(value: i64, min: i64, max: i64) -> Result<Value, PgError> {
    if (min..=max).contains(&value) {
        Ok(Value::Int(value))
    } else {
        Err(PgError::new("22003", "integer out of range"))
    }
}

/// Postgres prints floats with the shortest exact representation (`extra_float_digits` 1).
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{value}")
    }
}

/// Parses text input for `target` (`int4in`, `boolin`, ...).
pub fn parse_text(text: &str, target: PgType) -> Result<Value, PgError> {
    let trimmed = text.trim();
    let invalid = || {
        PgError::new(
            "22P02",
            format!(
                "invalid input syntax for type {}: \"{text}\"",
                target.sql_name()
            ),
        )
    };
    match target {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => trimmed
            .parse::<i64>()
            .map_err(|_| invalid())
            .and_then(|i| Value::Int(i).cast(target)),
        PgType::Float4 | PgType::Float8 => trimmed
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| invalid()),
        PgType::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" | "y" => Ok(Value::Bool(true)),
            "f" | "false" | "no" | "off" | "0" | "n" => Ok(Value::Bool(false)),
            _ => Err(invalid()),
        },
        PgType::Text | PgType::Varchar => Ok(Value::Text(text.to_string())),
        PgType::Void => Ok(Value::Void),
    }
}

/// Decodes one Bind parameter of type `ty` sent in `format`.
pub fn decode_parameter(
    bytes: Option<&Bytes>,
    ty: PgType,
    format: i16,
    index: usize,
) -> Result<Value, PgError> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    if format == FORMAT_TEXT {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| PgError::new("22021", "invalid byte sequence for encoding \"UTF8\""))?;
        return parse_text(text, ty);
    }
    let wrong = || {
        PgError::new(
            "22P03",
            format!(
                "incorrect binary data format in bind parameter {}",
                index + 1
            ),
        )
    };
    match ty {
        PgType::Bool => match bytes.as_ref() {
            [b] => Ok(Value::Bool(*b != 0)),
            _ => Err(wrong()),
        },
        PgType::Int2 => fixed::<2>(bytes)
            .map(|b| Value::Int(i64::from(i16::from_be_bytes(b))))
            .ok_or_else(wrong),
        PgType::Int4 => fixed::<4>(bytes)
            .map(|b| Value::Int(i64::from(i32::from_be_bytes(b))))
            .ok_or_else(wrong),
        PgType::Int8 => fixed::<8>(bytes)
            .map(|b| Value::Int(i64::from_be_bytes(b)))
            .ok_or_else(wrong),
        PgType::Float4 => fixed::<4>(bytes)
            .map(|b| Value::Float(f64::from(f32::from_be_bytes(b))))
            .ok_or_else(wrong),
        PgType::Float8 => fixed::<8>(bytes)
            .map(|b| Value::Float(f64::from_be_bytes(b)))
            .ok_or_else(wrong),
        PgType::Text | PgType::Varchar => std::str::from_utf8(bytes)
            .map(|t| Value::Text(t.to_string()))
            .map_err(|_| PgError::new("22021", "invalid byte sequence for encoding \"UTF8\"")),
        PgType::Void => Ok(Value::Void),
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trips() {
        let four = Value::Int(-7).encode(PgType::Int4, FORMAT_BINARY);
        assert_eq!(
            decode_parameter(four.as_ref(), PgType::Int4, FORMAT_BINARY, 0),
            Ok(Value::Int(-7))
        );
        assert_eq!(
            Value::Bool(true).encode(PgType::Bool, FORMAT_TEXT),
            Some(Bytes::from("t"))
        );
        assert!(
            decode_parameter(Some(&Bytes::from("xx")), PgType::Int4, FORMAT_BINARY, 0).is_err()
        );
    }

    #[test]
    fn casts_check_ranges() {
        assert!(
            Value::Int(i64::from(i32::MAX) + 1)
                .cast(PgType::Int4)
                .is_err()
        );
        assert_eq!(
            Value::Text("42".into()).cast(PgType::Int8),
            Ok(Value::Int(42))
        );
        assert_eq!(
            Value::Text("x".into())
                .cast(PgType::Int4)
                .map_err(|e| e.code),
            Err("22P02")
        );
    }
}
