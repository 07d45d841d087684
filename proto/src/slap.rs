//! The four `slapos.slap.slap` classes as typed Rust values, on top of [`marshal`].
//!
//! Each type models the attributes (the Python object's `__dict__`) that slapproxy and the
//! SlapOS master send, with the types the Python client expects (protocol section 5).
//! Attributes whose presence varies are [`Attr`]s, which keep "absent" apart from "present
//! and `None`" because the two encode differently; anything not modelled lands in `extra`
//! in document order, so `from_value` then `to_value` gives back the same value and the
//! same bytes.
//!
//! The constructor arguments (`__getinitargs__`) are not stored separately: they are
//! derived from the attributes, as Python derives them. When a document carries both,
//! the attribute wins (Python sets the attributes after calling the constructor); an
//! attribute that is absent is taken from the constructor arguments and written back as
//! an attribute.
//!
//! ```
//! use slapos_proto::slap::{Attr, ComputerPartition, SoftwareRelease};
//!
//! let mut p = ComputerPartition::new("COMP-TEST", "slappart5");
//! p.requested_state = Attr::Set("destroyed".into());
//! p.need_modification = Attr::Set(0);
//! p.software_release_document = Attr::Null;
//! p.instance_guid = Attr::Set("COMP-TEST-slappart5".into());
//! let xml = p.encode()?;
//! assert!(xml.starts_with("<marshal><object id=\"i2\" module=\"slapos.slap.slap\" \
//!     class=\"ComputerPartition\"><tuple><string>COMP-TEST</string>"));
//! let back = ComputerPartition::decode(xml.as_bytes(), &slapos_proto::Limits::default())?;
//! assert_eq!(back, p);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`marshal`]: crate::marshal

use std::collections::BTreeMap;

use crate::marshal::{self, EncodeError, Object, SlapClass, Value};
use crate::{DecodeError, Limits};

/// A dictionary with string keys, in key order (the order the marshaller writes them).
pub type StrDict = BTreeMap<String, Value>;

/// One attribute of a slap object: absent from its `__dict__`, present with the value
/// `None`, or present with a value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Attr<T> {
    /// Not in the object's `__dict__` (not written at all).
    #[default]
    Absent,
    /// Present with the value `None` (written `<none/>`).
    Null,
    /// Present with a value.
    Set(T),
}

impl<T> Attr<T> {
    /// The value, if present and not `None`.
    pub fn get(&self) -> Option<&T> {
        match self {
            Attr::Set(v) => Some(v),
            _ => None,
        }
    }

    /// The value, if present and not `None`.
    pub fn into_option(self) -> Option<T> {
        match self {
            Attr::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Attr::Absent)
    }

    pub fn is_set(&self) -> bool {
        matches!(self, Attr::Set(_))
    }

    /// `Some(v)` becomes [`Attr::Set`], `None` becomes [`Attr::Null`].
    pub fn from_option(value: Option<T>) -> Self {
        value.map_or(Attr::Null, Attr::Set)
    }
}

impl<T> From<T> for Attr<T> {
    fn from(value: T) -> Self {
        Attr::Set(value)
    }
}

/// How an attribute type travels as a [`Value`].
trait Codec: Sized {
    fn from_attr(value: &Value) -> Result<Self, String>;
    fn to_attr(&self) -> Value;
}

fn found(expected: &str, value: &Value) -> String {
    format!("expected {expected}, found {}", value.type_name())
}

impl Codec for String {
    fn from_attr(value: &Value) -> Result<Self, String> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| found("str", value))
    }
    fn to_attr(&self) -> Value {
        Value::Str(self.clone())
    }
}

impl Codec for i64 {
    fn from_attr(value: &Value) -> Result<Self, String> {
        value.as_int().ok_or_else(|| found("int", value))
    }
    fn to_attr(&self) -> Value {
        Value::Int(*self)
    }
}

impl Codec for Value {
    fn from_attr(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
    fn to_attr(&self) -> Value {
        self.clone()
    }
}

impl Codec for StrDict {
    fn from_attr(value: &Value) -> Result<Self, String> {
        let entries = value.as_dict().ok_or_else(|| found("dict", value))?;
        let mut dict = StrDict::new();
        for (k, v) in entries {
            let key = k
                .as_str()
                .ok_or_else(|| format!("dict key: {}", found("str", k)))?;
            dict.insert(key.to_owned(), v.clone());
        }
        Ok(dict)
    }
    fn to_attr(&self) -> Value {
        Value::Dict(
            self.iter()
                .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                .collect(),
        )
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn from_attr(value: &Value) -> Result<Self, String> {
        let items = value.as_list().ok_or_else(|| found("list", value))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| T::from_attr(item).map_err(|m| format!("item {i}: {m}")))
            .collect()
    }
    fn to_attr(&self) -> Value {
        Value::List(self.iter().map(Codec::to_attr).collect())
    }
}

impl Codec for (String, String) {
    fn from_attr(value: &Value) -> Result<Self, String> {
        match value.as_tuple() {
            Some([Value::Str(a), Value::Str(b)]) => Ok((a.clone(), b.clone())),
            _ => Err(format!(
                "expected a (str, str) tuple, found {}",
                crate::pyrepr::repr(value)
            )),
        }
    }
    fn to_attr(&self) -> Value {
        Value::Tuple(vec![Value::Str(self.0.clone()), Value::Str(self.1.clone())])
    }
}

impl Codec for SoftwareRelease {
    fn from_attr(value: &Value) -> Result<Self, String> {
        SoftwareRelease::from_value(value).map_err(|e| e.to_string())
    }
    fn to_attr(&self) -> Value {
        self.to_value()
    }
}

impl Codec for ComputerPartition {
    fn from_attr(value: &Value) -> Result<Self, String> {
        ComputerPartition::from_value(value).map_err(|e| e.to_string())
    }
    fn to_attr(&self) -> Value {
        self.to_value()
    }
}

fn shape(class: SlapClass, message: String) -> DecodeError {
    DecodeError::Shape {
        what: class.name(),
        message,
    }
}

fn expect_object(value: &Value, class: SlapClass) -> Result<&Object, DecodeError> {
    match value {
        Value::Object(o) if o.class == class => Ok(o),
        other => Err(shape(
            class,
            format!("expected a {class} object, found {}", other.type_name()),
        )),
    }
}

/// Reads a required attribute (`None` is refused).
fn required<T: Codec>(class: SlapClass, name: &str, value: &Value) -> Result<T, DecodeError> {
    T::from_attr(value).map_err(|m| shape(class, format!("attribute `{name}`: {m}")))
}

/// Reads an optional attribute (`None` gives [`Attr::Null`]).
fn optional<T: Codec>(class: SlapClass, name: &str, value: &Value) -> Result<Attr<T>, DecodeError> {
    if value.is_none() {
        return Ok(Attr::Null);
    }
    required(class, name, value).map(Attr::Set)
}

/// The shape error for constructor arguments that are not `expected`.
fn bad_args(class: SlapClass, expected: &str, args: &[Value]) -> DecodeError {
    shape(
        class,
        format!(
            "constructor arguments: expected {expected}, found {}",
            describe_args(args)
        ),
    )
}

/// `decode` (bytes to the typed object) and `encode` (the object to a marshalled
/// document) for a type with `from_value` and `to_value`.
macro_rules! marshal_shortcuts {
    ($ty:ident) => {
        impl $ty {
            #[doc = concat!("Unmarshals a `", stringify!($ty), "` document.")]
            pub fn decode(input: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
                Self::from_value(&marshal::decode(input, limits)?)
            }

            #[doc = concat!("Marshals this `", stringify!($ty), "`.")]
            pub fn encode(&self) -> Result<String, EncodeError> {
                marshal::encode(&self.to_value())
            }
        }
    };
}

fn describe_args(args: &[Value]) -> String {
    let names: Vec<&str> = args.iter().map(Value::type_name).collect();
    format!("({})", names.join(", "))
}

/// Collects attributes for `to_value`, then sorts them as the marshaller will.
struct AttrsOut(Vec<(String, Value)>);

impl AttrsOut {
    fn with_capacity(n: usize) -> Self {
        AttrsOut(Vec::with_capacity(n))
    }

    fn put<T: Codec>(&mut self, name: &str, value: &T) {
        self.0.push((name.to_owned(), value.to_attr()));
    }

    fn put_attr<T: Codec>(&mut self, name: &str, attr: &Attr<T>) {
        match attr {
            Attr::Absent => {}
            Attr::Null => self.0.push((name.to_owned(), Value::None)),
            Attr::Set(v) => self.put(name, v),
        }
    }

    fn finish(mut self, extra: &[(String, Value)]) -> Vec<(String, Value)> {
        self.0.extend(extra.iter().cloned());
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        self.0
    }
}

/// `Computer` (`getFullComputerInformation`): the computer and everything it must run.
#[derive(Debug, Clone, PartialEq)]
pub struct Computer {
    /// `_computer_id`, also the constructor argument.
    pub computer_id: String,
    /// `_software_release_list`: the supplied software, each with `_requested_state`.
    pub software_release_list: Attr<Vec<SoftwareRelease>>,
    /// `_computer_partition_list`: every partition of the computer.
    pub computer_partition_list: Attr<Vec<ComputerPartition>>,
    /// Attributes not modelled above, in document order.
    pub extra: Vec<(String, Value)>,
}

impl Computer {
    /// A computer with empty software and partition lists.
    pub fn new(computer_id: impl Into<String>) -> Self {
        Computer {
            computer_id: computer_id.into(),
            software_release_list: Attr::Set(Vec::new()),
            computer_partition_list: Attr::Set(Vec::new()),
            extra: Vec::new(),
        }
    }

    /// The software releases (empty when the attribute is absent or `None`).
    pub fn software_releases(&self) -> &[SoftwareRelease] {
        self.software_release_list.get().map_or(&[], Vec::as_slice)
    }

    /// The partitions (empty when the attribute is absent or `None`).
    pub fn partitions(&self) -> &[ComputerPartition] {
        self.computer_partition_list
            .get()
            .map_or(&[], Vec::as_slice)
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        const CLASS: SlapClass = SlapClass::Computer;
        let object = expect_object(value, CLASS)?;
        let mut computer_id = match object.args.as_slice() {
            [Value::Str(id)] => id.clone(),
            args => return Err(bad_args(CLASS, "(str,)", args)),
        };
        let mut software_release_list = Attr::Absent;
        let mut computer_partition_list = Attr::Absent;
        let mut extra = Vec::new();
        for (name, value) in &object.attrs {
            match name.as_str() {
                "_computer_id" => computer_id = required(CLASS, name, value)?,
                "_software_release_list" => {
                    software_release_list = optional(CLASS, name, value)?;
                }
                "_computer_partition_list" => {
                    computer_partition_list = optional(CLASS, name, value)?;
                }
                _ => extra.push((name.clone(), value.clone())),
            }
        }
        Ok(Computer {
            computer_id,
            software_release_list,
            computer_partition_list,
            extra,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut attrs = AttrsOut::with_capacity(3 + self.extra.len());
        attrs.put("_computer_id", &self.computer_id);
        attrs.put_attr("_software_release_list", &self.software_release_list);
        attrs.put_attr("_computer_partition_list", &self.computer_partition_list);
        Value::object(
            SlapClass::Computer,
            vec![Value::Str(self.computer_id.clone())],
            attrs.finish(&self.extra),
        )
    }
}

marshal_shortcuts!(Computer);

/// `ComputerPartition` (`getFullComputerInformation`, `registerComputerPartition`, and the
/// fake partition of the apache-frontend bypass).
#[derive(Debug, Clone, PartialEq)]
pub struct ComputerPartition {
    /// `_computer_id`, constructor argument 1.
    pub computer_id: String,
    /// `_partition_id`, constructor argument 2.
    pub partition_id: String,
    /// `_request_dict`, constructor argument 3: `None` for server-built partitions.
    pub request_dict: Option<Value>,
    /// `_requested_state`: `started`, `stopped` or `destroyed`.
    pub requested_state: Attr<String>,
    /// `_need_modification`: 1 for allocated partitions, 0 for free ones.
    pub need_modification: Attr<i64>,
    /// `_software_release_document`: `None` on free partitions.
    pub software_release_document: Attr<SoftwareRelease>,
    /// `_instance_guid`.
    pub instance_guid: Attr<String>,
    /// `_connection_dict`: published connection parameters.
    pub connection_dict: Attr<StrDict>,
    /// `_parameter_dict`: instance parameters and the reserved keys (`ip_list`,
    /// `slave_instance_list`, `timestamp`, ...), whose values are of several types.
    pub parameter_dict: Attr<StrDict>,
    /// `_access_status` (master only).
    pub access_status: Attr<String>,
    /// `_filter_dict` (master only): the SLA of the instance.
    pub filter_dict: Attr<StrDict>,
    /// `slap_computer_id` (only on the apache-frontend bypass answer, empty there).
    pub slap_computer_id: Attr<String>,
    /// `slap_computer_partition_id` (only on the apache-frontend bypass answer).
    pub slap_computer_partition_id: Attr<String>,
    /// Attributes not modelled above, in document order.
    pub extra: Vec<(String, Value)>,
}

impl ComputerPartition {
    /// A partition with only its ids (and `request_dict` `None`).
    pub fn new(computer_id: impl Into<String>, partition_id: impl Into<String>) -> Self {
        ComputerPartition {
            computer_id: computer_id.into(),
            partition_id: partition_id.into(),
            request_dict: None,
            requested_state: Attr::Absent,
            need_modification: Attr::Absent,
            software_release_document: Attr::Absent,
            instance_guid: Attr::Absent,
            connection_dict: Attr::Absent,
            parameter_dict: Attr::Absent,
            access_status: Attr::Absent,
            filter_dict: Attr::Absent,
            slap_computer_id: Attr::Absent,
            slap_computer_partition_id: Attr::Absent,
            extra: Vec::new(),
        }
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        const CLASS: SlapClass = SlapClass::ComputerPartition;
        let object = expect_object(value, CLASS)?;
        let mut partition = match object.args.as_slice() {
            [Value::Str(computer_id), Value::Str(partition_id), request_dict] => {
                let mut p = ComputerPartition::new(computer_id.clone(), partition_id.clone());
                p.request_dict = (!request_dict.is_none()).then(|| request_dict.clone());
                p
            }
            args => return Err(bad_args(CLASS, "(str, str, request_dict)", args)),
        };
        let p = &mut partition;
        for (name, value) in &object.attrs {
            match name.as_str() {
                "_computer_id" => p.computer_id = required(CLASS, name, value)?,
                "_partition_id" => p.partition_id = required(CLASS, name, value)?,
                "_request_dict" => p.request_dict = (!value.is_none()).then(|| value.clone()),
                "_requested_state" => p.requested_state = optional(CLASS, name, value)?,
                "_need_modification" => p.need_modification = optional(CLASS, name, value)?,
                "_software_release_document" => {
                    p.software_release_document = optional(CLASS, name, value)?;
                }
                "_instance_guid" => p.instance_guid = optional(CLASS, name, value)?,
                "_connection_dict" => p.connection_dict = optional(CLASS, name, value)?,
                "_parameter_dict" => p.parameter_dict = optional(CLASS, name, value)?,
                "_access_status" => p.access_status = optional(CLASS, name, value)?,
                "_filter_dict" => p.filter_dict = optional(CLASS, name, value)?,
                "slap_computer_id" => p.slap_computer_id = optional(CLASS, name, value)?,
                "slap_computer_partition_id" => {
                    p.slap_computer_partition_id = optional(CLASS, name, value)?;
                }
                _ => p.extra.push((name.clone(), value.clone())),
            }
        }
        Ok(partition)
    }

    pub fn to_value(&self) -> Value {
        let request_dict = self.request_dict.clone().unwrap_or(Value::None);
        let mut attrs = AttrsOut::with_capacity(13 + self.extra.len());
        attrs.put("_computer_id", &self.computer_id);
        attrs.put("_partition_id", &self.partition_id);
        attrs.put("_request_dict", &request_dict);
        attrs.put_attr("_requested_state", &self.requested_state);
        attrs.put_attr("_need_modification", &self.need_modification);
        attrs.put_attr(
            "_software_release_document",
            &self.software_release_document,
        );
        attrs.put_attr("_instance_guid", &self.instance_guid);
        attrs.put_attr("_connection_dict", &self.connection_dict);
        attrs.put_attr("_parameter_dict", &self.parameter_dict);
        attrs.put_attr("_access_status", &self.access_status);
        attrs.put_attr("_filter_dict", &self.filter_dict);
        attrs.put_attr("slap_computer_id", &self.slap_computer_id);
        attrs.put_attr(
            "slap_computer_partition_id",
            &self.slap_computer_partition_id,
        );
        Value::object(
            SlapClass::ComputerPartition,
            vec![
                Value::Str(self.computer_id.clone()),
                Value::Str(self.partition_id.clone()),
                request_dict,
            ],
            attrs.finish(&self.extra),
        )
    }
}

marshal_shortcuts!(ComputerPartition);

/// `SoftwareRelease`: in a computer's `_software_release_list` (with `_requested_state`)
/// and as a partition's `_software_release_document` (without).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftwareRelease {
    /// `_software_release` (the URL), constructor argument 1.
    pub software_release: String,
    /// `_computer_guid`, constructor argument 2.
    pub computer_guid: String,
    /// `_software_instance_list`: always an empty list in practice.
    pub software_instance_list: Attr<Vec<Value>>,
    /// `_requested_state`: `available` or `destroyed`.
    pub requested_state: Attr<String>,
    /// Attributes not modelled above, in document order.
    pub extra: Vec<(String, Value)>,
}

impl SoftwareRelease {
    /// A release with an empty `_software_instance_list` and no `_requested_state`.
    pub fn new(software_release: impl Into<String>, computer_guid: impl Into<String>) -> Self {
        SoftwareRelease {
            software_release: software_release.into(),
            computer_guid: computer_guid.into(),
            software_instance_list: Attr::Set(Vec::new()),
            requested_state: Attr::Absent,
            extra: Vec::new(),
        }
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        const CLASS: SlapClass = SlapClass::SoftwareRelease;
        let object = expect_object(value, CLASS)?;
        let mut release = match object.args.as_slice() {
            [Value::Str(url), Value::Str(computer_guid)] => SoftwareRelease {
                software_release: url.clone(),
                computer_guid: computer_guid.clone(),
                software_instance_list: Attr::Absent,
                requested_state: Attr::Absent,
                extra: Vec::new(),
            },
            args => return Err(bad_args(CLASS, "(str, str)", args)),
        };
        let r = &mut release;
        for (name, value) in &object.attrs {
            match name.as_str() {
                "_software_release" => r.software_release = required(CLASS, name, value)?,
                "_computer_guid" => r.computer_guid = required(CLASS, name, value)?,
                "_software_instance_list" => {
                    r.software_instance_list = optional(CLASS, name, value)?;
                }
                "_requested_state" => r.requested_state = optional(CLASS, name, value)?,
                _ => r.extra.push((name.clone(), value.clone())),
            }
        }
        Ok(release)
    }

    pub fn to_value(&self) -> Value {
        let mut attrs = AttrsOut::with_capacity(4 + self.extra.len());
        attrs.put("_software_release", &self.software_release);
        attrs.put("_computer_guid", &self.computer_guid);
        attrs.put_attr("_software_instance_list", &self.software_instance_list);
        attrs.put_attr("_requested_state", &self.requested_state);
        Value::object(
            SlapClass::SoftwareRelease,
            vec![
                Value::Str(self.software_release.clone()),
                Value::Str(self.computer_guid.clone()),
            ],
            attrs.finish(&self.extra),
        )
    }
}

marshal_shortcuts!(SoftwareRelease);

/// `SoftwareInstance` (`requestComputerPartition`). Its attributes differ between a
/// regular instance, a shared (slave) instance and the master's answer; each is an
/// [`Attr`] so every variant re-encodes exactly. The class has no constructor arguments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SoftwareInstance {
    /// `_instance_guid` (absent for proxy shared instances).
    pub instance_guid: Attr<String>,
    /// `_requested_state` (absent for proxy shared instances).
    pub requested_state: Attr<String>,
    /// `_parameter_dict`.
    pub parameter_dict: Attr<StrDict>,
    /// `_connection_dict`.
    pub connection_dict: Attr<StrDict>,
    /// `_filter_dict` (master).
    pub filter_dict: Attr<StrDict>,
    /// `connection_xml`: the stored connection instance XML, or `None` (proxy, regular).
    pub connection_xml: Attr<String>,
    /// `ip_list`: `(interface, address)` tuples.
    pub ip_list: Attr<Vec<(String, String)>>,
    /// `full_ip_list` (master): `(iface, ip, gateway, netmask, network)` tuples.
    pub full_ip_list: Attr<Vec<Value>>,
    /// `slap_computer_id`: where the instance (or the host of a shared one) runs.
    pub slap_computer_id: Attr<String>,
    /// `slap_computer_partition_id`: `getId()` on the client.
    pub slap_computer_partition_id: Attr<String>,
    /// `slap_software_release_url`.
    pub slap_software_release_url: Attr<String>,
    /// `slap_software_type`.
    pub slap_software_type: Attr<String>,
    /// `slap_server_url` (proxy: the literal string `slap_server_url`).
    pub slap_server_url: Attr<String>,
    /// `instance_title` (master).
    pub instance_title: Attr<String>,
    /// `root_instance_title` (master).
    pub root_instance_title: Attr<String>,
    /// `root_instance_short_title` (master).
    pub root_instance_short_title: Attr<String>,
    /// `slave_instance_list` (master).
    pub slave_instance_list: Attr<Vec<StrDict>>,
    /// `timestamp` (master: an int).
    pub timestamp: Attr<Value>,
    /// Attributes not modelled above, in document order.
    pub extra: Vec<(String, Value)>,
}

impl SoftwareInstance {
    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        const CLASS: SlapClass = SlapClass::SoftwareInstance;
        let object = expect_object(value, CLASS)?;
        if !object.args.is_empty() {
            return Err(shape(
                CLASS,
                format!(
                    "constructor arguments: expected (), found {}",
                    describe_args(&object.args)
                ),
            ));
        }
        let mut instance = SoftwareInstance::default();
        let i = &mut instance;
        for (name, value) in &object.attrs {
            match name.as_str() {
                "_instance_guid" => i.instance_guid = optional(CLASS, name, value)?,
                "_requested_state" => i.requested_state = optional(CLASS, name, value)?,
                "_parameter_dict" => i.parameter_dict = optional(CLASS, name, value)?,
                "_connection_dict" => i.connection_dict = optional(CLASS, name, value)?,
                "_filter_dict" => i.filter_dict = optional(CLASS, name, value)?,
                "connection_xml" => i.connection_xml = optional(CLASS, name, value)?,
                "ip_list" => i.ip_list = optional(CLASS, name, value)?,
                "full_ip_list" => i.full_ip_list = optional(CLASS, name, value)?,
                "slap_computer_id" => i.slap_computer_id = optional(CLASS, name, value)?,
                "slap_computer_partition_id" => {
                    i.slap_computer_partition_id = optional(CLASS, name, value)?;
                }
                "slap_software_release_url" => {
                    i.slap_software_release_url = optional(CLASS, name, value)?;
                }
                "slap_software_type" => i.slap_software_type = optional(CLASS, name, value)?,
                "slap_server_url" => i.slap_server_url = optional(CLASS, name, value)?,
                "instance_title" => i.instance_title = optional(CLASS, name, value)?,
                "root_instance_title" => i.root_instance_title = optional(CLASS, name, value)?,
                "root_instance_short_title" => {
                    i.root_instance_short_title = optional(CLASS, name, value)?;
                }
                "slave_instance_list" => i.slave_instance_list = optional(CLASS, name, value)?,
                "timestamp" => i.timestamp = optional(CLASS, name, value)?,
                _ => i.extra.push((name.clone(), value.clone())),
            }
        }
        Ok(instance)
    }

    pub fn to_value(&self) -> Value {
        let mut attrs = AttrsOut::with_capacity(18 + self.extra.len());
        attrs.put_attr("_instance_guid", &self.instance_guid);
        attrs.put_attr("_requested_state", &self.requested_state);
        attrs.put_attr("_parameter_dict", &self.parameter_dict);
        attrs.put_attr("_connection_dict", &self.connection_dict);
        attrs.put_attr("_filter_dict", &self.filter_dict);
        attrs.put_attr("connection_xml", &self.connection_xml);
        attrs.put_attr("ip_list", &self.ip_list);
        attrs.put_attr("full_ip_list", &self.full_ip_list);
        attrs.put_attr("slap_computer_id", &self.slap_computer_id);
        attrs.put_attr(
            "slap_computer_partition_id",
            &self.slap_computer_partition_id,
        );
        attrs.put_attr("slap_software_release_url", &self.slap_software_release_url);
        attrs.put_attr("slap_software_type", &self.slap_software_type);
        attrs.put_attr("slap_server_url", &self.slap_server_url);
        attrs.put_attr("instance_title", &self.instance_title);
        attrs.put_attr("root_instance_title", &self.root_instance_title);
        attrs.put_attr("root_instance_short_title", &self.root_instance_short_title);
        attrs.put_attr("slave_instance_list", &self.slave_instance_list);
        attrs.put_attr("timestamp", &self.timestamp);
        Value::object(
            SlapClass::SoftwareInstance,
            Vec::new(),
            attrs.finish(&self.extra),
        )
    }
}

marshal_shortcuts!(SoftwareInstance);

/// Any of the four objects, for a response whose class is known only from the document
/// (`requestComputerPartition` answers a `SoftwareInstance`, or a `ComputerPartition` for
/// the apache-frontend bypass).
#[derive(Debug, Clone, PartialEq)]
pub enum SlapObject {
    Computer(Computer),
    ComputerPartition(ComputerPartition),
    SoftwareRelease(SoftwareRelease),
    SoftwareInstance(SoftwareInstance),
}

impl SlapObject {
    pub fn class(&self) -> SlapClass {
        match self {
            SlapObject::Computer(_) => SlapClass::Computer,
            SlapObject::ComputerPartition(_) => SlapClass::ComputerPartition,
            SlapObject::SoftwareRelease(_) => SlapClass::SoftwareRelease,
            SlapObject::SoftwareInstance(_) => SlapClass::SoftwareInstance,
        }
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let Some(object) = value.as_object() else {
            return Err(DecodeError::Shape {
                what: "slap object",
                message: format!("expected an object, found {}", value.type_name()),
            });
        };
        Ok(match object.class {
            SlapClass::Computer => SlapObject::Computer(Computer::from_value(value)?),
            SlapClass::ComputerPartition => {
                SlapObject::ComputerPartition(ComputerPartition::from_value(value)?)
            }
            SlapClass::SoftwareRelease => {
                SlapObject::SoftwareRelease(SoftwareRelease::from_value(value)?)
            }
            SlapClass::SoftwareInstance => {
                SlapObject::SoftwareInstance(SoftwareInstance::from_value(value)?)
            }
        })
    }

    pub fn to_value(&self) -> Value {
        match self {
            SlapObject::Computer(o) => o.to_value(),
            SlapObject::ComputerPartition(o) => o.to_value(),
            SlapObject::SoftwareRelease(o) => o.to_value(),
            SlapObject::SoftwareInstance(o) => o.to_value(),
        }
    }

    /// Unmarshals a document holding one of the four objects.
    pub fn decode(input: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        Self::from_value(&marshal::decode(input, limits)?)
    }

    pub fn encode(&self) -> Result<String, EncodeError> {
        marshal::encode(&self.to_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_none_encode_differently() {
        let mut a = SoftwareInstance::default();
        let b = SoftwareInstance {
            connection_xml: Attr::Null,
            ..SoftwareInstance::default()
        };
        a.slap_server_url = Attr::Set("slap_server_url".into());
        let xa = a.encode().unwrap_or_default();
        let xb = b.encode().unwrap_or_default();
        assert!(!xa.contains("connection_xml"));
        assert!(xb.contains("<string>connection_xml</string><none/>"));
        let limits = Limits::default();
        assert_eq!(SoftwareInstance::decode(xa.as_bytes(), &limits), Ok(a));
        assert_eq!(SoftwareInstance::decode(xb.as_bytes(), &limits), Ok(b));
    }

    #[test]
    fn wrong_types_are_refused_with_the_attribute_named() {
        let v = Value::object(
            SlapClass::ComputerPartition,
            vec!["C".into(), "p".into(), Value::None],
            vec![("_need_modification".into(), "1".into())],
        );
        let err = ComputerPartition::from_value(&v)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid ComputerPartition: attribute `_need_modification`: expected int, found str")
        );
        let err = Computer::from_value(&v).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid Computer: expected a Computer object, found ComputerPartition")
        );
        let v = Value::object(SlapClass::SoftwareInstance, vec![Value::Int(1)], vec![]);
        assert!(SoftwareInstance::from_value(&v).is_err());
    }

    #[test]
    fn attributes_override_constructor_arguments() {
        let v = Value::object(
            SlapClass::SoftwareRelease,
            vec!["url-arg".into(), "C".into()],
            vec![("_software_release".into(), "url-attr".into())],
        );
        let r = SoftwareRelease::from_value(&v).ok();
        assert_eq!(r.map(|r| r.software_release), Some("url-attr".to_string()));
    }
}
