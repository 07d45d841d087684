//! Answers: views of the state as the slap objects the client unmarshals (section 5 of the
//! protocol reference), the plain-text answers of the writes, and the mapping of every
//! [`DomainError`] to a status code and a message.
//!
//! Shapes follow slapproxy's captures attribute for attribute, with the deliberate
//! differences listed in `DESIGN.md` (instance guids are instance ids, `ip_list` holds
//! only the partition's own computer's addresses, shared instances are named by id in
//! `slave_instance_list`, the request response states the stored requested state).

use slapos_domain::{
    AccessStatus, ComputerView, InstanceView, Partition, PartitionView, Placement,
    SharedOnHostView, SoftwareView, StatusKind, StringParams,
};
use slapos_domain::{DomainError, InstanceId, Op, Outcome, Reply, State, Timestamp};
use slapos_proto::instance_xml;
use slapos_proto::marshal::{self, Value};
use slapos_proto::slap::{self, Attr, StrDict};

use super::forms::{param_to_value, Identity, ProductLookup, Query, Write};
use super::{Endpoint, SlapContext, SlapResponse};

/// The value slapproxy gives `slap_server_url` in request responses (a literal).
const SLAP_SERVER_URL: &str = "slap_server_url";

// ----- errors ----------------------------------------------------------------------------

/// The status code a domain error answers: 404 for what does not exist (and for
/// allocation failures, as slapproxy and the client's `NotFoundError` expect), 400 for
/// invalid arguments, 409 for conflicts with the current state, 500 for an expired retry.
pub fn domain_status(err: &DomainError) -> u16 {
    match err {
        DomainError::UnknownComputer(_)
        | DomainError::UnknownPartition { .. }
        | DomainError::PartitionFree { .. }
        | DomainError::UnknownInstance(_)
        | DomainError::UnknownSharedInstance { .. }
        | DomainError::UnknownSoftware { .. }
        | DomainError::NoCapacity { .. }
        | DomainError::NoSharedHost { .. } => 404,
        DomainError::InvalidArgument { .. }
        | DomainError::UnknownSlaKey(_)
        | DomainError::UsageRefused { .. } => 400,
        DomainError::Forbidden(_) | DomainError::NotOwner { .. } => 403,
        DomainError::ComputerExists(_)
        | DomainError::PartitionsInUse { .. }
        | DomainError::TitleTaken { .. }
        | DomainError::NotRequestedDestroyed { .. }
        | DomainError::SoftwareNotDestroyed { .. }
        | DomainError::NotSupplied { .. }
        | DomainError::JournalConflict { .. }
        | DomainError::PeriodClosed { .. }
        | DomainError::AuthorityInstalled
        | DomainError::BadToken(_)
        | DomainError::CertificateKnown(_) => 409,
        DomainError::RequestExpired { .. } | DomainError::NoAuthority => 500,
        // This gateway's clock is off: nothing was written; a later retry may pass.
        DomainError::ClockSkew { .. } => 503,
    }
}

/// A domain error as an answer: its status and its message as plain text. Allocation
/// failures keep slapproxy's wording in front of our reason.
pub fn domain_error(err: &DomainError) -> SlapResponse {
    let body = match err {
        DomainError::NoCapacity { title, reason } => {
            format!("No free computer partition found for: {title} ({reason})")
        }
        DomainError::NoSharedHost { title, reason } => {
            format!("No partition corresponding to slave request: {title} ({reason})")
        }
        other => capitalized(&other.to_string()),
    };
    SlapResponse::text(domain_status(err), body)
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn internal(message: impl Into<String>) -> SlapResponse {
    let message = message.into();
    tracing::error!(%message, "cannot render a SLAP answer");
    SlapResponse::text(500, message)
}

/// `getComputerPartitionCertificate`'s answer: `{certificate, key}`.
pub fn certificate_pair(certificate: &str, key: &str) -> SlapResponse {
    marshalled(&Value::str_dict([
        ("certificate", certificate),
        ("key", key),
    ]))
}

fn marshalled(value: &Value) -> SlapResponse {
    match marshal::encode(value) {
        Ok(document) => SlapResponse::marshalled(document),
        Err(e) => internal(format!("cannot marshal the answer: {e}")),
    }
}

// ----- writes ----------------------------------------------------------------------------

/// The answer to a write, from the state after it was applied.
pub fn write(state: &State, write: &Write, outcome: &Outcome) -> SlapResponse {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(err) => return write_error(write, err),
    };
    let text = |body: &str| SlapResponse::text(200, body);
    match (write.endpoint, reply) {
        (Endpoint::LoadComputerConfigurationFromXml, _) => text("done"),
        (Endpoint::SupplySupply, _) => match &write.op {
            Op::Supply { url, state, .. } => text(&format!("Supplied '{url}' to be {state}")),
            _ => internal("supplySupply without a supply op"),
        },
        (Endpoint::RequestComputerPartition, Reply::Instance { id, .. }) => {
            match state.instance_view(*id) {
                Ok(view) => marshalled(&instance_object(&view).to_value()),
                Err(e) => domain_error(&e),
            }
        }
        (
            Endpoint::RequestComputerPartition,
            Reply::SharedRemoved {
                host, connection, ..
            },
        ) => marshalled(&removed_shared(state, *host, connection, &write.op).to_value()),
        (Endpoint::SetComputerPartitionConnectionXml, _) => text("done"),
        (Endpoint::SoftwareInstanceBang, _) => text("OK"),
        (Endpoint::SoftwareInstanceRename, _) => text("done"),
        // The reports are stored (access status); the body is slapproxy's, which the
        // client ignores anyway.
        (
            Endpoint::StartedComputerPartition
            | Endpoint::StoppedComputerPartition
            | Endpoint::SoftwareInstanceError
            | Endpoint::BuildingSoftwareRelease
            | Endpoint::AvailableSoftwareRelease
            | Endpoint::SoftwareReleaseError,
            _,
        ) => text("Ignored"),
        (Endpoint::DestroyedComputerPartition, Reply::DestroyDeferred { remaining }) => {
            text(&format!(
                "Not destroying yet because this partition has child partitions: {}",
                remaining.join(", ")
            ))
        }
        (Endpoint::DestroyedComputerPartition, _) => text("OK"),
        (Endpoint::DestroyedSoftwareRelease, _) => text("OK"),
        // the real master's answer to a journal it accepted (re-posted ones included)
        (Endpoint::UseComputer, _) => text("OK"),
        (Endpoint::ComputerBang, _) => marshalled(&Value::Str(String::new())),
        (endpoint, reply) => internal(format!("{endpoint} answered unexpectedly: {reply:?}")),
    }
}

fn requested_strings(parameters: &slapos_domain::Params) -> StringParams {
    parameters
        .iter()
        .map(|(k, v)| {
            let s = v.py_str();
            (k.clone(), (!s.is_empty()).then_some(s))
        })
        .collect()
}

/// slapproxy's answer to a shared instance's destruction: where it was hosted (the host
/// named in the reply, still there after the write), the parameters of this very request,
/// and the connection parameters last published for it. Built from the outcome alone, so
/// a retry of the destruction answers the same.
fn removed_shared(
    state: &State,
    host: Option<InstanceId>,
    connection: &StringParams,
    op: &Op,
) -> slap::SoftwareInstance {
    let (url, software_type, parameters) = match op {
        Op::RequestInstance {
            software_release,
            software_type,
            parameters,
            ..
        } => (
            software_release.clone(),
            software_type.clone(),
            requested_strings(parameters),
        ),
        _ => Default::default(),
    };
    let host_view = host.and_then(|h| state.instance_view(h).ok());
    let (computer, partition) = host_view
        .as_ref()
        .map(|v| {
            (
                v.computer.map_or("", |c| c.id.as_str()).to_string(),
                v.partition.map_or("", |p| p.id.as_str()).to_string(),
            )
        })
        .unwrap_or_default();
    let (url, software_type) = host_view
        .as_ref()
        .map(|v| {
            (
                v.instance.software_release.clone(),
                v.instance.software_type.clone(),
            )
        })
        .unwrap_or((url, software_type));
    slap::SoftwareInstance {
        connection_dict: Attr::Set(string_params(connection)),
        parameter_dict: Attr::Set(string_params(&parameters)),
        ip_list: Attr::Set(ip_pairs(host_view.as_ref().and_then(|v| v.partition))),
        slap_computer_id: Attr::Set(computer),
        slap_computer_partition_id: Attr::Set(partition),
        slap_server_url: Attr::Set(SLAP_SERVER_URL.to_string()),
        slap_software_release_url: Attr::Set(url),
        slap_software_type: Attr::Set(software_type),
        ..Default::default()
    }
}

fn write_error(write: &Write, err: &DomainError) -> SlapResponse {
    // slapproxy: a partition named by the X-SlapPartition header that it does not know is
    // a bad request, with this message.
    if write.identity == Identity::AuthorizationHeader {
        if let Op::RequestInstance {
            requester:
                slapos_domain::Requester::Partition {
                    computer,
                    partition,
                },
            ..
        } = &write.op
        {
            let names_requester = match err {
                DomainError::UnknownComputer(c) => c == computer,
                DomainError::UnknownPartition {
                    computer: c,
                    partition: p,
                }
                | DomainError::PartitionFree {
                    computer: c,
                    partition: p,
                } => c == computer && p == partition,
                _ => false,
            };
            if names_requester {
                return SlapResponse::text(
                    400,
                    format!(
                        "No partition matching the authorization header: ({computer} / {partition})"
                    ),
                );
            }
        }
    }
    domain_error(err)
}

// ----- queries ---------------------------------------------------------------------------

/// The answer to a read.
pub fn query(ctx: &SlapContext, state: &State, query: &Query) -> SlapResponse {
    match query {
        Query::Computer { computer } => match state.computer_view(computer) {
            Ok(view) => marshalled(&computer_object(&view).to_value()),
            Err(DomainError::UnknownComputer(_))
                if ctx.default_computer.as_deref() == Some(computer.as_str()) =>
            {
                marshalled(&empty_computer_object(computer).to_value())
            }
            Err(e) => domain_error(&e),
        },
        Query::Partition {
            computer,
            partition,
        } => match state.partition_view(computer, partition) {
            Ok(view) => marshalled(&partition_object(&view).to_value()),
            Err(e) => domain_error(&e),
        },
        Query::PartitionCertificate {
            computer,
            partition,
        } => match state.partition_view(computer, partition) {
            // Certificates come with the master's certificate authority: until then the
            // answer is slapproxy's, empty strings.
            Ok(_) => marshalled(&Value::str_dict([("certificate", ""), ("key", "")])),
            Err(e) => domain_error(&e),
        },
        Query::PartitionStatus {
            computer,
            partition,
        } => match state.partition_view(computer, partition) {
            Ok(view) => marshalled(&partition_status_value(&view)),
            Err(e) => domain_error(&e),
        },
        Query::HostingSubscriptionIpList {
            computer,
            partition,
        } => match hosting_subscription_ip_list(state, computer, partition) {
            Ok(value) => marshalled(&value),
            Err(e) => domain_error(&e),
        },
        Query::ComputerStatus { computer } => match state.computer(computer) {
            Ok(c) => marshalled(&computer_status_value(c)),
            Err(e) => domain_error(&e),
        },
        Query::SoftwareReleaseList(lookup) => {
            marshalled(&Value::List(software_release_list(ctx, lookup)))
        }
        Query::HateoasUrl => SlapResponse::text(404, "this master offers no HATEOAS interface"),
        Query::RunId => match &ctx.run_id {
            Some(id) => SlapResponse::text(200, id.clone()),
            None => SlapResponse::text(404, "getRunId is only answered by slapproxy"),
        },
    }
}

fn software_release_list(ctx: &SlapContext, lookup: &ProductLookup) -> Vec<Value> {
    let products: Vec<&str> = match lookup {
        ProductLookup::Product(p) => vec![p.as_str()],
        // Like the real master: the releases of the product(s) that list this URL.
        ProductLookup::SoftwareRelease(url) => ctx
            .software_products
            .iter()
            .filter(|(_, u)| u == url)
            .map(|(p, _)| p.as_str())
            .collect(),
    };
    let mut urls: Vec<&str> = Vec::new();
    for (p, u) in &ctx.software_products {
        if products.contains(&p.as_str()) && !urls.contains(&u.as_str()) {
            urls.push(u);
        }
    }
    urls.into_iter().map(Value::from).collect()
}

// ----- slap objects ----------------------------------------------------------------------

fn string_params(params: &StringParams) -> StrDict {
    params
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect()
}

fn str_dict_value(entries: StrDict) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Str(k), v))
            .collect(),
    )
}

/// `ip_list`: `(interface, address)` for each address of the partition.
fn ip_pairs(partition: Option<&Partition>) -> Vec<(String, String)> {
    partition
        .map(|p| {
            p.addresses
                .iter()
                .map(|a| (p.interface.clone(), a.addr.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn ip_list_value(pairs: Vec<(String, String)>) -> Value {
    Value::List(
        pairs
            .into_iter()
            .map(|(iface, addr)| Value::Tuple(vec![Value::Str(iface), Value::Str(addr)]))
            .collect(),
    )
}

/// The stored connection instance XML, as the `connection_xml` attribute carries it; None
/// when nothing was published.
fn connection_xml(connection: &StringParams) -> Attr<String> {
    if connection.is_empty() {
        return Attr::Null;
    }
    // A None value is a parameter that was published empty.
    let dict: instance_xml::InstanceDict = connection
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone().unwrap_or_default())))
        .collect();
    Attr::Set(instance_xml::encode(&dict))
}

/// A computer's `_software_release_list` entry: a `SoftwareRelease` with its requested
/// state. (A partition's `_software_release_document` is the same without it.)
fn software_release(sw: &SoftwareView<'_>, computer: &str) -> slap::SoftwareRelease {
    let mut release = slap::SoftwareRelease::new(sw.url, computer);
    release.requested_state = Attr::Set(sw.installation.requested.as_str().to_string());
    release
}

/// `getFullComputerInformation`: the `Computer` with its software and every partition.
pub fn computer_object(view: &ComputerView<'_>) -> slap::Computer {
    let id = view.computer.id.as_str();
    let mut computer = slap::Computer::new(id);
    computer.software_release_list = Attr::Set(
        view.software
            .iter()
            .map(|s| software_release(s, id))
            .collect(),
    );
    computer.computer_partition_list =
        Attr::Set(view.partitions.iter().map(partition_object).collect());
    computer
}

/// slapproxy's answer for its own computer before it was formatted: empty lists.
pub fn empty_computer_object(computer: &str) -> slap::Computer {
    slap::Computer::new(computer)
}

/// One entry of a host's `slave_instance_list`: the shared instance's parameters with
/// their original types, its software type, its id as `slave_reference` and its title.
fn shared_entry(shared: &SharedOnHostView<'_>) -> Value {
    let inst = shared.instance;
    let mut entries: StrDict = inst
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), param_to_value(v)))
        .collect();
    entries.insert(
        "slap_software_type".into(),
        Value::from(inst.software_type.as_str()),
    );
    entries.insert("slave_reference".into(), Value::from(inst.id.to_string()));
    entries.insert("slave_title".into(), Value::from(inst.title.as_str()));
    str_dict_value(entries)
}

/// A `ComputerPartition` as `getFullComputerInformation` lists it and
/// `registerComputerPartition` answers it.
pub fn partition_object(view: &PartitionView<'_>) -> slap::ComputerPartition {
    let computer = view.computer.id.as_str();
    let partition = view.partition.id.as_str();
    let mut p = slap::ComputerPartition::new(computer, partition);
    let Some(inst) = view.instance else {
        // A free partition: how slapgrid recognises one.
        p.instance_guid = Attr::Set(format!("{computer}-{partition}"));
        p.need_modification = Attr::Set(0);
        p.requested_state = Attr::Set("destroyed".to_string());
        p.software_release_document = Attr::Null;
        return p;
    };
    let mut parameters = string_params(&inst.parameter_strings);
    let reserved = [
        ("full_address_list", Value::List(Vec::new())),
        ("instance_title", Value::from(inst.title.as_str())),
        ("ip_list", ip_list_value(ip_pairs(Some(view.partition)))),
        (
            "root_instance_title",
            Value::from(view.root_title.unwrap_or(inst.title.as_str())),
        ),
        ("slap_computer_id", Value::from(computer)),
        ("slap_computer_partition_id", Value::from(partition)),
        (
            "slap_software_release_url",
            Value::from(inst.software_release.as_str()),
        ),
        (
            "slap_software_type",
            Value::from(inst.software_type.as_str()),
        ),
        (
            "slave_instance_list",
            Value::List(view.shared.iter().map(shared_entry).collect()),
        ),
        ("timestamp", Value::from(inst.timestamp.to_slap_string())),
    ];
    for (k, v) in reserved {
        parameters.insert(k.to_string(), v);
    }
    p.connection_dict = Attr::Set(string_params(&inst.connection));
    // The instance's SLA, as the real master sends it, when it names a partition size
    // (the node gives the partition that size's limits); otherwise absent, as slapproxy
    // answers (the captured exchanges stay byte for byte).
    if inst.sla.contains_key("size") {
        p.filter_dict = Attr::Set(
            inst.sla
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect(),
        );
    }
    p.instance_guid = Attr::Set(inst.id.to_string());
    p.need_modification = Attr::Set(1);
    p.parameter_dict = Attr::Set(parameters);
    p.requested_state = Attr::Set(inst.requested_state.as_str().to_string());
    p.software_release_document = Attr::Set(slap::SoftwareRelease::new(
        inst.software_release.as_str(),
        computer,
    ));
    p
}

/// The `SoftwareInstance` that `requestComputerPartition` answers: for a regular
/// instance where it runs, its parameters, connection and stored requested state; for a
/// shared instance its parameters and connection with its host's location.
pub fn instance_object(view: &InstanceView<'_>) -> slap::SoftwareInstance {
    let inst = view.instance;
    let computer = view.computer.map_or("", |c| c.id.as_str());
    let partition = view.partition.map_or("", |p| p.id.as_str());
    let mut i = slap::SoftwareInstance {
        connection_dict: Attr::Set(string_params(&inst.connection)),
        ip_list: Attr::Set(ip_pairs(view.partition)),
        slap_computer_id: Attr::Set(computer.to_string()),
        slap_computer_partition_id: Attr::Set(partition.to_string()),
        slap_server_url: Attr::Set(SLAP_SERVER_URL.to_string()),
        ..Default::default()
    };
    if inst.shared {
        let (url, software_type) = view.host.map_or(("", ""), |h| {
            (h.software_release.as_str(), h.software_type.as_str())
        });
        i.parameter_dict = Attr::Set(string_params(&inst.parameter_strings));
        i.slap_software_release_url = Attr::Set(url.to_string());
        i.slap_software_type = Attr::Set(software_type.to_string());
    } else {
        let mut parameters = string_params(&inst.parameter_strings);
        parameters.insert(
            "timestamp".to_string(),
            Value::from(inst.timestamp.to_slap_string()),
        );
        i.instance_guid = Attr::Set(inst.id.to_string());
        i.parameter_dict = Attr::Set(parameters);
        i.requested_state = Attr::Set(inst.requested_state.as_str().to_string());
        i.connection_xml = connection_xml(&inst.connection);
        i.slap_software_release_url = Attr::Set(inst.software_release.clone());
        i.slap_software_type = Attr::Set(inst.software_type.clone());
    }
    i
}

/// `getHostingSubscriptionIpList`: `(interface, address)` of every regular instance of
/// the partition's tree (the real master's answer; slapproxy has none).
fn hosting_subscription_ip_list(
    state: &State,
    computer: &str,
    partition: &str,
) -> Result<Value, DomainError> {
    let view = state.partition_view(computer, partition)?;
    let inst = view.instance.ok_or_else(|| DomainError::PartitionFree {
        computer: computer.to_string(),
        partition: partition.to_string(),
    })?;
    let mut out = Vec::new();
    for member in state.tree_members(inst.root) {
        if let Placement::Partition {
            computer,
            partition,
        } = &member.placement
        {
            let p = state
                .computer(computer)
                .ok()
                .and_then(|c| c.partition(partition));
            out.extend(ip_pairs(p));
        }
    }
    Ok(ip_list_value(out))
}

// ----- access status ---------------------------------------------------------------------

/// The real master's access status dictionary (`user`, `created_at`, `since`, `state`,
/// `text`), built from the last report stored for the partition's instance.
fn partition_status_value(view: &PartitionView<'_>) -> Value {
    match view.instance {
        None => no_status(None, None),
        Some(inst) => match &inst.access_status {
            Some(status) => status_value(&view.computer.id, status),
            None => no_status(Some(inst.id), Some(inst.created_at)),
        },
    }
}

fn status_value(user: &str, status: &AccessStatus) -> Value {
    let (state, text) = match status.kind {
        StatusKind::Started => ("started", "#access Instance correctly started".to_string()),
        StatusKind::Stopped => ("stopped", "#access Instance correctly stopped".to_string()),
        StatusKind::Error => ("", format!("#error {}", status.message)),
        StatusKind::Bang => ("", format!("#error bang called: {}", status.message)),
    };
    let date = rfc1123(status.at);
    Value::str_dict([
        ("created_at", Value::from(date.clone())),
        ("since", Value::from(date)),
        ("state", Value::from(state)),
        ("text", Value::from(text)),
        ("user", Value::from(user)),
    ])
}

fn no_status(instance: Option<InstanceId>, at: Option<Timestamp>) -> Value {
    let date = rfc1123(at.unwrap_or_default());
    let text = match instance {
        Some(id) => format!("#error no data found for {id}"),
        None => "#error no data found".to_string(),
    };
    Value::str_dict([
        ("created_at", Value::from(date.clone())),
        ("since", Value::from(date)),
        ("state", Value::from("")),
        ("text", Value::from(text)),
        ("user", Value::from("SlapOS Master")),
    ])
}

fn computer_status_value(computer: &slapos_domain::Computer) -> Value {
    match computer.last_contact {
        Some(at) => {
            let date = rfc1123(at);
            Value::str_dict([
                ("created_at", Value::from(date.clone())),
                ("since", Value::from(date)),
                ("state", Value::from("")),
                ("text", Value::from("#access")),
                ("user", Value::from(computer.id.as_str())),
            ])
        }
        None => {
            let date = rfc1123(computer.registered_at);
            Value::str_dict([
                ("created_at", Value::from(date.clone())),
                ("since", Value::from(date)),
                ("state", Value::from("")),
                (
                    "text",
                    Value::from(format!("#error no data found for {}", computer.id)),
                ),
                ("user", Value::from("SlapOS Master")),
            ])
        }
    }
}

/// An HTTP date (RFC 1123, always GMT): `Wed, 25 Nov 2026 20:31:00 GMT`.
pub fn rfc1123(at: Timestamp) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(rfc1123(Timestamp(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            rfc1123(Timestamp::from_secs(1_795_626_904)),
            "Wed, 25 Nov 2026 17:15:04 GMT"
        );
        assert_eq!(
            rfc1123(Timestamp::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn capitalizes_messages() {
        assert_eq!(
            capitalized("unknown partition 'a'"),
            "Unknown partition 'a'"
        );
        assert_eq!(capitalized(""), "");
    }
}
