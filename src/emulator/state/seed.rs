//! Pre-filled tenants for benchmarks of large instances, written straight into the state.

use serde::Serialize;

use super::groups::{GroupRec, entity_id};
use super::{ALL_USERS_GROUP, SHARED_COLLECTION, Sequences, State};
use crate::metabase::models::{CollectionAccess, CollectionKey, CreateQueries};

/// What one seeded tenant got.
#[derive(Clone, Debug, Serialize)]
pub struct SeededTenant {
    pub index: i64,
    pub group_id: i64,
    pub user_id: i64,
    pub collection_id: i64,
}

impl State {
    /// Adds `count` tenants, numbered after the ones seeded before: group `Seed Tenant i`, user
    /// `seed-i@example.test` in it, collection `Seed i Dashboards` under Shared readable by the
    /// group, and the group's data access to database 1 at `query-builder`. Each graph revision
    /// goes up once per call.
    pub fn seed_tenants(&mut self, count: i64) -> Vec<SeededTenant> {
        let mut out = Vec::new();
        let db1: Vec<i64> = self
            .catalog
            .database(1)
            .map(|d| d.tables.iter().map(|t| t.id).collect())
            .unwrap_or_default();
        for _ in 0..count {
            self.seeded_tenants += 1;
            let i = self.seeded_tenants;
            let group_id = Sequences::take(&mut self.seq.group);
            self.groups.insert(
                group_id,
                GroupRec {
                    id: group_id,
                    name: format!("Seed Tenant {i}"),
                    magic_group_type: None,
                    entity_id: entity_id(),
                },
            );
            self.data.copy_group(ALL_USERS_GROUP, group_id);
            let tables = self.data.tables.entry(group_id).or_default();
            for t in &db1 {
                let cell = tables.entry(*t).or_default();
                cell.view_data = crate::metabase::models::ViewData::Unrestricted;
                cell.create_queries = CreateQueries::QueryBuilder;
            }
            let user_id = self.insert_user_record(
                &format!("seed-{i}@example.test"),
                Some("Seed"),
                Some(&format!("User {i}")),
                None,
            );
            self.add_membership_unchecked(user_id, group_id);
            let collection_id = self.insert_collection_record(
                &format!("Seed {i} Dashboards"),
                None,
                Some(SHARED_COLLECTION),
                None,
            );
            self.collection_perms
                .entry(group_id)
                .or_default()
                .insert(CollectionKey::Id(collection_id), CollectionAccess::Read);
            out.push(SeededTenant {
                index: i,
                group_id,
                user_id,
                collection_id,
            });
        }
        if count > 0 {
            self.data_revision += 1;
            self.collection_revision += 1;
        }
        out
    }
}
