//! What `dlq` prints: list rows (tab-separated or JSON), the summary table, one letter in full.

use std::io::Write;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::queue::dead_letters::DeadLetter;
use crate::queue::dead_letters::summary::Summary;
use crate::queue::headers;

pub(super) fn list_row(
    out: &mut impl Write,
    l: &DeadLetter,
    as_json: bool,
    first: bool,
) -> std::io::Result<()> {
    if as_json {
        let row = json!({
            "id": l.id,
            "kind": l.kind,
            "attempts": l.note.attempts,
            "error_class": l.note.class,
            "error": l.note.error,
            "failed_at": l.note.last_failed_at,
        });
        let sep = if first { "" } else { "," };
        return write!(out, "{sep}{row}");
    }
    writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}\t{}",
        l.id,
        l.kind,
        l.note.attempts,
        l.note.class,
        l.note.last_failed_at.as_deref().unwrap_or("-"),
        one_line(&l.note.error),
    )
}

pub(super) fn print_summary(
    out: &mut impl Write,
    summary: &Summary,
    as_json: bool,
) -> std::io::Result<()> {
    let time = |t: Option<SystemTime>| t.map(headers::rfc3339);
    let rows = summary.rows();
    if as_json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let (kind, class, error) = match &r.key {
                    Some(k) => (json!(k.kind), json!(k.class), json!(k.error)),
                    None => (Value::Null, Value::Null, json!("(other errors)")),
                };
                json!({
                    "kind": kind, "error_class": class, "error": error,
                    "count": r.group.count,
                    "oldest": time(r.group.oldest), "newest": time(r.group.newest),
                })
            })
            .collect();
        return writeln!(out, "{}", Value::Array(rows));
    }
    writeln!(out, "COUNT\tKIND\tCLASS\tOLDEST\tNEWEST\tERROR")?;
    for r in rows {
        let (kind, class, error) = match &r.key {
            Some(k) => (k.kind.as_str(), k.class.as_str(), one_line(&k.error)),
            None => ("*", "*", "(other errors)".to_owned()),
        };
        writeln!(
            out,
            "{}\t{kind}\t{class}\t{}\t{}\t{error}",
            r.group.count,
            time(r.group.oldest).as_deref().unwrap_or("-"),
            time(r.group.newest).as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

pub(super) fn show(letter: &DeadLetter) -> Value {
    let envelope = serde_json::from_slice::<Value>(&letter.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&letter.body).into_owned()));
    json!({
        "id": letter.id,
        "kind": letter.kind,
        "error_class": letter.note.class,
        "error": letter.note.error,
        "attempts": letter.note.attempts,
        "failed_at": letter.note.last_failed_at,
        "message_id": letter.properties.message_id().as_ref().map(|m| m.to_string()),
        "envelope": envelope,
        "headers": headers::to_json(&letter.headers),
    })
}
