//! Who a certificate stands for: the identities of the group (`<kind>:<id>` common
//! names), and the group's authority as the state stores it. The authority's signing and
//! the reading of certificates are `slapos-ca`'s; the state only names identities.

use serde::{Deserialize, Serialize};

/// Largest identifier inside an identity.
const MAX_ID: usize = 128;

/// A name that is not an identity the group issues certificates for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {0:?}: expected computer:ID, partition:COMPUTER:PARTITION, person:ID, replica:N, gateway:ID or operator:ID (ids of letters, digits and . _ @ + -)")]
pub struct BadIdentity(pub String);

/// Who a certificate stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Identity {
    Computer(String),
    Partition {
        computer: String,
        partition: String,
    },
    Person(String),
    Replica(u64),
    Gateway(String),
    /// A person who runs the group (`operator:<name>`): the master API's operator
    /// commands (membership, servers' certificates and tokens) without holding a
    /// replica's key, and a certificate that outlives any one replica.
    Operator(String),
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

impl Identity {
    /// The common name: `<kind>:<id>`.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Computer(c) => format!("computer:{c}"),
            Identity::Partition {
                computer,
                partition,
            } => format!("partition:{computer}:{partition}"),
            Identity::Person(p) => format!("person:{p}"),
            Identity::Replica(n) => format!("replica:{n}"),
            Identity::Gateway(g) => format!("gateway:{g}"),
            Identity::Operator(o) => format!("operator:{o}"),
        }
    }

    /// Parses a common name, refusing anything [`Identity::common_name`] would not write.
    pub fn parse(text: &str) -> Result<Identity, BadIdentity> {
        let bad = || BadIdentity(text.chars().take(200).collect());
        let (kind, rest) = text.split_once(':').ok_or_else(bad)?;
        let identity = match kind {
            "computer" => Identity::Computer(rest.to_owned()),
            "person" => Identity::Person(rest.to_owned()),
            "gateway" => Identity::Gateway(rest.to_owned()),
            "operator" => Identity::Operator(rest.to_owned()),
            "partition" => {
                let (computer, partition) = rest.split_once(':').ok_or_else(bad)?;
                Identity::Partition {
                    computer: computer.to_owned(),
                    partition: partition.to_owned(),
                }
            }
            "replica" => {
                let n: u64 = rest.parse().map_err(|_| bad())?;
                if n == 0 || n.to_string() != rest {
                    return Err(bad());
                }
                Identity::Replica(n)
            }
            _ => return Err(bad()),
        };
        identity.check().map_err(|_| bad())?;
        Ok(identity)
    }

    /// Every identifier is a plain name.
    pub fn check(&self) -> Result<(), BadIdentity> {
        let ok = match self {
            Identity::Computer(id)
            | Identity::Person(id)
            | Identity::Gateway(id)
            | Identity::Operator(id) => valid_id(id),
            Identity::Partition {
                computer,
                partition,
            } => valid_id(computer) && valid_id(partition),
            Identity::Replica(n) => *n > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(BadIdentity(self.common_name()))
        }
    }

    /// Servers (replicas, gateways) also authenticate as servers.
    pub fn is_server(&self) -> bool {
        matches!(self, Identity::Replica(_) | Identity::Gateway(_))
    }

    /// Identities only an operator (a replica's or an operator's certificate) has issued:
    /// the servers and the operators themselves.
    pub fn is_privileged(&self) -> bool {
        self.is_server() || matches!(self, Identity::Operator(_))
    }
}

/// The CA as the group stores it (replicated; owner-only on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    /// The group's id (random, drawn with the authority; a restored group gets a new
    /// one): replicas refuse Raft traffic from another group's. Empty in a state written
    /// before groups had ids. Always written (a field left out would shift the binary
    /// encoding, which has no field names).
    #[serde(default)]
    pub group: String,
}
