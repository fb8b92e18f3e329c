//! The normalizer: removes from a trace exactly what legitimately differs between two correct
//! endpoints, and nothing else. Each rule below says why it is legitimate; the README repeats
//! the list for reviewers. Everything not named here must match byte for byte.

use crate::runner::Line;
use elephant_protocol::{BackendMessage, ErrorFields, PgString};

/// Fields of ErrorResponse / NoticeResponse that locate the message in the server's source
/// code (file, line, routine). They identify the server build, not the protocol behaviour:
/// two Postgres packages (native vs container) or the fake differ here while answering alike.
const SOURCE_LOCATION_FIELDS: [char; 3] = ['F', 'L', 'R'];

/// ParameterStatus values that describe the server build rather than the session.
const SERVER_SPECIFIC_PARAMETERS: [&str; 1] = ["server_version"];

/// Applies every rule and renders the trace as text, one line per message.
pub fn normalize(lines: &[Line]) -> String {
    let mut lines: Vec<Line> = lines.to_vec();
    sort_startup_parameters(&mut lines);
    let rendered: Vec<String> = lines
        .iter()
        .map(|line| {
            let text = match &line.message {
                Some(message) => normalize_message(message),
                None => normalize_line(&line.text),
            };
            match line.connection.as_str() {
                "main" => text,
                other => format!("[{other}] {text}"),
            }
        })
        .collect();
    rendered.join("\n")
}

/// Rules on one backend message: error and notice fields are edited before rendering (a long
/// message is rendered only as a hash, so a port inside it could not be masked afterwards).
pub fn normalize_message(message: &BackendMessage) -> String {
    let edit = |fields: &ErrorFields| ErrorFields {
        fields: fields
            .fields
            .iter()
            .filter(|(code, _)| !SOURCE_LOCATION_FIELDS.contains(&char::from(*code)))
            .map(|(code, value)| match value.as_str() {
                Some(text) => (*code, PgString::from(ephemeral_ports(text))),
                None => (*code, value.clone()),
            })
            .collect(),
    };
    match message {
        BackendMessage::ErrorResponse(fields) => {
            format!("B {}", BackendMessage::ErrorResponse(edit(fields)))
        }
        BackendMessage::NoticeResponse(fields) => {
            format!("B {}", BackendMessage::NoticeResponse(edit(fields)))
        }
        other => normalize_line(&format!("B {other}")),
    }
}

/// Rules on one line.
pub fn normalize_line(text: &str) -> String {
    if let Some(rest) = text.strip_prefix("B BackendKeyData pid=") {
        // Process ids are assigned by the operating system (and by the proxy, which issues
        // its own keys): they differ on every run. The key itself is never rendered.
        let key = rest.split_once(' ').map_or("", |(_, key)| key);
        return format!("B BackendKeyData pid=<pid> {key}");
    }
    if text.starts_with("B NotificationResponse pid=") {
        return replace_number_after(text, "pid=", "<pid>");
    }
    if let Some(rest) = text.strip_prefix("B ParameterStatus ")
        && let Some((name, _)) = rest.split_once('=')
        && SERVER_SPECIFIC_PARAMETERS.contains(&name)
    {
        return format!("B ParameterStatus {name}=<{name}>");
    }
    if text == "B ParameterStatus TimeZone=\"Etc/UTC\"" {
        // "Etc/UTC" and "UTC" name the same zone; a server's default TimeZone is spelled as
        // its host's zone database spells it at initdb (the fake says "UTC"). Other zones, and
        // every zone a session sets, stay as they are.
        return "B ParameterStatus TimeZone=\"UTC\"".to_string();
    }
    if text.starts_with("B AuthenticationSASL ") {
        // SCRAM-SHA-256-PLUS (channel binding) is offered only on TLS connections: which
        // mechanisms are listed depends on the transport of the arm, not on the server.
        return text.replace("\"SCRAM-SHA-256-PLUS\", ", "");
    }
    if text.starts_with("B RowDescription ") {
        // Table OIDs are assigned by the cluster in creation order; another cluster (the
        // container, the fake) or a different subset of transcripts gives other numbers.
        // Whether a column comes from a table (non-zero) stays visible.
        return replace_nonzero_numbers_after(text, "table=", "<oid>");
    }
    if text.starts_with("B ErrorResponse ") || text.starts_with("B NoticeResponse ") {
        let mut text = text.to_string();
        for code in SOURCE_LOCATION_FIELDS {
            text = strip_field(&text, code);
        }
        return ephemeral_ports(&text);
    }
    text.to_string()
}

/// Sorts each run of ParameterStatus lines of a login by name: Postgres sends them in its
/// GUC table's order and a proxy that keeps them in a map may send another; the protocol gives
/// the order no meaning. Later ParameterStatus messages (after SET) keep their place.
fn sort_startup_parameters(lines: &mut [Line]) {
    let is_parameter = |l: &Line| l.startup && l.text.starts_with("B ParameterStatus ");
    let mut start = 0;
    while start < lines.len() {
        if !is_parameter(&lines[start]) {
            start += 1;
            continue;
        }
        let connection = lines[start].connection.clone();
        let mut end = start;
        while end < lines.len() && is_parameter(&lines[end]) && lines[end].connection == connection
        {
            end += 1;
        }
        lines[start..end].sort_by_key(|l| l.text.to_ascii_lowercase());
        start = end;
    }
}

/// Removes ` C="..."` (one field of a rendered error) from `text`.
fn strip_field(text: &str, code: char) -> String {
    let marker = format!(" {code}=\"");
    let Some(start) = text.find(&marker) else {
        return text.to_string();
    };
    let value_start = start + marker.len();
    let mut escaped = false;
    for (offset, c) in text[value_start..].char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                let end = value_start + offset + 1;
                return format!("{}{}", &text[..start], &text[end..]);
            }
            _ => escaped = false,
        }
    }
    text.to_string()
}

/// Values chosen per run that messages may name: loopback port numbers (the tunnel URL the
/// proxy reports; chosen by the kernel) and per-run directories under the system's temporary
/// directory (the test PKI's CA file, which the proxy names when the tunnel certificate does
/// not verify, lives in `elephant-pki-XXXXXX`).
fn ephemeral_ports(text: &str) -> String {
    let mut out = text.to_string();
    for host in ["localhost:", "127.0.0.1:"] {
        out = replace_number_after(&out, host, "<port>");
    }
    let marker = format!("{}/", std::env::temp_dir().display());
    let mut masked = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(index) = rest.find(&marker) {
        masked.push_str(&rest[..index]);
        masked.push_str("<tmpdir>");
        rest = rest[index + marker.len()..]
            .trim_start_matches(|c: char| c != '/' && c != '"' && !c.is_whitespace());
    }
    masked.push_str(rest);
    masked
}

fn replace_number_after(text: &str, marker: &str, replacement: &str) -> String {
    replace_numbers(text, marker, replacement, |_| true)
}

fn replace_nonzero_numbers_after(text: &str, marker: &str, replacement: &str) -> String {
    replace_numbers(text, marker, replacement, |digits| {
        digits.bytes().any(|b| b != b'0')
    })
}

fn replace_numbers(
    text: &str,
    marker: &str,
    replacement: &str,
    replace: impl Fn(&str) -> bool,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find(marker) {
        let after = index + marker.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let digits = &rest[..digits_len];
        if digits_len > 0 && replace(digits) {
            out.push_str(replacement);
        } else {
            out.push_str(digits);
        }
        rest = &rest[digits_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, startup: bool) -> Line {
        Line {
            connection: "main".into(),
            startup,
            text: text.into(),
            message: None,
        }
    }

    #[test]
    fn only_the_named_differences_are_removed() {
        assert_eq!(
            normalize_line("B BackendKeyData pid=4242 key=<redacted 4 bytes>"),
            "B BackendKeyData pid=<pid> key=<redacted 4 bytes>"
        );
        assert_eq!(
            normalize_line(
                "B ErrorResponse S=\"ERROR\" C=\"42703\" M=\"say \\\"F=\\\"\" P=\"8\" F=\"parse_relation.c\" L=\"3666\" R=\"errorMissingColumn\""
            ),
            "B ErrorResponse S=\"ERROR\" C=\"42703\" M=\"say \\\"F=\\\"\" P=\"8\""
        );
        assert_eq!(
            normalize_line(
                "B RowDescription [\"a\" type=23 size=4 mod=-1 format=0 table=16390 column=1, \"b\" type=23 size=4 mod=-1 format=0 table=0 column=0]"
            ),
            "B RowDescription [\"a\" type=23 size=4 mod=-1 format=0 table=<oid> column=1, \"b\" type=23 size=4 mod=-1 format=0 table=0 column=0]"
        );
        assert_eq!(
            ephemeral_ports(&format!(
                "dial localhost:43121 with CA {}/elephant-pki-Ab12Cd/ca.pem",
                std::env::temp_dir().display()
            )),
            "dial localhost:<port> with CA <tmpdir>/ca.pem"
        );
        let untouched = "B DataRow [\"pid=4242\", \"server_version\"]";
        assert_eq!(normalize_line(untouched), untouched);
        assert_eq!(
            normalize_line("B ParameterStatus server_version=\"15.4\""),
            "B ParameterStatus server_version=<server_version>"
        );
        assert_eq!(
            normalize_line("B ParameterStatus application_name=\"x\""),
            "B ParameterStatus application_name=\"x\""
        );
    }

    #[test]
    fn startup_parameters_are_sorted_but_later_ones_keep_their_place() {
        let lines = vec![
            line("B ParameterStatus b=\"1\"", true),
            line("B ParameterStatus a=\"1\"", true),
            line("B ReadyForQuery I", true),
            line("B ParameterStatus z=\"1\"", false),
            line("B ParameterStatus y=\"1\"", false),
        ];
        assert_eq!(
            normalize(&lines),
            "B ParameterStatus a=\"1\"\nB ParameterStatus b=\"1\"\nB ReadyForQuery I\nB ParameterStatus z=\"1\"\nB ParameterStatus y=\"1\""
        );
    }
}
