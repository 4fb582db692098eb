//! Which dead letters a `dlq` command is about: every filter given must match (they narrow
//! together), and no filter means every letter.

use std::time::{Duration, SystemTime};

use super::{DeadLetter, parse_time};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Job ids; empty means any.
    pub ids: Vec<String>,
    /// The kind (the routing key it was published with), exactly.
    pub kind: Option<String>,
    /// `permanent`, `exhausted`, `delivery-limit` or `unknown`, exactly.
    pub class: Option<String>,
    /// A piece of the last error text, case-insensitively.
    pub error: Option<String>,
    /// The payload's `tenant_id` (or one user's, for `users.synced`), exactly.
    pub tenant: Option<String>,
    /// Last failed at or after this time (a letter without a readable time does not match).
    pub since: Option<SystemTime>,
    /// Last failed before this time.
    pub until: Option<SystemTime>,
}

impl Filter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let by_id = self.ids.is_empty() || self.ids.contains(&letter.id);
        let by_kind = self.kind.as_ref().is_none_or(|k| *k == letter.kind);
        let by_class = self.class.as_ref().is_none_or(|c| *c == letter.note.class);
        let by_error = self
            .error
            .as_ref()
            .is_none_or(|e| letter.note.error.to_lowercase().contains(&e.to_lowercase()));
        by_id && by_kind && by_class && by_error && self.by_time(letter) && self.by_tenant(letter)
    }

    fn by_time(&self, letter: &DeadLetter) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(at) = letter.failed_at() else {
            return false;
        };
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }

    /// Last, because it parses the body.
    fn by_tenant(&self, letter: &DeadLetter) -> bool {
        self.tenant
            .as_ref()
            .is_none_or(|t| letter.tenant_ids().contains(t))
    }
}

/// A `--since`/`--until` value: an RFC 3339 time (`2026-12-01T08:00:00Z`), or a duration back
/// from `now` (`90m`, `2h`, `7d`, as `humantime` reads them).
pub fn parse_when(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Some(at) = parse_time(text) {
        return Ok(at);
    }
    let ago: Duration = humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-12-01T08:00:00Z) nor a duration ago (2h, 7d)")
    })?;
    now.checked_sub(ago)
        .filter(|at| at.duration_since(SystemTime::UNIX_EPOCH).is_ok())
        .ok_or_else(|| format!("{text:?} reaches before 1970"))
}

#[cfg(test)]
mod tests {
    use lapin::BasicProperties;
    use lapin::types::FieldTable;

    use super::*;
    use crate::queue::headers::{self, long_string};

    fn letter(
        id: &str,
        kind: &str,
        class: &str,
        error: &str,
        at: &str,
        tenant: &str,
    ) -> DeadLetter {
        let mut h = FieldTable::default();
        h.insert(headers::ERROR_CLASS.into(), long_string(class));
        h.insert(headers::ERROR.into(), long_string(error));
        h.insert(headers::LAST_FAILED_AT.into(), long_string(at));
        h.insert(headers::ROUTING_KEY.into(), long_string(kind));
        let body = serde_json::json!({"id": id, "kind": kind, "payload": {"tenant_id": tenant}});
        DeadLetter::new(
            serde_json::to_vec(&body).unwrap_or_default(),
            kind,
            BasicProperties::default().with_headers(h),
        )
    }

    fn time(s: &str) -> Option<SystemTime> {
        parse_time(s)
    }

    #[test]
    fn every_given_filter_must_match() {
        let a = letter(
            "a",
            "tenant.created",
            "exhausted",
            "HTTP 503 from Metabase",
            "2026-12-01T10:00:00.000Z",
            "42",
        );
        let b = letter(
            "b",
            "user.upserted",
            "permanent",
            "payload.email: not an email",
            "2026-12-01T12:00:00.000Z",
            "7",
        );
        let f = |edit: fn(&mut Filter)| {
            let mut filter = Filter::default();
            edit(&mut filter);
            (filter.matches(&a), filter.matches(&b))
        };
        let table: [(&str, (bool, bool)); 12] = [
            ("none", f(|_| {})),
            ("id", f(|x| x.ids = vec!["b".into(), "zz".into()])),
            ("kind", f(|x| x.kind = Some("tenant.created".into()))),
            ("class", f(|x| x.class = Some("permanent".into()))),
            ("error, any case", f(|x| x.error = Some("http 503".into()))),
            ("error, nowhere", f(|x| x.error = Some("timeout".into()))),
            ("tenant", f(|x| x.tenant = Some("7".into()))),
            (
                "since, inclusive",
                f(|x| x.since = time("2026-12-01T12:00:00Z")),
            ),
            (
                "until, exclusive",
                f(|x| x.until = time("2026-12-01T12:00:00Z")),
            ),
            (
                "window",
                f(|x| {
                    x.since = time("2026-12-01T09:00:00Z");
                    x.until = time("2026-12-01T11:00:00Z");
                }),
            ),
            (
                "together",
                f(|x| {
                    x.kind = Some("tenant.created".into());
                    x.tenant = Some("7".into());
                }),
            ),
            (
                "prefix is not a kind",
                f(|x| x.kind = Some("tenant".into())),
            ),
        ];
        let want = [
            (true, true),
            (false, true),
            (true, false),
            (false, true),
            (true, false),
            (false, false),
            (false, true),
            (false, true),
            (true, false),
            (true, false),
            (false, false),
            (false, false),
        ];
        for ((name, got), want) in table.into_iter().zip(want) {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_letter_without_a_time_is_outside_every_time_window() {
        let l = letter("a", "k", "permanent", "e", "not a time", "1");
        let filter = Filter {
            until: time("2100-01-01T00:00:00Z"),
            ..Filter::default()
        };
        assert!(!filter.matches(&l));
        assert!(Filter::default().matches(&l));
    }

    #[test]
    fn when_is_a_time_or_a_duration_ago() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        let table = [
            ("1970-01-02T00:00:00Z", Ok(86_400)),
            ("2h", Ok(10 * 86_400 - 7_200)),
            ("7d", Ok(3 * 86_400)),
            ("11d", Err("before 1970")),
            ("soon", Err("neither")),
        ];
        for (text, want) in table {
            let got = parse_when(text, now).map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
            match want {
                Ok(secs) => assert_eq!(got, Ok(secs), "{text}"),
                Err(part) => assert!(got.unwrap_err().contains(part), "{text}"),
            }
        }
    }
}
