//! The computer as the reference stores it (slapgrid-behaviour.md 1.7): the model, its
//! JSON form (`computer_json`, `P/.slapos-resource`), its `xml_marshaller` form
//! (`computer_xml`, what is posted to the master), and the reading of a previous state.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use slapos_proto::marshal::{self, Value};
use slapos_proto::Limits;

use super::FormatError;

/// One entry of `address_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub addr: String,
    pub netmask: String,
}

/// A partition's routed IPv6 range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ipv6Range {
    pub addr: String,
    pub netmask: String,
    /// `addr/prefixlen`.
    pub network: String,
    pub prefixlen: u8,
}

/// The tap of a partition: always the nine keys, empty strings when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tap {
    pub name: String,
    pub ipv4_addr: String,
    pub ipv4_gateway: String,
    pub ipv4_netmask: String,
    pub ipv4_network: String,
    pub ipv6_addr: String,
    pub ipv6_gateway: String,
    pub ipv6_netmask: String,
    pub ipv6_network: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub path: String,
    pub additional_group_list: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Partition {
    pub reference: String,
    pub path: String,
    pub user: User,
    pub address_list: Vec<Address>,
    pub ipv6_range: Option<Ipv6Range>,
    pub tap: Tap,
    /// Kept as read (tun devices are not managed; `null` for new partitions).
    pub tun: Json,
    /// Only for partitions of a definition file that lists capabilities.
    pub capability_list: Option<Vec<String>>,
}

/// The `interface` entry of the computer dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    pub name: String,
    pub ipv4_local_network: Option<String>,
    pub ipv6_interface: Option<String>,
    pub ipv6_prefixshift: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Computer {
    pub reference: String,
    pub address: Option<String>,
    pub netmask: Option<String>,
    pub instance_root: String,
    pub software_root: String,
    pub software_user: String,
    pub instance_storage_home: Option<String>,
    pub interface: Option<Interface>,
    pub ipv6_interface: Option<String>,
    pub partition_has_ipv6_range: bool,
    pub tap_gateway_interface: String,
    pub tap_ipv6: bool,
    pub public_ipv4_address: String,
    pub os_type: String,
    pub python_version: String,
    pub slapos_version: String,
    pub partition_list: Vec<Partition>,
}

impl Tap {
    pub fn named(name: &str) -> Tap {
        Tap {
            name: name.to_owned(),
            ..Tap::default()
        }
    }

    fn to_json(&self) -> Json {
        json!({
            "ipv4_addr": self.ipv4_addr,
            "ipv4_gateway": self.ipv4_gateway,
            "ipv4_netmask": self.ipv4_netmask,
            "ipv4_network": self.ipv4_network,
            "ipv6_addr": self.ipv6_addr,
            "ipv6_gateway": self.ipv6_gateway,
            "ipv6_netmask": self.ipv6_netmask,
            "ipv6_network": self.ipv6_network,
            "name": self.name,
        })
    }

    fn from_json(v: &Json) -> Tap {
        let s = |key: &str| str_of(v, key).unwrap_or_default();
        Tap {
            name: s("name"),
            ipv4_addr: s("ipv4_addr"),
            ipv4_gateway: s("ipv4_gateway"),
            ipv4_netmask: s("ipv4_netmask"),
            ipv4_network: s("ipv4_network"),
            ipv6_addr: s("ipv6_addr"),
            ipv6_gateway: s("ipv6_gateway"),
            ipv6_netmask: s("ipv6_netmask"),
            ipv6_network: s("ipv6_network"),
        }
    }
}

impl Partition {
    /// The dict of `.slapos-resource` (and of `partition_list`).
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        let addresses = self
            .address_list
            .iter()
            .map(|a| json!({"addr": a.addr, "netmask": a.netmask}))
            .collect();
        m.insert("address_list".into(), Json::Array(addresses));
        m.insert("external_storage_list".into(), json!([]));
        m.insert(
            "ipv6_range".into(),
            match &self.ipv6_range {
                None => json!({}),
                Some(r) => json!({
                    "addr": r.addr,
                    "netmask": r.netmask,
                    "network": r.network,
                    "prefixlen": r.prefixlen,
                }),
            },
        );
        m.insert("path".into(), json!(self.path));
        m.insert("reference".into(), json!(self.reference));
        m.insert("tap".into(), self.tap.to_json());
        m.insert("tun".into(), self.tun.clone());
        m.insert(
            "user".into(),
            json!({
                "additional_group_list": self.user.additional_group_list,
                "name": self.user.name,
                "path": self.user.path,
                "shell": "/bin/sh",
            }),
        );
        if let Some(capabilities) = &self.capability_list {
            m.insert("capability_list".into(), json!(capabilities));
        }
        Json::Object(m)
    }

    /// A partition of a previous state (tolerant: what is missing takes its default).
    fn from_json(v: &Json) -> Result<Partition, String> {
        let reference = str_of(v, "reference").ok_or("a partition has no reference")?;
        let address_list = v
            .get("address_list")
            .and_then(Json::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| {
                        Some(Address {
                            addr: str_of(a, "addr")?,
                            netmask: str_of(a, "netmask").unwrap_or_default(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let user = v.get("user").filter(|u| u.is_object());
        Ok(Partition {
            path: str_of(v, "path").unwrap_or_default(),
            user: User {
                name: user.and_then(|u| str_of(u, "name")).unwrap_or_default(),
                path: user.and_then(|u| str_of(u, "path")).unwrap_or_default(),
                additional_group_list: Vec::new(),
            },
            address_list,
            ipv6_range: v.get("ipv6_range").and_then(range_from_json),
            tap: match v.get("tap") {
                Some(t) if t.is_object() => Tap::from_json(t),
                _ => Tap::named(&reference),
            },
            tun: v.get("tun").cloned().unwrap_or(Json::Null),
            capability_list: None,
            reference,
        })
    }
}

/// A stored range: `{}` is none; `netmask`/`network` are recomputed when missing.
fn range_from_json(v: &Json) -> Option<Ipv6Range> {
    let addr = str_of(v, "addr")?;
    let prefixlen = v
        .get("prefixlen")
        .and_then(Json::as_u64)
        .and_then(|n| u8::try_from(n).ok())
        .or_else(|| str_of(v, "netmask").and_then(|m| super::ipcalc::prefixlen_v6(&m)))?;
    Some(Ipv6Range::new(&addr, prefixlen))
}

impl Ipv6Range {
    pub fn new(addr: &str, prefixlen: u8) -> Ipv6Range {
        Ipv6Range {
            addr: addr.to_owned(),
            netmask: super::ipcalc::mask_string_v6(prefixlen),
            network: format!("{addr}/{prefixlen}"),
            prefixlen,
        }
    }
}

fn str_of(v: &Json, key: &str) -> Option<String> {
    v.get(key).and_then(Json::as_str).map(str::to_owned)
}

impl Computer {
    pub fn to_json(&self) -> Json {
        let interface = match &self.interface {
            None => Json::Null,
            Some(i) => json!({
                "ipv4_local_network": i.ipv4_local_network,
                "ipv6_interface": i.ipv6_interface,
                "ipv6_prefixshift": i.ipv6_prefixshift,
                "name": i.name,
            }),
        };
        json!({
            "address": self.address,
            "instance_root": self.instance_root,
            "instance_storage_home": self.instance_storage_home,
            "interface": interface,
            "ipv6_interface": self.ipv6_interface,
            "netmask": self.netmask,
            "os_type": self.os_type,
            "partition_has_ipv6_range": self.partition_has_ipv6_range,
            "partition_list": self.partition_list.iter().map(Partition::to_json).collect::<Vec<_>>(),
            "public_ipv4_address": self.public_ipv4_address,
            "python_version": self.python_version,
            "reference": self.reference,
            "slapos_version": self.slapos_version,
            "software_root": self.software_root,
            "software_user": self.software_user,
            "tap_gateway_interface": self.tap_gateway_interface,
            "tap_ipv6": self.tap_ipv6,
        })
    }
}

/// What a previous run left: the computer address and the partitions, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Previous {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub address: Option<String>,
    pub partitions: Vec<Partition>,
}

/// Reads `computer_json` if configured and present, else `computer_xml`; `None` when
/// neither exists.
pub(crate) fn load_previous(
    json_path: Option<&Path>,
    xml_path: Option<&Path>,
) -> Result<Option<Previous>, FormatError> {
    if let Some(path) = json_path {
        if let Some(bytes) = read_optional(path)? {
            let value: Json = serde_json::from_slice(&bytes).map_err(|e| FormatError::State {
                path: path.to_owned(),
                message: format!("not valid JSON: {e}"),
            })?;
            return previous_from_json(path, &value).map(Some);
        }
    }
    if let Some(path) = xml_path {
        if let Some(bytes) = read_optional(path)? {
            let value =
                marshal::decode(&bytes, &Limits::DEFAULT).map_err(|e| FormatError::State {
                    path: path.to_owned(),
                    message: format!("not an xml_marshaller document: {e}"),
                })?;
            return previous_from_json(path, &marshal_to_json(&value)).map(Some);
        }
    }
    Ok(None)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FormatError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FormatError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

fn previous_from_json(path: &Path, value: &Json) -> Result<Previous, FormatError> {
    let invalid = |message: String| FormatError::State {
        path: path.to_owned(),
        message,
    };
    if !value.is_object() {
        return Err(invalid("the computer is not a dictionary".into()));
    }
    let partitions = match value.get("partition_list") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(list)) => list
            .iter()
            .map(Partition::from_json)
            .collect::<Result<_, _>>()
            .map_err(invalid)?,
        Some(_) => return Err(invalid("partition_list is not a list".into())),
    };
    Ok(Previous {
        path: path.to_owned(),
        address: str_of(value, "address"),
        partitions,
    })
}

/// JSON as Python's `json.dumps(sort_keys=True, indent=N)` writes it: keys sorted (the
/// map is ordered), `", "`-free separators with one item per line, non-ASCII escaped.
pub(crate) fn json_text(value: &Json, indent: usize) -> Result<String, FormatError> {
    let indent = " ".repeat(indent);
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut serializer = serde_json::Serializer::with_formatter(&mut buf, formatter);
    value
        .serialize(&mut serializer)
        .map_err(|e| FormatError::Json(e.to_string()))?;
    let text = String::from_utf8(buf).map_err(|e| FormatError::Json(e.to_string()))?;
    Ok(ascii_escape(&text))
}

/// `ensure_ascii`: every non-ASCII character (only found inside strings) as `\uXXXX`.
fn ascii_escape(text: &str) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The marshal form of a JSON tree (objects become dicts with string keys).
pub(crate) fn json_to_marshal(value: &Json) -> Value {
    match value {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(json_to_marshal).collect()),
        Json::Object(map) => Value::Dict(
            map.iter()
                .map(|(k, v)| (Value::Str(k.clone()), json_to_marshal(v)))
                .collect(),
        ),
    }
}

/// The JSON form of a decoded marshal value (what JSON cannot hold becomes null).
pub(crate) fn marshal_to_json(value: &Value) -> Json {
    match value {
        Value::None | Value::Object(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Long(digits) => Json::String(digits.clone()),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::List(items) | Value::Tuple(items) => {
            Json::Array(items.iter().map(marshal_to_json).collect())
        }
        Value::Dict(entries) => Json::Object(
            entries
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), marshal_to_json(v))))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partition of the example in slapgrid-behaviour.md 1.7.
    pub(crate) fn example_partition() -> Partition {
        Partition {
            reference: "slappart0".into(),
            path: "/srv/slapgrid/slappart0".into(),
            user: User {
                name: "slapuser0".into(),
                path: "/srv/slapgrid/slappart0".into(),
                additional_group_list: vec!["slapsoft".into()],
            },
            address_list: vec![
                Address {
                    addr: "10.0.39.87".into(),
                    netmask: "255.255.255.255".into(),
                },
                Address {
                    addr: "2001:db8:aaaa:bbbb::2".into(),
                    netmask: "ffff:ffff:ffff:ffff::".into(),
                },
            ],
            ipv6_range: Some(Ipv6Range::new("2001:db8:aaaa:bbbb:4001::", 80)),
            tap: Tap {
                name: "slaptap0".into(),
                ipv6_addr: "2001:db8:aaaa:bbbb:8001:ffff:ffff:ffff".into(),
                ipv6_gateway: "2001:db8:aaaa:bbbb:8001::1".into(),
                ipv6_netmask: "ffff:ffff:ffff:ffff:ffff::".into(),
                ipv6_network: "2001:db8:aaaa:bbbb:8001::1/80".into(),
                ..Tap::default()
            },
            tun: Json::Null,
            capability_list: None,
        }
    }

    /// `json.dumps(example, sort_keys=True, indent=4)` of the 1.7 example, by Python 3.
    const EXAMPLE_RESOURCE: &str = r#"{
    "address_list": [
        {
            "addr": "10.0.39.87",
            "netmask": "255.255.255.255"
        },
        {
            "addr": "2001:db8:aaaa:bbbb::2",
            "netmask": "ffff:ffff:ffff:ffff::"
        }
    ],
    "external_storage_list": [],
    "ipv6_range": {
        "addr": "2001:db8:aaaa:bbbb:4001::",
        "netmask": "ffff:ffff:ffff:ffff:ffff::",
        "network": "2001:db8:aaaa:bbbb:4001::/80",
        "prefixlen": 80
    },
    "path": "/srv/slapgrid/slappart0",
    "reference": "slappart0",
    "tap": {
        "ipv4_addr": "",
        "ipv4_gateway": "",
        "ipv4_netmask": "",
        "ipv4_network": "",
        "ipv6_addr": "2001:db8:aaaa:bbbb:8001:ffff:ffff:ffff",
        "ipv6_gateway": "2001:db8:aaaa:bbbb:8001::1",
        "ipv6_netmask": "ffff:ffff:ffff:ffff:ffff::",
        "ipv6_network": "2001:db8:aaaa:bbbb:8001::1/80",
        "name": "slaptap0"
    },
    "tun": null,
    "user": {
        "additional_group_list": [
            "slapsoft"
        ],
        "name": "slapuser0",
        "path": "/srv/slapgrid/slappart0",
        "shell": "/bin/sh"
    }
}"#;

    #[test]
    fn slapos_resource_text_is_the_reference_one() {
        let text = json_text(&example_partition().to_json(), 4).unwrap();
        assert_eq!(text, EXAMPLE_RESOURCE);
    }

    #[test]
    fn partitions_round_trip_through_json_and_marshal() {
        let p = example_partition();
        assert_eq!(
            Partition::from_json(&p.to_json()).unwrap().address_list,
            p.address_list
        );
        let marshalled = json_to_marshal(&p.to_json());
        assert_eq!(
            marshalled
                .dict_get("ipv6_range")
                .and_then(|r| r.dict_get("prefixlen")),
            Some(&Value::Int(80))
        );
        assert_eq!(marshalled.dict_get("tun"), Some(&Value::None));
        let back = Partition::from_json(&marshal_to_json(&marshalled)).unwrap();
        assert_eq!(back.tap, p.tap);
        assert_eq!(back.ipv6_range, p.ipv6_range);
        assert_eq!(back.user.name, "slapuser0");
    }

    #[test]
    fn non_ascii_is_escaped_as_python_does() {
        let text = json_text(&json!({"k": "é😀"}), 2).unwrap();
        assert_eq!(text, "{\n  \"k\": \"\\u00e9\\ud83d\\ude00\"\n}");
    }

    #[test]
    fn a_pretty_printed_reference_xml_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slapos.xml");
        let xml = "<marshal>\n  <dictionary id=\"i2\">\n    <string>address</string>\n    \
            <string>2001:db8::1</string>\n    <string>partition_list</string>\n    \
            <list id=\"i3\">\n      <dictionary id=\"i4\">\n        <string>address_list</string>\n        \
            <list id=\"i5\">\n          <dictionary id=\"i6\">\n            <string>addr</string>\n            \
            <string>10.0.0.9</string>\n            <string>netmask</string>\n            \
            <string>255.255.255.255</string>\n          </dictionary>\n        </list>\n        \
            <string>ipv6_range</string>\n        <dictionary id=\"i7\">\n          <string>addr</string>\n          \
            <string>2001:db8:0:0:4001::</string>\n          <string>prefixlen</string>\n          <int>80</int>\n        \
            </dictionary>\n        <string>reference</string>\n        <string>slappart0</string>\n        \
            <string>tap</string>\n        <none/>\n      </dictionary>\n    </list>\n  </dictionary>\n</marshal>\n";
        std::fs::write(&path, xml).unwrap();
        let previous = load_previous(None, Some(&path)).unwrap().unwrap();
        assert_eq!(previous.address.as_deref(), Some("2001:db8::1"));
        let p = &previous.partitions[0];
        assert_eq!(p.reference, "slappart0");
        assert_eq!(p.address_list[0].addr, "10.0.0.9");
        assert_eq!(
            p.ipv6_range.as_ref().unwrap().netmask,
            "ffff:ffff:ffff:ffff:ffff::"
        );
        assert_eq!(p.tap.name, "slappart0");
    }

    #[test]
    fn a_broken_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slapos.json");
        std::fs::write(&path, "{").unwrap();
        let err = load_previous(Some(&path), None).unwrap_err();
        assert!(err.to_string().contains("slapos.json"), "{err}");
        assert!(load_previous(Some(&dir.path().join("none")), None)
            .unwrap()
            .is_none());
    }
}
