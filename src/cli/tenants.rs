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
    /// Create a tenant, or replace all its settings (each one left out
    /// follows the deployment's default; `update` changes only some).
    Put {
        name: String,
        #[command(flatten)]
        settings: SettingArgs,
    },
    /// Change some of a tenant's settings; the others stay as they are.
    Update {
        name: String,
        #[command(flatten)]
        settings: SettingArgs,
        /// Return a setting to the deployment's default (repeatable).
        #[arg(long, value_enum)]
        reset: Vec<Setting>,
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

/// A tenant's settings, as flags.
#[derive(clap::Args, Debug, Default)]
pub struct SettingArgs {
    /// Catalog its webhooks subscribe from; "" allows any event type.
    #[arg(long)]
    catalog: Option<String>,
    /// Webhooks it may create.
    #[arg(long)]
    max_webhooks: Option<usize>,
    /// Who may frame its portal pages (repeatable), e.g. `https://app.example.com`.
    #[arg(long = "frame-ancestor")]
    frame_ancestors: Vec<String>,
}

impl SettingArgs {
    /// The body's fields: only what was given.
    fn body(self) -> Value {
        let mut body = Map::new();
        if let Some(c) = self.catalog {
            body.insert("catalog".into(), c.into());
        }
        if let Some(m) = self.max_webhooks {
            body.insert("max_webhooks".into(), m.into());
        }
        if !self.frame_ancestors.is_empty() {
            body.insert("frame_ancestors".into(), self.frame_ancestors.into());
        }
        Value::Object(body)
    }
}

/// A tenant setting, as `--reset` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Setting {
    Catalog,
    MaxWebhooks,
    FrameAncestors,
}

impl Setting {
    fn field(self) -> &'static str {
        match self {
            Setting::Catalog => "catalog",
            Setting::MaxWebhooks => "max_webhooks",
            Setting::FrameAncestors => "frame_ancestors",
        }
    }
}

/// The body of `update`: what was given, and `null` for what is reset.
fn patch(body: Value, reset: &[Setting]) -> anyhow::Result<Value> {
    let Value::Object(mut body) = body else {
        unreachable!("settings are an object")
    };
    for setting in reset {
        if body.insert(setting.field().into(), Value::Null).is_some() {
            anyhow::bail!("--reset {} and a value for it: choose one", setting.field());
        }
    }
    if body.is_empty() {
        anyhow::bail!("nothing to change: give a setting, or --reset one");
    }
    Ok(Value::Object(body))
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
        TenantsCommand::Put { name, settings } => {
            let tenant = client
                .call(Method::PUT, &tenant_path(&name), Some(&settings.body()))
                .await?
                .unwrap_or_default();
            print(&tenant, api.json, tenant_table);
        }
        TenantsCommand::Update { name, settings, reset } => {
            let body = patch(settings.body(), &reset)?;
            let tenant = client
                .call(Method::PATCH, &tenant_path(&name), Some(&body))
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
    use super::{patch, Setting, SettingArgs};
    use serde_json::json;

    fn args(catalog: Option<&str>, max_webhooks: Option<usize>, frame_ancestors: &[&str]) -> SettingArgs {
        SettingArgs {
            catalog: catalog.map(Into::into),
            max_webhooks,
            frame_ancestors: frame_ancestors.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn only_the_settings_given_are_sent() {
        assert_eq!(args(None, None, &[]).body(), json!({}));
        assert_eq!(
            args(Some(""), Some(5), &["'self'"]).body(),
            json!({"catalog": "", "max_webhooks": 5, "frame_ancestors": ["'self'"]})
        );
    }

    #[test]
    fn an_update_sends_what_changes_and_null_for_what_is_reset() {
        assert_eq!(
            patch(args(None, Some(3), &[]).body(), &[Setting::Catalog]).unwrap(),
            json!({"max_webhooks": 3, "catalog": null})
        );
        assert!(patch(args(None, Some(3), &[]).body(), &[Setting::MaxWebhooks]).is_err());
        assert!(patch(args(None, None, &[]).body(), &[]).is_err());
    }
}
