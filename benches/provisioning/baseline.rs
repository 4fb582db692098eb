//! The article's sequential provisioning pattern (`../shared/seed-article.txt`, "Full Tenant
//! Provisioning Pattern"), as the baseline mbprov is compared with: one tenant at a time, each
//! step a plain request, both permission graphs written by whole-graph read-modify-write.
//!
//! Per tenant (13 requests): find-or-create the group (GET groups, POST group), find-or-create
//! the user (GET user?query, POST user), set its attributes (PUT user), read its memberships
//! (GET user) and join the group (POST membership), find-or-create the collection (GET
//! collection, POST collection), `setCollectionPermission` (GET + PUT /api/collection/graph with
//! the whole graph) and `grantDatabaseAccess` (GET + PUT /api/permissions/graph, whole graph).

use std::time::Instant;

use serde_json::{Value, json};

use crate::stack::{API_KEY, BenchResult};

/// What the sequential run cost.
#[derive(Clone, Copy, Debug)]
pub struct Baseline {
    pub tenants: u32,
    pub seconds: f64,
    pub requests: u64,
}

impl Baseline {
    pub fn tenants_per_second(&self) -> f64 {
        f64::from(self.tenants) / self.seconds.max(1e-9)
    }
}

struct Api {
    http: reqwest::Client,
    url: String,
    requests: u64,
}

impl Api {
    async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> BenchResult<Value> {
        let url = format!("{}{path}", self.url);
        let req = match method {
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            _ => self.http.get(url),
        };
        let req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        self.requests += 1;
        let resp = req
            .header("x-api-key", API_KEY)
            .send()
            .await
            .map_err(|e| format!("baseline {method} {path}: {e}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("baseline {method} {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("baseline {method} {path}: {status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn id(v: &Value, what: &str) -> BenchResult<i64> {
    v["id"]
        .as_i64()
        .ok_or_else(|| format!("baseline: no id in the {what}"))
}

/// Provisions `tenants` new tenants (`seq-<n>`) one after the other, as the article does.
pub async fn run(emulator_url: &str, run_id: &str, tenants: u32) -> BenchResult<Baseline> {
    let mut api = Api {
        http: reqwest::Client::new(),
        url: emulator_url.to_string(),
        requests: 0,
    };
    let started = Instant::now();
    for n in 0..tenants {
        provision(&mut api, run_id, n).await?;
    }
    Ok(Baseline {
        tenants,
        seconds: started.elapsed().as_secs_f64(),
        requests: api.requests,
    })
}

async fn provision(api: &mut Api, run_id: &str, n: u32) -> BenchResult<()> {
    let tag = format!("seq-{run_id}-{n}");
    // 1. findOrCreateGroup
    let group_name = format!("Tenant: {tag}");
    let groups = api.call("GET", "/api/permissions/group", None).await?;
    let existing = groups.as_array().and_then(|gs| {
        gs.iter()
            .find(|g| g["name"] == group_name.as_str())
            .cloned()
    });
    let group = match existing {
        Some(g) => g,
        None => {
            api.call(
                "POST",
                "/api/permissions/group",
                Some(&json!({"name": group_name})),
            )
            .await?
        }
    };
    let group_id = id(&group, "group")?;
    // 2. findOrCreateUser, then its attributes
    let email = format!("admin@{tag}.test");
    let found = api
        .call("GET", &format!("/api/user?query={email}"), None)
        .await?;
    let existing = found["data"]
        .as_array()
        .and_then(|us| us.iter().find(|u| u["email"] == email.as_str()).cloned());
    let user = match existing {
        Some(u) => u,
        None => {
            api.call(
                "POST",
                "/api/user",
                Some(
                    &json!({"first_name": "Ada", "last_name": tag, "email": email,
                             "password": format!("{}-Pw-1!", uuid::Uuid::new_v4())}),
                ),
            )
            .await?
        }
    };
    let user_id = id(&user, "user")?;
    api.call(
        "PUT",
        &format!("/api/user/{user_id}"),
        Some(&json!({"login_attributes": {"organization_id": tag}})),
    )
    .await?;
    // 3. memberships, then join the group
    let detail = api
        .call("GET", &format!("/api/user/{user_id}"), None)
        .await?;
    let member = detail["user_group_memberships"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["id"] == group_id));
    if !member {
        api.call(
            "POST",
            "/api/permissions/membership",
            Some(&json!({"group_id": group_id, "user_id": user_id})),
        )
        .await?;
    }
    // 4. findOrCreateCollection under Shared (collection 2)
    let coll_name = format!("{tag} Dashboards");
    let colls = api.call("GET", "/api/collection", None).await?;
    let existing = colls
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == coll_name.as_str()).cloned());
    let coll = match existing {
        Some(c) => c,
        None => {
            api.call(
                "POST",
                "/api/collection",
                Some(&json!({"name": coll_name, "parent_id": 2})),
            )
            .await?
        }
    };
    let coll_id = id(&coll, "collection")?;
    // 5. setCollectionPermission: whole-graph read-modify-write
    let mut graph = api.call("GET", "/api/collection/graph", None).await?;
    graph["groups"][group_id.to_string()][coll_id.to_string()] = json!("read");
    api.call("PUT", "/api/collection/graph", Some(&graph))
        .await?;
    // 6. grantDatabaseAccess: whole-graph read-modify-write (database 1)
    let mut graph = api.call("GET", "/api/permissions/graph", None).await?;
    graph["groups"][group_id.to_string()]["1"] =
        json!({"view-data": "unrestricted", "create-queries": "query-builder"});
    api.call("PUT", "/api/permissions/graph", Some(&graph))
        .await?;
    Ok(())
}
