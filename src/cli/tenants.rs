//! `herald tenants ...`: tenants and their tokens, through the management
//! API (admin tokens).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::api_client::{encode, query, query_suffix, ApiClient};
use super::tables::{print, tenant_table, tenants_table, tokens_table};
use super::ApiArgs;

/// `herald tenants` commands.
#[derive(Subcommand)]
pub enum TenantsCommand {
    /// List the tenants, configured and created (every page).
    List,
    /// Show one tenant: its settings, what applies, its webhooks.
    Show { name: String },
    /// Create a tenant, or replace its settings (each one left out follows
    /// the deployment's default).
    Put {
        name: String,
        /// Catalog its webhooks subscribe from; "" allows any event type.
        #[arg(long)]
        catalog: Option<String>,
        /// Webhooks it may create.
        #[arg(long)]
        max_webhooks: Option<usize>,
        /// Who may frame its portal pages (repeatable), e.g. https://app.example.com.
        #[arg(long = "frame-ancestor")]
        frame_ancestors: Vec<String>,
    },
    /// Delete a tenant without webhooks; its tokens stop working.
    Delete { name: String },
    /// Issue a token of the tenant; it is printed this once.
    IssueToken {
        tenant: String,
        /// The token's name, unique within the tenant.
        name: String,
        /// When it stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the tenant's tokens (never the tokens themselves).
    Tokens { tenant: String },
    /// Revoke one of the tenant's tokens, on every replica at once.
    RevokeToken { tenant: String, name: String },
}

/// The body of `put`: only what was given.
fn settings(catalog: Option<String>, max_webhooks: Option<usize>, frame_ancestors: Vec<String>) -> Value {
    let mut body = Map::new();
    if let Some(c) = catalog {
        body.insert("catalog".into(), c.into());
    }
    if let Some(m) = max_webhooks {
        body.insert("max_webhooks".into(), m.into());
    }
    if !frame_ancestors.is_empty() {
        body.insert("frame_ancestors".into(), frame_ancestors.into());
    }
    Value::Object(body)
}

/// Runs a `herald tenants` command.
pub async fn run(api: ApiArgs, command: TenantsCommand) -> anyhow::Result<()> {
    let client = ApiClient::new(&api.api_url, api.token)?;
    let tenant_path = |name: &str| format!("/v1/tenants/{}", encode(name));
    match command {
        TenantsCommand::List => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = format!("/v1/tenants{}", query_suffix(&query(&[("cursor", cursor.clone())])));
                let page = client.get(&path).await?;
                all.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            print(&json!({ "data": all }), api.json, tenants_table);
        }
        TenantsCommand::Show { name } => {
            print(&client.get(&tenant_path(&name)).await?, api.json, tenant_table);
        }
        TenantsCommand::Put {
            name,
            catalog,
            max_webhooks,
            frame_ancestors,
        } => {
            let body = settings(catalog, max_webhooks, frame_ancestors);
            let tenant = client
                .call(Method::PUT, &tenant_path(&name), Some(&body))
                .await?
                .unwrap_or_default();
            print(&tenant, api.json, tenant_table);
        }
        TenantsCommand::Delete { name } => {
            client.call(Method::DELETE, &tenant_path(&name), None).await?;
            println!("deleted tenant {name}");
        }
        TenantsCommand::IssueToken {
            tenant,
            name,
            expires_at,
        } => {
            let mut body = json!({ "name": name });
            if let Some(at) = expires_at {
                body["expires_at"] = at.into();
            }
            let path = format!("{}/tokens", tenant_path(&tenant));
            let issued = client.post(&path, Some(&body)).await?;
            print(&issued, api.json, |t| {
                format!(
                    "{}\n(token {} of tenant {}; shown once: store it now)",
                    t["token"].as_str().unwrap_or_default(),
                    t["name"].as_str().unwrap_or_default(),
                    t["tenant"].as_str().unwrap_or_default(),
                )
            });
        }
        TenantsCommand::Tokens { tenant } => {
            let path = format!("{}/tokens", tenant_path(&tenant));
            print(&client.get(&path).await?, api.json, tokens_table);
        }
        TenantsCommand::RevokeToken { tenant, name } => {
            let path = format!("{}/tokens/{}", tenant_path(&tenant), encode(&name));
            client.call(Method::DELETE, &path, None).await?;
            println!("revoked token {name} of tenant {tenant}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_settings_given_are_sent() {
        assert_eq!(super::settings(None, None, Vec::new()), serde_json::json!({}));
        assert_eq!(
            super::settings(Some(String::new()), Some(5), vec!["'self'".into()]),
            serde_json::json!({"catalog": "", "max_webhooks": 5, "frame_ancestors": ["'self'"]})
        );
    }
}
