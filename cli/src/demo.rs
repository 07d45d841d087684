//! `slapos demo`: a scripted session against an in-process master, through the SLAP layer.

use anyhow::{bail, Result};
use clap::Args;
use slap_gateway::slap::{serve_local, Endpoint, SlapContext, SlapResponse};
use slapos_domain::{RequestId, State};
use slapos_proto::marshal::{self, Value};

#[derive(Args)]
pub struct DemoArgs {
    /// Partitions to format on the demo computer.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Print the full getFullComputerInformation document the node receives.
    #[arg(long)]
    xml: bool,
}

const COMPUTER: &str = "COMP-DEMO";
const SOFTWARE: &str = "https://lab.example/software/demo/software.cfg";

struct Session {
    ctx: SlapContext,
    state: State,
    seq: u64,
}

impl Session {
    fn call(
        &mut self,
        endpoint: Endpoint,
        fields: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<SlapResponse> {
        self.seq += 1;
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let response = serve_local(
            &self.ctx,
            &mut self.state,
            endpoint,
            &fields,
            authorization,
            RequestId::new("slapos-demo", self.seq),
            master_client::proposer_time(),
        );
        let body = response.body_text();
        let shown = if body.len() > 100 {
            format!(
                "{}... ({} bytes)",
                &body[..body.floor_char_boundary(100)],
                body.len()
            )
        } else {
            body.to_string()
        };
        println!(
            "{:>4} {:<36} -> {} {}",
            if endpoint.method() == slap_gateway::slap::Method::Get {
                "GET"
            } else {
                "POST"
            },
            endpoint.name(),
            response.status,
            shown
        );
        if !response.is_success() {
            bail!("{} answered {}: {}", endpoint.name(), response.status, body);
        }
        Ok(response)
    }
}

fn m(value: &Value) -> Result<String> {
    Ok(marshal::encode(value)?)
}

/// The dictionary `slapos node format` posts for a computer.
fn computer_dict(partitions: usize) -> Value {
    let partition = |i: usize| {
        let address = |addr: String, netmask: &str| {
            Value::str_dict([("addr", addr.as_str()), ("netmask", netmask)])
        };
        Value::Dict(vec![
            (
                Value::from("address_list"),
                Value::List(vec![
                    address(format!("10.0.0.{}", 10 + i), "255.255.255.0"),
                    address(format!("fd00::{:x}", 0x10 + i), "ffff:ffff:ffff:ffff::"),
                ]),
            ),
            (
                Value::from("reference"),
                Value::from(format!("slappart{i}")),
            ),
            (
                Value::from("tap"),
                Value::str_dict([("name", format!("slaptap{i}").as_str())]),
            ),
        ])
    };
    Value::Dict(vec![
        (Value::from("address"), Value::from("10.0.0.1")),
        (Value::from("netmask"), Value::from("255.255.255.0")),
        (
            Value::from("partition_list"),
            Value::List((0..partitions).map(partition).collect()),
        ),
        (Value::from("reference"), Value::from(COMPUTER)),
    ])
}

pub fn run(args: &DemoArgs) -> Result<()> {
    if args.partitions < 2 {
        bail!("--partitions must be at least 2 (a root and a child instance)");
    }
    println!(
        "in-process master (state machine + SLAP layer; the replicated cluster comes later)\n"
    );
    let mut s = Session {
        ctx: SlapContext::proxy(None),
        state: State::new(),
        seq: 0,
    };
    s.call(
        Endpoint::LoadComputerConfigurationFromXml,
        &[("xml", m(&computer_dict(args.partitions))?)],
        None,
    )?;
    s.call(
        Endpoint::SupplySupply,
        &[
            ("url", SOFTWARE.into()),
            ("computer_id", COMPUTER.into()),
            ("state", "available".into()),
        ],
        None,
    )?;
    let request = |title: &str, params: Value| -> Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("software_release", SOFTWARE.to_string()),
            ("software_type", "default".to_string()),
            ("partition_reference", title.to_string()),
            ("partition_parameter_xml", m(&params)?),
            ("filter_xml", m(&Value::Dict(vec![]))?),
            ("state", m(&Value::from("started"))?),
            ("shared_xml", m(&Value::Bool(false))?),
        ])
    };
    s.call(
        Endpoint::RequestComputerPartition,
        &request("demo-root", Value::str_dict([("greeting", "hello")]))?,
        None,
    )?;
    let root_partition = root_partition(&s.state)?;
    let header =
        format!("X-SlapPartition computer_id={COMPUTER}, computer_partition_id={root_partition}");
    let mut child = request("demo-worker", Value::str_dict([("role", "worker")]))?;
    child.push(("computer_id", COMPUTER.to_string()));
    child.push(("computer_partition_id", root_partition.clone()));
    s.call(Endpoint::RequestComputerPartition, &child, Some(&header))?;
    s.call(
        Endpoint::SetComputerPartitionConnectionXml,
        &[
            ("computer_id", COMPUTER.into()),
            ("computer_partition_id", root_partition.clone()),
            (
                "connection_xml",
                m(&Value::str_dict([("url", "http://[fd00::10]:8080/")]))?,
            ),
            ("slave_reference", "None".into()),
        ],
        Some(&header),
    )?;
    let full = s.call(
        Endpoint::GetFullComputerInformation,
        &[("computer_id", COMPUTER.into())],
        None,
    )?;

    println!("\nwhat the node of {COMPUTER} is told:");
    let view = s.state.computer_view(COMPUTER)?;
    for sw in &view.software {
        println!(
            "  software {} ({})",
            sw.url,
            sw.installation.requested.as_str()
        );
    }
    for p in &view.partitions {
        match p.instance {
            Some(inst) => println!(
                "  {:<10} {:<12} {:<8} {} type={} timestamp={}",
                p.partition.id,
                inst.title,
                inst.requested_state.as_str(),
                inst.id,
                inst.software_type,
                inst.timestamp
            ),
            None => println!("  {:<10} (free)", p.partition.id),
        }
    }
    if args.xml {
        println!("\n{}", full.body_text());
    }
    Ok(())
}

fn root_partition(state: &State) -> Result<String> {
    let view = state.computer_view(COMPUTER)?;
    view.partitions
        .iter()
        .find(|p| p.instance.is_some_and(|i| i.title == "demo-root"))
        .map(|p| p.partition.id.clone())
        .ok_or_else(|| anyhow::anyhow!("demo-root was not allocated"))
}
