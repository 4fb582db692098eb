use std::collections::BTreeMap;

use reqwest::Method;

use super::client::{MetabaseClient, Replay};
use super::error::MetabaseError;
use super::models::{Group, GroupMember, Membership, NewGroup, NewMembership};

impl MetabaseClient {
    /// Every group, with `member_count`. O(groups): callers cache what they find.
    pub async fn list_groups(&self) -> Result<Vec<Group>, MetabaseError> {
        self.get("/api/permissions/group", &[]).await
    }

    /// One group with its active members and their membership ids.
    pub async fn get_group(&self, id: i64) -> Result<Group, MetabaseError> {
        self.get(&format!("/api/permissions/group/{id}"), &[]).await
    }

    /// 400 `A group with that name already exists.` when the name is taken in any case.
    pub async fn create_group(&self, name: &str) -> Result<Group, MetabaseError> {
        let body = NewGroup {
            name: name.to_string(),
        };
        // Never replayed after a lost answer: Metabase's uniqueness is a check before the
        // insert (`check-name-not-already-taken`), which a replay racing a still-running
        // original could pass too. The caller looks the name up instead.
        self.call(
            Method::POST,
            "/api/permissions/group",
            &[],
            Some(&body),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    pub async fn delete_group(&self, id: i64) -> Result<(), MetabaseError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/api/permissions/group/{id}"),
                &[],
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(())
    }

    /// Every membership of the instance, by user id.
    pub async fn list_memberships(
        &self,
    ) -> Result<BTreeMap<String, Vec<Membership>>, MetabaseError> {
        self.get("/api/permissions/membership", &[]).await
    }

    /// Adds a user to a group and answers with all members of the group. Check membership
    /// first: a duplicate insert is reported to fail with 500.
    pub async fn add_membership(
        &self,
        group_id: i64,
        user_id: i64,
    ) -> Result<Vec<GroupMember>, MetabaseError> {
        let body = NewMembership { group_id, user_id };
        self.call(
            Method::POST,
            "/api/permissions/membership",
            &[],
            Some(&body),
            Replay::OnlyIfUnsent,
        )
        .await
    }

    /// Removes one membership by its membership id (not the group id).
    pub async fn delete_membership(&self, membership_id: i64) -> Result<(), MetabaseError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/api/permissions/membership/{membership_id}"),
                &[],
                None::<&()>,
                Replay::Safe,
            )
            .await?;
        Ok(())
    }
}
