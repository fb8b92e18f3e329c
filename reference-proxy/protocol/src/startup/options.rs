//! The `options` startup parameter, read the way Postgres reads it.
//!
//! Both the proxy (which re-applies a client's startup settings on every pooled connection)
//! and the simulator's fake Postgres need it; this is the one implementation.

/// A word of `options` that is not a `-c name=value` / `--name=value` setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command-line argument for server process: {0}")]
pub struct InvalidOption(pub String);

impl InvalidOption {
    /// SQLSTATE Postgres reports for it (syntax_error).
    pub const SQLSTATE: &'static str = "42601";
}

/// Splits `options` like Postgres's `pg_split_opts` (whitespace separates words, a backslash
/// escapes the next character) and reads `-c name=value`, `-cname=value` and `--name=value`,
/// with dashes in names read as underscores.
pub fn parse_startup_options(options: &str) -> Result<Vec<(String, String)>, InvalidOption> {
    let mut settings = Vec::new();
    let mut words = split_words(options).into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest.to_string())
        } else {
            word.strip_prefix("-c").map(str::to_string)
        };
        let Some((name, value)) = assignment.as_deref().and_then(|a| a.split_once('=')) else {
            return Err(InvalidOption(word));
        };
        settings.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(settings)
}

fn split_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_parsed_like_postgres() {
        assert_eq!(
            parse_startup_options(
                "-c search_path=app -csynchronous_commit=off --work-mem=64MB -c a=b\\ c"
            ),
            Ok(vec![
                ("search_path".to_string(), "app".to_string()),
                ("synchronous_commit".to_string(), "off".to_string()),
                ("work_mem".to_string(), "64MB".to_string()),
                ("a".to_string(), "b c".to_string()),
            ])
        );
        assert_eq!(parse_startup_options("-x"), Err(InvalidOption("-x".into())));
        assert_eq!(parse_startup_options("   "), Ok(vec![]));
    }
}
