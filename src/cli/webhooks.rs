//! `herald webhooks ...`: webhooks managed through the management API.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use super::api_client::{encode, query, query_suffix, ApiClient};
use super::deliveries::follow_replay;
use super::tables::{print, secret_table, webhook_table, webhooks_table};
use super::{parse_header, ApiArgs};

/// A webhook's own limits.
#[derive(clap::Args, Default)]
pub struct LimitArgs {
    /// Concurrent requests to this endpoint (may lower delivery.max_in_flight_per_endpoint).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Request deadline for this endpoint, in milliseconds (may lower delivery.request_timeout).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Statuses that end a delivery without retries: `400,422`; `none` retries
    /// every failure; `default` follows retry.final_statuses. 410 is always final.
    #[arg(long, value_parser = parse_final_statuses)]
    final_statuses: Option<FinalStatuses>,
    /// Requests a second at most, over every replica (fractional allowed:
    /// 0.0167 is about one a minute); `none` removes the webhook's own rate
    /// (delivery.default_rate applies then).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<Rate>,
    /// Requests that may go at once after a quiet time, with --rate (1 when
    /// not given).
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
}

/// `--rate`.
#[derive(Clone, Debug)]
pub enum Rate {
    None,
    PerSecond(f64),
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    match s.trim() {
        "none" => Ok(Rate::None),
        n => n
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(Rate::PerSecond)
            .ok_or_else(|| format!("`{n}` is not a number of requests a second (or `none`)")),
    }
}

/// `--final-statuses`.
#[derive(Clone, Debug)]
pub enum FinalStatuses {
    Default,
    These(Vec<u16>),
}

fn parse_final_statuses(s: &str) -> Result<FinalStatuses, String> {
    match s.trim() {
        "default" => Ok(FinalStatuses::Default),
        "none" => Ok(FinalStatuses::These(Vec::new())),
        list => list
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (300..=599).contains(c))
                    .ok_or_else(|| format!("`{c}` is not an HTTP status from 300 to 599"))
            })
            .collect::<Result<Vec<u16>, String>>()
            .map(FinalStatuses::These),
    }
}

impl LimitArgs {
    fn given(&self) -> bool {
        self.max_in_flight.is_some()
            || self.timeout_ms.is_some()
            || self.final_statuses.is_some()
            || self.rate.is_some()
    }

    /// `limits` with these flags applied.
    fn apply(&self, limits: &mut serde_json::Map<String, Value>) {
        if let Some(n) = self.max_in_flight {
            limits.insert("max_in_flight".into(), n.into());
        }
        if let Some(ms) = self.timeout_ms {
            limits.insert("timeout_ms".into(), ms.into());
        }
        match &self.final_statuses {
            None => {}
            Some(FinalStatuses::Default) => {
                limits.remove("final_statuses");
            }
            Some(FinalStatuses::These(codes)) => {
                limits.insert("final_statuses".into(), codes.clone().into());
            }
        }
        match self.rate {
            None => {}
            Some(Rate::None) => {
                limits.remove("rate");
            }
            Some(Rate::PerSecond(per_second)) => {
                let mut rate = json!({ "per_second": per_second });
                if let Some(burst) = self.burst {
                    rate["burst"] = burst.into();
                }
                limits.insert("rate".into(), rate);
            }
        }
    }
}

/// `--client-cert` and `--client-key`: a client certificate for receivers
/// that require one (mutual TLS).
#[derive(clap::Args, Default)]
pub struct ClientCertArgs {
    /// PEM file of the client certificate (then any intermediates) presented
    /// to a receiver that requires one, with --client-key; `none` removes
    /// the webhook's certificate (update).
    #[arg(long, value_name = "FILE")]
    client_cert: Option<String>,
    /// PEM file of the client certificate's private key (unencrypted); it is
    /// stored like a secret and never shown.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl ClientCertArgs {
    /// `tls_client` as the API takes it: the files' contents, JSON `null`
    /// for `none`, nothing when not given.
    fn value(&self) -> anyhow::Result<Option<Value>> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
        };
        match (self.client_cert.as_deref(), &self.client_key) {
            (None, _) => Ok(None),
            (Some("none"), None) => Ok(Some(Value::Null)),
            (Some("none"), Some(_)) => {
                anyhow::bail!("--client-cert none removes the certificate: give no --client-key")
            }
            (Some(_), None) => anyhow::bail!("--client-cert needs --client-key (the certificate's private key)"),
            (Some(certificate), Some(key)) => Ok(Some(json!({
                "certificate": read(std::path::Path::new(certificate))?,
                "key": read(key)?,
            }))),
        }
    }
}

/// `--filter`: a payload filter as JSON, or `none` (JSON `null`: no filter).
fn parse_filter(s: &str) -> Result<Value, String> {
    if s.trim() == "none" {
        return Ok(Value::Null);
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(
            "a filter is a JSON object of pointers to conditions, e.g. '{\"/amount\": {\">\": 100}}', or `none`".into(),
        ),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// `--ordering`: `key` (the Kafka record key), a JSON pointer into the
/// body (a value beginning with `/`) for the value there, or `none` (JSON
/// `null`: no ordering). The API checks the pointer.
fn parse_ordering(s: &str) -> Result<Value, String> {
    match s.trim() {
        "none" => Ok(Value::Null),
        "key" => Ok(Value::from("key")),
        _ if s.starts_with('/') => Ok(json!({ "key": s })),
        other => Err(format!(
            "`{other}` is no ordering: `key` (the Kafka record key), a JSON pointer into the body such as `/data/customer_id`, or `none`"
        )),
    }
}

/// `herald webhooks` commands.
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Create a webhook from flags, or from a JSON file with the API's create body.
    Create {
        #[arg(long, required_unless_present = "file")]
        name: Option<String>,
        #[arg(long, required_unless_present = "file")]
        url: Option<String>,
        /// Event type pattern (repeatable): `tour.completed`, `tour.*`, `*`.
        #[arg(long = "event", required_unless_present = "file")]
        events: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Extra request header, as NAME=VALUE (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// The signing secret (`whsec_...`); generated when absent.
        #[arg(long)]
        secret: Option<String>,
        /// The webhook's id (admin tokens only); generated when absent.
        #[arg(long)]
        id: Option<String>,
        /// A name of your own for the webhook, unique within its tenant
        /// (usable in place of the id with a tenant token).
        #[arg(long)]
        uid: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Payload filter, as JSON: only events whose body passes it are
        /// delivered, e.g. '{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}'
        /// (operators = != in not_in > >= < <= exists; docs/subscriptions.md).
        #[arg(long, value_parser = parse_filter)]
        filter: Option<Value>,
        #[command(flatten)]
        client_cert: ClientCertArgs,
        /// Ordered delivery: events with the same key reach the webhook one
        /// at a time, in their partition's order, retries included. `key`
        /// orders by the Kafka record key; a JSON pointer such as
        /// /data/customer_id by the value there in the body
        /// (docs/subscriptions.md#ordered-delivery).
        #[arg(long, value_name = "key|/POINTER", value_parser = parse_ordering)]
        ordering: Option<Value>,
        /// JSON file holding the create body (flags override its fields).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List webhooks (every page with --all).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// active, paused or disabled.
        #[arg(long)]
        status: Option<String>,
        /// Only webhooks receiving this event type.
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one webhook.
    Get { id: String },
    /// Change a webhook's name, URL, events, headers, limits, filter, client certificate or ordering.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: Option<String>,
        /// Replaces the event patterns (repeatable).
        #[arg(long = "event")]
        events: Vec<String>,
        /// Replaces the headers (repeatable): NAME=VALUE sets one, NAME alone
        /// keeps its stored value (values are write-only); a header not
        /// named is removed.
        #[arg(long = "header", value_parser = parse_header_change)]
        headers: Vec<(String, Option<String>)>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Replaces the payload filter (JSON, as for create); `none` removes it.
        #[arg(long, value_parser = parse_filter)]
        filter: Option<Value>,
        #[command(flatten)]
        client_cert: ClientCertArgs,
        /// Replaces the ordering (`key` or a JSON pointer, as for create);
        /// `none` removes it.
        #[arg(long, value_name = "key|/POINTER|none", value_parser = parse_ordering)]
        ordering: Option<Value>,
    },
    /// Pause deliveries (they are kept for a replay on resume).
    Pause { id: String },
    /// Resume deliveries.
    Resume {
        id: String,
        /// Re-deliver what was kept during this pause or disablement, and follow the replay.
        #[arg(long)]
        replay: bool,
    },
    /// Delete a webhook.
    Delete { id: String },
    /// Show the signing secret(s).
    Secret { id: String },
    /// Rotate the signing secret; the previous one keeps signing for admin.secret_rotation_overlap.
    RotateSecret {
        id: String,
        /// The new secret; generated when absent.
        #[arg(long)]
        secret: Option<String>,
    },
}

/// A header of `update`: `NAME=VALUE` sets it, `NAME` keeps its stored value.
fn parse_header_change(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some((name, value)) => Ok((name.to_owned(), Some(value.to_owned()))),
        None if !s.is_empty() => Ok((s.to_owned(), None)),
        None => Err("a header needs a NAME (NAME=VALUE sets it, NAME keeps its value)".to_owned()),
    }
}

/// Runs one `herald webhooks` command, printing its outcome.
pub async fn run(api: ApiArgs, command: WebhooksCommand) -> anyhow::Result<()> {
    let client = ApiClient::new(&api.api_url, api.token)?;
    let headers_json = |headers: Vec<(String, String)>| {
        Value::Object(headers.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    };
    let one = |v: &Value| print(v, api.json, webhook_table);
    match command {
        WebhooksCommand::Create {
            name,
            url,
            events,
            tenant,
            headers,
            secret,
            id,
            uid,
            limits,
            filter,
            client_cert,
            ordering,
            file,
        } => {
            let tls_client = client_cert.value()?;
            let mut body = match file {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?
                }
                None => json!({}),
            };
            let obj = body
                .as_object_mut()
                .ok_or_else(|| anyhow::anyhow!("the create body must be a JSON object"))?;
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    obj.insert(k.to_owned(), v);
                }
            };
            set("name", name.map(Value::from));
            set("url", url.map(Value::from));
            set("events", (!events.is_empty()).then(|| Value::from(events)));
            set("tenant", tenant.map(Value::from));
            set("headers", (!headers.is_empty()).then(|| headers_json(headers)));
            set("secret", secret.map(Value::from));
            set("id", id.map(Value::from));
            set("uid", uid.map(Value::from));
            set("filter", filter);
            set("tls_client", tls_client);
            set("ordering", ordering);
            if limits.given() {
                let mut current = obj
                    .get("limits")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                limits.apply(&mut current);
                obj.insert("limits".into(), Value::Object(current));
            }
            one(&client.post("/v1/webhooks", Some(&body)).await?);
        }
        WebhooksCommand::List {
            tenant,
            status,
            event,
            limit,
            all,
        } => {
            let query = query(&[
                ("tenant", tenant),
                ("status", status),
                ("event", event),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let mut data = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query.clone();
                if let Some(c) = &cursor {
                    q.push(format!("cursor={}", encode(c)));
                }
                let page = client.get(&format!("/v1/webhooks{}", query_suffix(&q))).await?;
                data.extend(page["data"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if !all || cursor.is_none() {
                    break;
                }
            }
            let page = json!({"data": data, "next_cursor": cursor});
            print(&page, api.json, webhooks_table);
            if !api.json {
                if let Some(c) = cursor {
                    eprintln!("more: --all, or the API with cursor={c}");
                }
            }
        }
        WebhooksCommand::Get { id } => one(&client.get(&format!("/v1/webhooks/{}", encode(&id))).await?),
        WebhooksCommand::Update {
            id,
            name,
            url,
            events,
            headers,
            limits,
            filter,
            client_cert,
            ordering,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(ordering) = ordering {
                body.insert("ordering".into(), ordering);
            }
            if let Some(tls_client) = client_cert.value()? {
                body.insert("tls_client".into(), tls_client);
            }
            if let Some(filter) = filter {
                body.insert("filter".into(), filter);
            }
            if limits.given() {
                // The API replaces limits whole: change only what was asked.
                let current = client.get(&format!("/v1/webhooks/{}", encode(&id))).await?;
                let mut merged = current["limits"].as_object().cloned().unwrap_or_default();
                limits.apply(&mut merged);
                body.insert("limits".into(), Value::Object(merged));
            }
            if let Some(name) = name {
                body.insert("name".into(), name.into());
            }
            if let Some(url) = url {
                body.insert("url".into(), url.into());
            }
            if !events.is_empty() {
                body.insert("events".into(), events.into());
            }
            if !headers.is_empty() {
                let kept_or_set = headers
                    .into_iter()
                    .map(|(k, v)| (k, v.map_or(Value::Null, Value::String)));
                body.insert("headers".into(), Value::Object(kept_or_set.collect()));
            }
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: pass --name, --url, --event, --header, --max-in-flight, --timeout-ms, --final-statuses, --rate, --filter, --client-cert or --ordering"
                );
            }
            let path = format!("/v1/webhooks/{}", encode(&id));
            let v = client
                .call(reqwest::Method::PATCH, &path, Some(&Value::Object(body)))
                .await?;
            one(&v.unwrap_or(Value::Null));
        }
        WebhooksCommand::Pause { id } => one(&client
            .post(&format!("/v1/webhooks/{}/pause", encode(&id)), None)
            .await?),
        WebhooksCommand::Resume { id, replay } => {
            let body = json!({ "replay": replay });
            let resumed = client
                .post(&format!("/v1/webhooks/{}/resume", encode(&id)), Some(&body))
                .await?;
            if api.json {
                print(&resumed, true, |_| String::new());
            } else {
                one(&resumed["webhook"]);
            }
            if let Some(job_id) = resumed["replay"]["id"].as_str() {
                follow_replay(&client, job_id).await?;
            }
        }
        WebhooksCommand::Delete { id } => {
            client
                .call(reqwest::Method::DELETE, &format!("/v1/webhooks/{}", encode(&id)), None)
                .await?;
            println!("deleted webhook {id}");
        }
        WebhooksCommand::Secret { id } => {
            let v = client.get(&format!("/v1/webhooks/{}/secret", encode(&id))).await?;
            print(&v, api.json, secret_table);
        }
        WebhooksCommand::RotateSecret { id, secret } => {
            let body = secret.map(|s| json!({ "secret": s }));
            let v = client
                .post(&format!("/v1/webhooks/{}/secret", encode(&id)), body.as_ref())
                .await?;
            print(&v, api.json, secret_table);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::{json, Value};

    use super::*;
    use crate::cli::{Cli, Command};

    fn parsed(args: &[&str]) -> Result<WebhooksCommand, clap::Error> {
        let cli = Cli::try_parse_from([&["herald", "webhooks"], args].concat())?;
        match cli.command {
            Command::Webhooks { command, .. } => Ok(*command),
            _ => unreachable!("a webhooks command"),
        }
    }

    fn ordering_of(args: &[&str]) -> Option<Value> {
        match parsed(args).unwrap() {
            WebhooksCommand::Create { ordering, .. } | WebhooksCommand::Update { ordering, .. } => ordering,
            _ => unreachable!("create or update"),
        }
    }

    #[test]
    fn ordering_is_the_record_key_a_pointer_or_none_as_the_api_takes_it() {
        assert_eq!(parse_ordering("key"), Ok(json!("key")));
        assert_eq!(parse_ordering(" key "), Ok(json!("key")));
        assert_eq!(parse_ordering("/data/customer"), Ok(json!({"key": "/data/customer"})));
        // The pointer as written: the API reads its escapes.
        assert_eq!(parse_ordering("/a~1b/0"), Ok(json!({"key": "/a~1b/0"})));
        assert_eq!(parse_ordering("none"), Ok(Value::Null));
        for other in ["", "keys", "Key", "data/customer", "{\"key\": \"/a\"}"] {
            let why = parse_ordering(other).unwrap_err();
            assert!(why.contains("`key`") && why.contains("`none`"), "{other}: {why}");
        }
    }

    #[test]
    fn create_and_update_take_ordering_and_update_removes_it_with_none() {
        let create = ["create", "--name", "n", "--url", "https://example.com/", "--event", "*"];
        assert_eq!(ordering_of(&create), None);
        assert_eq!(
            ordering_of(&[&create[..], &["--ordering", "key"]].concat()),
            Some(json!("key"))
        );
        assert_eq!(
            ordering_of(&[&create[..], &["--ordering", "/data/customer"]].concat()),
            Some(json!({"key": "/data/customer"}))
        );
        assert_eq!(ordering_of(&["update", "wh_1"]), None, "absent: unchanged");
        assert_eq!(
            ordering_of(&["update", "wh_1", "--ordering", "none"]),
            Some(Value::Null)
        );
        assert_eq!(
            ordering_of(&["update", "wh_1", "--ordering", "/data/customer"]),
            Some(json!({"key": "/data/customer"}))
        );
        let refused = parsed(&["update", "wh_1", "--ordering", "customer"]).err().unwrap();
        assert_eq!(refused.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(refused.to_string().contains("--ordering"), "{refused}");
    }
}
