use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::Sandbox;

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Box<Sandbox>),
    Many(Vec<Sandbox>),
}

impl MetabaseClient {
    /// Sandboxes (`/api/mt/gtap`, EE), optionally of one group.
    pub async fn list_sandboxes(
        &self,
        group_id: Option<i64>,
    ) -> Result<Vec<Sandbox>, MetabaseError> {
        let query = group_id
            .map(|g| vec![("group_id", g.to_string())])
            .unwrap_or_default();
        self.get("/api/mt/gtap", &query).await
    }

    /// The sandbox of one (group, table), if any: with both filters Metabase answers one
    /// sandbox or `null` (`GET /api/mt/gtap`, ../shared/metabase-api.md §5). A list (a release
    /// that ignores one filter) is searched too, so the answer's shape cannot fail a write.
    pub async fn find_sandbox(
        &self,
        group_id: i64,
        table_id: i64,
    ) -> Result<Option<Sandbox>, MetabaseError> {
        let answer: Option<OneOrMany> = self
            .get(
                "/api/mt/gtap",
                &[
                    ("group_id", group_id.to_string()),
                    ("table_id", table_id.to_string()),
                ],
            )
            .await?;
        let candidates = match answer {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![*s],
            Some(OneOrMany::Many(list)) => list,
        };
        Ok(candidates
            .into_iter()
            .find(|s| s.group_id == Some(group_id) && s.table_id == Some(table_id)))
    }

    /// Gives every new sandbox (no `id`) whose (group, table) already has one that one's id,
    /// so that a data-graph write updates it instead of inserting a duplicate (a 500, unique
    /// constraint on (group, table), metabase#64460, ../shared/metabase-api.md §5). Needed after a write whose
    /// outcome is unknown: it may have inserted them. No request when every sandbox has an id.
    pub async fn adopt_existing_sandboxes(
        &self,
        sandboxes: &mut [Sandbox],
    ) -> Result<(), MetabaseError> {
        for s in sandboxes.iter_mut().filter(|s| s.id.is_none()) {
            let (Some(group), Some(table)) = (s.group_id, s.table_id) else {
                continue;
            };
            if let Some(existing) = self.find_sandbox(group, table).await? {
                s.id = existing.id;
            }
        }
        Ok(())
    }

    /// A duplicate (group, table) is a 500 in Metabase: list first.
    pub async fn create_sandbox(&self, sandbox: &Sandbox) -> Result<Sandbox, MetabaseError> {
        self.call(
            Method::POST,
            "/api/mt/gtap",
            &[],
            Some(sandbox),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    pub async fn delete_sandbox(&self, id: i64) -> Result<(), MetabaseError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/api/mt/gtap/{id}"),
                &[],
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_look_up_reads_every_answer_shape() {
        let one = r#"{"id": 3, "group_id": 5, "table_id": 10, "card_id": null, "attribute_remappings": {}}"#;
        let cases = [
            ("null", 0),
            (one, 1),
            (&*format!("[{one}, {one}]"), 2),
            ("[]", 0),
        ];
        for (body, n) in cases {
            let got: Option<OneOrMany> = serde_json::from_str(body).unwrap();
            let len = match got {
                None => 0,
                Some(OneOrMany::One(_)) => 1,
                Some(OneOrMany::Many(list)) => list.len(),
            };
            assert_eq!(len, n, "{body}");
        }
    }
}
