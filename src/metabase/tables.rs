use super::client::MetabaseClient;
use super::error::MetabaseError;
use super::models::{Database, DatabaseList, Table};

impl MetabaseClient {
    /// A table's database and schema: what addressing it in the data graph needs.
    pub async fn get_table(&self, id: i64) -> Result<Table, MetabaseError> {
        self.get(&format!("/api/table/{id}"), &[]).await
    }

    /// A table with its fields.
    pub async fn table_metadata(&self, id: i64) -> Result<Table, MetabaseError> {
        self.get(&format!("/api/table/{id}/query_metadata"), &[])
            .await
    }

    pub async fn list_databases(&self) -> Result<Vec<Database>, MetabaseError> {
        let list: DatabaseList = self.get("/api/database", &[]).await?;
        Ok(list.into_vec())
    }

    /// A database with its tables and their fields.
    pub async fn database_metadata(&self, id: i64) -> Result<Database, MetabaseError> {
        self.get(&format!("/api/database/{id}/metadata"), &[]).await
    }
}
