//! `dlq list --summary`: dead letters grouped by kind, class and error text, with counts and
//! the oldest and newest failure, so one glance says what broke.

use std::collections::HashMap;
use std::time::SystemTime;

use super::DeadLetter;

/// Distinct groups kept; past this, letters are counted in one "other" row. Error texts that
/// carry an id each would otherwise make the summary as large as the queue.
pub const MAX_GROUPS: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct GroupKey {
    pub kind: String,
    pub class: String,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub count: u64,
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
}

impl Group {
    fn add(&mut self, at: Option<SystemTime>) {
        self.count += 1;
        if let Some(at) = at {
            self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
            self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    groups: HashMap<GroupKey, Group>,
    other: Group,
}

/// One row of the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `None` for the row of letters past [`MAX_GROUPS`].
    pub key: Option<GroupKey>,
    pub group: Group,
}

impl Summary {
    pub fn add(&mut self, letter: &DeadLetter) {
        let key = GroupKey {
            kind: letter.kind.clone(),
            class: letter.note.class.clone(),
            error: letter.note.error.clone(),
        };
        let at = letter.failed_at();
        let full = self.groups.len() >= MAX_GROUPS;
        match self.groups.get_mut(&key) {
            Some(group) => group.add(at),
            None if full => self.other.add(at),
            None => self.groups.entry(key).or_default().add(at),
        }
    }

    /// Largest group first; ties by kind, class, error so the output is stable.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .groups
            .iter()
            .map(|(k, g)| Row {
                key: Some(k.clone()),
                group: g.clone(),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.group.count.cmp(&a.group.count).then_with(|| {
                a.key
                    .as_ref()
                    .map(key_order)
                    .cmp(&b.key.as_ref().map(key_order))
            })
        });
        if self.other.count > 0 {
            rows.push(Row {
                key: None,
                group: self.other.clone(),
            });
        }
        rows
    }
}

fn key_order(k: &GroupKey) -> (&str, &str, &str) {
    (&k.kind, &k.class, &k.error)
}

#[cfg(test)]
mod tests {
    use lapin::BasicProperties;
    use lapin::types::FieldTable;

    use super::*;
    use crate::queue::headers::{self, long_string};

    fn letter(kind: &str, class: &str, error: &str, at: &str) -> DeadLetter {
        let mut h = FieldTable::default();
        h.insert(headers::ERROR_CLASS.into(), long_string(class));
        h.insert(headers::ERROR.into(), long_string(error));
        h.insert(headers::LAST_FAILED_AT.into(), long_string(at));
        DeadLetter::new(
            b"{}".to_vec(),
            kind,
            BasicProperties::default().with_headers(h),
        )
    }

    fn secs(row: &Row) -> (u64, Option<u64>, Option<u64>) {
        let s = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        (row.group.count, s(row.group.oldest), s(row.group.newest))
    }

    #[test]
    fn groups_by_kind_class_and_error_largest_first() {
        let mut s = Summary::default();
        for l in [
            letter(
                "user.upserted",
                "permanent",
                "bad email",
                "1970-01-01T00:00:30Z",
            ),
            letter(
                "tenant.created",
                "exhausted",
                "HTTP 503",
                "1970-01-01T00:00:20Z",
            ),
            letter(
                "tenant.created",
                "exhausted",
                "HTTP 503",
                "1970-01-01T00:00:10Z",
            ),
            letter("tenant.created", "exhausted", "HTTP 503", "no time"),
            letter(
                "tenant.created",
                "permanent",
                "HTTP 503",
                "1970-01-01T00:00:40Z",
            ),
        ] {
            s.add(&l);
        }
        let rows = s.rows();
        let keys: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| r.key.as_ref().map(key_order).unwrap_or(("", "", "")))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("tenant.created", "exhausted", "HTTP 503"),
                ("tenant.created", "permanent", "HTTP 503"),
                ("user.upserted", "permanent", "bad email"),
            ]
        );
        assert_eq!(secs(&rows[0]), (3, Some(10), Some(20)));
        assert_eq!(secs(&rows[2]), (1, Some(30), Some(30)));
    }

    #[test]
    fn groups_past_the_cap_share_one_row() {
        let mut s = Summary::default();
        for n in 0..MAX_GROUPS + 5 {
            s.add(&letter(
                "k",
                "permanent",
                &format!("error {n}"),
                "1970-01-01T00:00:01Z",
            ));
        }
        s.add(&letter("k", "permanent", "error 3", "1970-01-01T00:00:02Z"));
        let rows = s.rows();
        assert_eq!(rows.len(), MAX_GROUPS + 1);
        assert_eq!(rows[0].group.count, 2, "a known group still grows");
        let last = rows.last().map(|r| (r.key.is_none(), r.group.count));
        assert_eq!(last, Some((true, 5)));
    }
}
