//! The legacy SLAP endpoints, without a transport.
//!
//! A transport (the HTTPS server to come, or a test) hands [`forms::parse`] the endpoint,
//! the already URL-decoded form fields or query parameters and the `Authorization` header.
//! It gets back a [`forms::SlapCall`]:
//!
//! * a [`forms::Write`] whose [`slapos_domain::Op`] the caller wraps into a
//!   [`slapos_domain::Command`] (request id and time are the caller's), applies, and renders
//!   with [`render::write`];
//! * a [`forms::Query`] answered from a view of the state by [`render::query`];
//! * or an answer that needs no state at all.
//!
//! Every answer is a [`SlapResponse`]: status, content type and body bytes. Errors of the
//! input ([`forms::FormError`]) and of the domain ([`slapos_domain::DomainError`]) map to
//! status codes in one place each ([`forms::FormError::status`], [`render::domain_error`]).

pub mod forms;
pub mod render;

use slapos_domain::{Command, RequestId, State, Timestamp};
use slapos_proto::Limits;

/// One call served against a local state, start to end: parse, apply (stamped with the
/// caller's request id and time, used only when the call is a write), render. What a
/// single-process master (proxy mode, tests) does; the gateway of a Raft cluster splits
/// the same steps around the master client.
pub fn serve_local(
    ctx: &SlapContext,
    state: &mut State,
    endpoint: Endpoint,
    fields: &[(String, String)],
    authorization: Option<&str>,
    request_id: RequestId,
    at: Timestamp,
) -> SlapResponse {
    let call = match forms::parse(ctx, endpoint, fields, authorization) {
        Ok(call) => call,
        Err(e) => return e.to_response(),
    };
    match call {
        forms::SlapCall::Answer(response) => response,
        forms::SlapCall::Query(q) => render::query(ctx, state, &q),
        forms::SlapCall::Write(w) => {
            let outcome = state.apply(&Command {
                request_id,
                at,
                op: w.op.clone(),
            });
            // no storage behind a local state: its usage stays where reads find it
            state.keep_usage_in_memory();
            render::write(state, &w, &outcome)
        }
    }
}

/// How this gateway answers what the protocol leaves to the master: who owns root
/// requests, whether the `X-SlapPartition` header is honoured, the software product list.
#[derive(Debug, Clone, PartialEq)]
pub struct SlapContext {
    /// The person a request is made for when it names no partition (`slapos request`,
    /// `OpenOrder.request`). In proxy mode a fixed id such as `user`; behind certificate
    /// authentication, the person the certificate identifies.
    pub person: String,
    /// Honour `Authorization: X-SlapPartition computer_id=.., computer_partition_id=..`
    /// as the identity of the requesting partition (slapproxy's behaviour since 1.26.0).
    /// Off, the header is ignored and the form fields name the requester.
    pub partition_header: bool,
    /// A computer that `getFullComputerInformation` answers with an empty `Computer` even
    /// before it was formatted (slapproxy's own `computer_id`). None on a real master.
    pub default_computer: Option<String>,
    /// `software_product_list`: (product reference, software release URL), in order.
    pub software_products: Vec<(String, String)>,
    /// The answer of `getRunId` (slapproxy's process id, for multimaster self-detection);
    /// None answers 404.
    pub run_id: Option<String>,
    /// Whether `person` has the group's admin rights (reads anyone's invoices and
    /// movements, closes periods): what the replicated state records, decided per
    /// request by the server.
    pub admin: bool,
    /// Bounds on form fields.
    pub limits: FieldLimits,
}

/// Bounds on the inputs of one call. Marshalled fields go through the bounded decoder with
/// the limits of their kind; plain text fields are refused beyond `text_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// `state`, `shared_xml`, `filter_xml`, `instance_reference_xml`.
    pub small: Limits,
    /// `partition_parameter_xml`, `connection_xml`.
    pub parameters: Limits,
    /// `xml` of `loadComputerConfigurationFromXML`, `use_string` of `useComputer`.
    pub document: Limits,
    /// Any other field (ids, URLs, messages, error logs).
    pub text_max_bytes: usize,
}

impl FieldLimits {
    pub const DEFAULT: FieldLimits = FieldLimits {
        small: Limits::SMALL,
        parameters: Limits {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
            max_elements: 200_000,
            // As the presets: references may at most double a document of the largest
            // size (slapos-proto's DESIGN.md, "Reference expansion").
            max_expanded_bytes: 8 * 1024 * 1024,
        },
        document: Limits::DEFAULT,
        text_max_bytes: 1024 * 1024,
    };
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits::DEFAULT
    }
}

impl SlapContext {
    /// What a slapproxy-compatible master answers: root requests belong to `user`, the
    /// `X-SlapPartition` header is honoured, `default_computer` is answered unformatted.
    pub fn proxy(default_computer: Option<&str>) -> Self {
        SlapContext {
            person: "user".to_string(),
            partition_header: true,
            default_computer: default_computer.map(str::to_string),
            software_products: Vec::new(),
            run_id: None,
            admin: false,
            limits: FieldLimits::DEFAULT,
        }
    }

    /// Reads slapproxy's `software_product_list` setting: one `<reference> <url>` per line
    /// (split on the first space), blank lines ignored.
    pub fn with_software_product_list(mut self, setting: &str) -> Self {
        self.software_products = setting
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(' '))
            .map(|(r, u)| (r.to_string(), u.trim().to_string()))
            .collect();
        self
    }
}

/// The HTTP method an endpoint is called with. Reads are GET with query parameters,
/// writes POST with a form body; the client never uses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

macro_rules! endpoints {
    ($( $variant:ident = $name:literal, $method:ident; )*) => {
        /// Every legacy SLAP endpoint (section 3.1 of the protocol reference).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Endpoint {
            $( $variant, )*
        }

        impl Endpoint {
            /// All endpoints, in the order of the protocol reference.
            pub const ALL: &'static [Endpoint] = &[ $( Endpoint::$variant, )* ];

            /// The method name, i.e. the last segment of the URL path.
            pub fn name(self) -> &'static str {
                match self {
                    $( Endpoint::$variant => $name, )*
                }
            }

            /// The HTTP method the client uses for it.
            pub fn method(self) -> Method {
                match self {
                    $( Endpoint::$variant => Method::$method, )*
                }
            }
        }
    };
}

endpoints! {
    GetFullComputerInformation = "getFullComputerInformation", Get;
    GetComputerInformation = "getComputerInformation", Get;
    LoadComputerConfigurationFromXml = "loadComputerConfigurationFromXML", Post;
    SupplySupply = "supplySupply", Post;
    RequestComputerPartition = "requestComputerPartition", Post;
    RegisterComputerPartition = "registerComputerPartition", Get;
    SetComputerPartitionConnectionXml = "setComputerPartitionConnectionXml", Post;
    SoftwareInstanceBang = "softwareInstanceBang", Post;
    SoftwareInstanceRename = "softwareInstanceRename", Post;
    StartedComputerPartition = "startedComputerPartition", Post;
    StoppedComputerPartition = "stoppedComputerPartition", Post;
    DestroyedComputerPartition = "destroyedComputerPartition", Post;
    SoftwareInstanceError = "softwareInstanceError", Post;
    BuildingSoftwareRelease = "buildingSoftwareRelease", Post;
    AvailableSoftwareRelease = "availableSoftwareRelease", Post;
    SoftwareReleaseError = "softwareReleaseError", Post;
    DestroyedSoftwareRelease = "destroyedSoftwareRelease", Post;
    UseComputer = "useComputer", Post;
    ComputerBang = "computerBang", Post;
    GetComputerPartitionCertificate = "getComputerPartitionCertificate", Get;
    GetSoftwareReleaseListFromSoftwareProduct = "getSoftwareReleaseListFromSoftwareProduct", Get;
    GetComputerPartitionStatus = "getComputerPartitionStatus", Get;
    GetRunId = "getRunId", Get;
    GetHateoasUrl = "getHateoasUrl", Get;
    GetHostingSubscriptionIpList = "getHostingSubscriptionIpList", Get;
    GetComputerStatus = "getComputerStatus", Get;
    GenerateComputerCertificate = "generateComputerCertificate", Post;
    RevokeComputerCertificate = "revokeComputerCertificate", Post;
    RequestComputer = "requestComputer", Post;
    UpdateComputerPartitionRelatedInstanceList = "updateComputerPartitionRelatedInstanceList", Post;
}

impl Endpoint {
    /// The endpoint a URL path names: its last segment, so a master may live under a
    /// prefix (`/slap/requestComputerPartition`). Case-sensitive, as the client spells it.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let name = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(path);
        Endpoint::ALL.iter().copied().find(|e| e.name() == name)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The content type of marshalled answers (the real master's; the client ignores it).
pub const CONTENT_TYPE_XML: &str = "text/xml; charset=utf-8";
/// The content type of plain-text answers and error messages.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// One answer, ready for any transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlapResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl SlapResponse {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        SlapResponse {
            status,
            content_type: CONTENT_TYPE_TEXT,
            body: body.into().into_bytes(),
        }
    }

    /// A 200 answer holding an `xml_marshaller` document.
    pub fn marshalled(document: String) -> Self {
        SlapResponse {
            status: 200,
            content_type: CONTENT_TYPE_XML,
            body: document.into_bytes(),
        }
    }

    /// The body as text (lossy), for logs and tests.
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
