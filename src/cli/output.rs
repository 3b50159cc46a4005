//! What the admin CLI prints: aligned tables and field lists for people, the API's JSON
//! unchanged for scripts, and secrets shown once (with the warning on standard error).
//!
//! Text that came from the server is printed through [`clean`], so a name can never move
//! the cursor or change the terminal.

use std::io::Write;

use serde_json::Value;

use super::{Format, Result};

/// Writes `text` (plus a final newline when missing) to standard output.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// Writes a JSON answer exactly as received, as one line, to standard output.
pub fn json(body: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(body)?;
    if !body.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(())
}

/// Tells, on standard error, that the secret just printed is shown this once.
pub fn warn_shown_once(what: &str) {
    eprintln!(
        "warning: the {what} secret printed above is shown only this once and cannot be \
         shown again; store it now"
    );
}

/// `text` with control characters replaced by `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A JSON value as a table cell: strings as they are (cleaned), null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// A timestamp as a cell, without its fractional seconds (`2025-01-02T03:04:05Z`); null as
/// `none`.
pub fn time_or(value: &Value, none: &str) -> String {
    match value {
        Value::Null => none.to_string(),
        Value::String(s) => match (s.split_once('.'), s.ends_with('Z')) {
            (Some((seconds, _)), true) => format!("{}Z", clean(seconds)),
            _ => clean(s),
        },
        other => text(other),
    }
}

/// A vertical list of `label  value` lines, labels aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{label:<width$}  {value}\n"));
    }
    out
}

/// A table with a header line and aligned columns.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns two spaces apart, the last one not padded.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let pad = width.saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The items of a list answer (`field` of the object).
pub fn items<'a>(list: &'a Value, field: &str) -> &'a [Value] {
    list[field].as_array().map_or(&[], |v| v.as_slice())
}

/// Prints a list answer: unchanged as JSON, or its `field` items through `render`, with
/// the next page's cursor on standard error when there is one.
pub fn list(
    format: Format,
    body: &[u8],
    field: &str,
    render: fn(&[Value]) -> String,
) -> Result<()> {
    match format {
        Format::Json => json(body),
        Format::Table => {
            let page: Value = serde_json::from_slice(body)
                .map_err(|e| super::client::not_the_api(&e.to_string()))?;
            print(&render(items(&page, field)))?;
            for (cursor, flag) in [("next_after", "--after"), ("next_before", "--before")] {
                match &page[cursor] {
                    Value::String(next) => eprintln!("next page: {flag} {}", clean(next)),
                    Value::Number(next) => eprintln!("next page: {flag} {next}"),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// A shell word for `text`: as it is when it is made of safe characters, else in single
/// quotes.
pub fn shell_word(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./+=:,@%".contains(c));
    if safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let mut table = Table::new(&["ID", "NAME", "ROLE"]);
        table.row(vec!["1".into(), "chat-frontend".into(), "basic".into()]);
        table.row(vec!["22".into(), "é".into(), "admin".into()]);
        assert_eq!(
            table.render(),
            "ID  NAME           ROLE\n1   chat-frontend  basic\n22  é              admin\n"
        );
    }

    #[test]
    fn cells_clean_control_characters_and_shorten_times() {
        assert_eq!(text(&json!("a\u{1b}[2Jb")), "a?[2Jb");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&json!(3)), "3");
        assert_eq!(
            time_or(&json!("2025-01-02T03:04:05.123456Z"), "never"),
            "2025-01-02T03:04:05Z"
        );
        assert_eq!(time_or(&Value::Null, "never"), "never");
    }

    #[test]
    fn shell_words_quote_only_when_needed() {
        assert_eq!(
            shell_word("kl.local/log+ab12+AQx/="),
            "kl.local/log+ab12+AQx/="
        );
        assert_eq!(shell_word("my file"), "'my file'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
