//! `slapos usage`, `slapos invoice`, `slapos price`, `slapos computer`: accounting through
//! a gateway's JSON-RPC API (the same calls the portal makes).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use slap_gateway::client::JsonRpcClient;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct GatewayArgs {
    /// Gateway URL (http:// or https://). Default: $SLAPOS_GATEWAY, else the first gateway
    /// of the cluster `slapos up` runs in ./slapos-up.
    #[arg(long)]
    gateway: Option<String>,
    /// PEM file of the CA that signed an https:// gateway's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Your certificate (PEM), for a gateway that requires client certificates: you are
    /// then the person it names.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Print the gateway's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct PeriodArgs {
    /// A calendar month (YYYY-MM, UTC). Default: the current month.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    month: Option<String>,
    /// Start of the period (YYYY-MM-DD[THH:MM:SS], UTC), included.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// End of the period, excluded.
    #[arg(long, requires = "from")]
    to: Option<String>,
}

#[derive(Args)]
pub struct UsageArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    period: PeriodArgs,
    /// Whose consumption (default: the gateway's person; others need an admin).
    #[arg(long, conflicts_with = "provider")]
    customer: Option<String>,
    /// What a provider's computers provided, to anyone.
    #[arg(long)]
    provider: Option<String>,
    /// One computer only.
    #[arg(long)]
    computer: Option<String>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InvoiceArgs {
    #[command(subcommand)]
    action: Option<InvoiceAction>,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    period: PeriodArgs,
    /// Whose invoice (default: the gateway's person; others need an admin).
    #[arg(long)]
    customer: Option<String>,
}

#[derive(Subcommand)]
pub enum InvoiceAction {
    /// Close every period that ends at or before a date: their invoices are final (admin).
    Close {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// YYYY-MM-DD[THH:MM:SS] UTC, not in the future.
        #[arg(long)]
        until: String,
    },
}

#[derive(Subcommand)]
pub enum PriceCommand {
    /// Price a resource (`hosting` per hour, or one that journals report) on one of your
    /// computers or on all of yours in a region, from now on.
    Set {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// The resource priced: `hosting/<size>` or a usage resource (cpu, memory, ...).
        #[arg(long)]
        resource: String,
        /// Per unit, a decimal.
        #[arg(long)]
        price: String,
        /// The price's currency (ISO 4217 code).
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Default: hour for hosting, unit otherwise.
        #[arg(long)]
        unit: Option<String>,
        /// The price of one of your computers.
        #[arg(long, conflicts_with = "region", required_unless_present = "region")]
        computer: Option<String>,
        /// The price of every computer of yours in this region.
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ComputerCommand {
    /// Declare a computer in your account (you become its provider); its node then formats
    /// it and reports for it.
    Register {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// The computer id.
        #[arg(long)]
        id: String,
        /// A title shown in listings and the portal.
        #[arg(long)]
        title: Option<String>,
        /// The computer's region (requests may ask for one).
        #[arg(long)]
        region: Option<String>,
        /// The network the computer is on (requests may ask for one).
        #[arg(long)]
        network: Option<String>,
        /// A declared attribute, `KEY=VALUE` (repeatable): SLAs match on them, and
        /// `partition_sizes=small,master` lists the partition sizes the computer sells.
        #[arg(long = "attribute", value_name = "KEY=VALUE")]
        attributes: Vec<String>,
    },
    /// Who may have instances allocated on one of your computers, and whether its node
    /// runs SlapOS's Python agent (which needs the masters to make its partitions' keys).
    Policy {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// The computer id.
        #[arg(long)]
        id: String,
        /// open (anyone), personal (you only), friends (you and --friends), closed.
        #[arg(long, value_parser = ["open", "personal", "friends", "closed"])]
        scope: Option<String>,
        /// With --scope friends: person ids, comma-separated.
        #[arg(long, requires = "scope")]
        friends: Option<String>,
        /// true when the node runs SlapOS's own Python agent.
        #[arg(long)]
        legacy_node_agent: Option<bool>,
        /// As an operator, on the master API (these addresses) instead of through a
        /// gateway as the computer's owner.
        #[arg(long, value_delimiter = ',')]
        via: Vec<String>,
    },
}

fn client(args: &GatewayArgs) -> Result<JsonRpcClient> {
    let mut ca = args.ca.clone();
    let mut identity = args.cert.clone().zip(args.key.clone());
    let url = match &args.gateway {
        Some(url) => url.clone(),
        None => match std::env::var("SLAPOS_GATEWAY") {
            Ok(url) => url,
            Err(_) => {
                // The local cluster: its first gateway, as its admin (cluster.json names
                // the certificate, key and CA `slapos up` made).
                let path = PathBuf::from("slapos-up/cluster.json");
                let text = std::fs::read_to_string(&path).with_context(|| {
                    "no --gateway given, $SLAPOS_GATEWAY unset and no ./slapos-up/cluster.json"
                })?;
                let cluster: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                let admin = &cluster["admin"];
                let file = |key: &str| admin[key].as_str().map(PathBuf::from);
                ca = ca.or_else(|| file("ca"));
                identity = identity.or_else(|| file("certificate").zip(file("key")));
                cluster["gateway_urls"][0]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{} lists no gateway", path.display()))?
            }
        },
    };
    Ok(JsonRpcClient::new(
        &url,
        ca.as_deref(),
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )?)
}

/// (from, to) as the gateway reads them.
fn period(args: &PeriodArgs) -> Result<(String, String)> {
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        return Ok((from.clone(), to.clone()));
    }
    let month = match &args.month {
        Some(m) => m.clone(),
        None => {
            let now = slapos_domain::Timestamp::from_micros(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_micros() as u64,
            );
            slapos_domain::format_date(now)[..7].to_string()
        }
    };
    let (y, m) = month
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
        .filter(|(y, m)| (1..=12).contains(m) && (1970..=9998).contains(y))
        .with_context(|| format!("--month {month:?}: expected YYYY-MM"))?;
    let (ny, nm) = if m == 12 {
        (y.checked_add(1).context("--month: year out of range")?, 1)
    } else {
        (y, m + 1)
    };
    Ok((format!("{y:04}-{m:02}-01"), format!("{ny:04}-{nm:02}-01")))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub async fn usage(args: UsageArgs) -> Result<()> {
    let client = client(&args.gateway)?;
    let (from, to) = period(&args.period)?;
    let mut body = json!({"from": from, "to": to});
    for (key, value) in [
        ("customer", &args.customer),
        ("provider", &args.provider),
        ("computer_guid", &args.computer),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    let answer = client
        .call("slapos.allDocs.v0.movement_list", &body)
        .await?;
    if args.gateway.json {
        return print_json(&answer);
    }
    let movements = answer["result_list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("movements from {from} to {to}: {}", movements.len());
    let rows: Vec<Vec<String>> = movements
        .iter()
        .map(|m| {
            vec![
                text(&m["id"]),
                text(&m["kind"]),
                text(&m["resource"]),
                text(&m["quantity"]),
                text(&m["start"]),
                text(&m["stop"]),
                text(&m["destination"]),
                format!(
                    "{}/{}",
                    text(&m["computer_guid"]),
                    text(&m["compute_partition_id"])
                ),
                text(&m["instance_tree_title"]),
            ]
        })
        .collect();
    table(
        &[
            "id",
            "kind",
            "resource",
            "quantity",
            "start",
            "stop",
            "customer",
            "partition",
            "tree",
        ],
        &rows,
    );
    Ok(())
}

pub async fn invoice(args: InvoiceArgs) -> Result<()> {
    if let Some(InvoiceAction::Close { gateway, until }) = args.action {
        let client = client(&gateway)?;
        let answer = client
            .call(
                "slapos.post.v0.accounting_period_close",
                &json!({ "until": until }),
            )
            .await?;
        if gateway.json {
            return print_json(&answer);
        }
        println!("periods closed until {until}");
        return Ok(());
    }
    let client = client(&args.gateway)?;
    let (from, to) = period(&args.period)?;
    let mut body = json!({"from": from, "to": to});
    if let Some(c) = &args.customer {
        body["customer"] = json!(c);
    }
    let answer = client.call("slapos.get.v0.invoice", &body).await?;
    if args.gateway.json {
        return print_json(&answer);
    }
    println!(
        "invoice of {} from {} to {} ({}, computed at {})",
        text(&answer["customer"]),
        text(&answer["from"]),
        text(&answer["to"]),
        if answer["closed"].as_bool() == Some(true) {
            "closed"
        } else {
            "open: may still change"
        },
        text(&answer["computed_at"]),
    );
    let lines = answer["line_list"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                format!(
                    "{} {}",
                    text(&l["instance_tree_title"]),
                    text(&l["instance_tree_guid"])
                ),
                text(&l["resource"]),
                format!("{} {}", text(&l["quantity"]), text(&l["unit"])),
                text(&l["items"].as_array().map_or(0, Vec::len).into()),
                if text(&l["currency"]).is_empty() {
                    "unpriced".to_string()
                } else {
                    format!("{} {}", text(&l["amount"]), text(&l["currency"]))
                },
            ]
        })
        .collect();
    table(
        &[
            "instance tree",
            "resource",
            "quantity",
            "movements",
            "amount",
        ],
        &rows,
    );
    match answer["total"].as_object() {
        Some(totals) if !totals.is_empty() => {
            for (currency, total) in totals {
                println!("total {} {currency}", text(total));
            }
        }
        _ => println!("total 0"),
    }
    Ok(())
}

pub async fn price(cmd: PriceCommand) -> Result<()> {
    let PriceCommand::Set {
        gateway,
        resource,
        price,
        currency,
        unit,
        computer,
        region,
    } = cmd;
    let client = client(&gateway)?;
    let mut body = json!({"resource": resource, "price": price, "currency": currency});
    match (&computer, &region) {
        (Some(c), None) => body["computer_guid"] = json!(c),
        (None, Some(r)) => body["region"] = json!(r),
        _ => bail!("give --computer or --region"),
    }
    if let Some(u) = unit {
        body["unit"] = json!(u);
    }
    let answer = client.call("slapos.put.v0.price", &body).await?;
    if gateway.json {
        return print_json(&answer);
    }
    println!(
        "{resource} on {} costs {price} {currency} from now on",
        computer
            .map(|c| format!("computer {c}"))
            .or(region.map(|r| format!("region {r}")))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn computer(cmd: ComputerCommand) -> Result<()> {
    let (gateway, id, title, region, network, attributes) = match cmd {
        ComputerCommand::Register {
            gateway,
            id,
            title,
            region,
            network,
            attributes,
        } => (gateway, id, title, region, network, attributes),
        ComputerCommand::Policy {
            gateway,
            id,
            scope,
            friends,
            legacy_node_agent,
            via,
        } => {
            if scope.is_none() && legacy_node_agent.is_none() {
                bail!("nothing to change: give --scope and/or --legacy-node-agent");
            }
            if !via.is_empty() {
                use slapos_domain::AllocationScope;
                let friends: std::collections::BTreeSet<String> = friends
                    .unwrap_or_default()
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect();
                let allocation_scope = match scope.as_deref() {
                    None => None,
                    Some("open") => Some(AllocationScope::Open),
                    Some("personal") => Some(AllocationScope::Personal),
                    Some("closed") => Some(AllocationScope::Closed),
                    Some(_) if friends.is_empty() => bail!("--scope friends needs --friends"),
                    Some(_) => Some(AllocationScope::Friends(friends)),
                };
                crate::master::tls_from_env()?;
                slapos_operator::authority::submit_op(
                    via,
                    "policy",
                    slapos_domain::Op::SetComputerPolicy {
                        computer: id.clone(),
                        by: None,
                        allocation_scope,
                        legacy_partition_keys: legacy_node_agent,
                    },
                )
                .await?;
                println!("computer {id}: policy set");
                return Ok(());
            }
            let client = client(&gateway)?;
            let mut body = json!({"computer_guid": id});
            if let Some(s) = &scope {
                body["allocation_scope"] = json!(s);
            }
            if let Some(f) = friends {
                body["friends"] = json!(f);
            }
            if let Some(l) = legacy_node_agent {
                body["legacy_node_agent"] = json!(l);
            }
            let answer = client
                .call("slapos.put.v0.compute_node_policy", &body)
                .await?;
            if gateway.json {
                return print_json(&answer);
            }
            println!("computer {id}: policy set");
            return Ok(());
        }
    };
    let client = client(&gateway)?;
    let mut body = json!({"computer_guid": id});
    for (key, value) in [("title", title), ("region", region), ("network", network)] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    if !attributes.is_empty() {
        let mut map = serde_json::Map::new();
        for a in &attributes {
            let Some((k, v)) = a.split_once('=') else {
                bail!("--attribute {a:?}: expected KEY=VALUE");
            };
            map.insert(k.to_string(), json!(v));
        }
        body["attributes"] = Value::Object(map);
    }
    let answer = client.call("slapos.post.v0.compute_node", &body).await?;
    if gateway.json {
        return print_json(&answer);
    }
    println!("computer {id} registered");
    Ok(())
}
