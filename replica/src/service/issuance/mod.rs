//! The group's certificate authority on the replica: the leader signs and records
//! certificates (`Issue`, `PartitionCertificate`), after [`rules`] decided what a gateway
//! may have issued.

pub(crate) mod rules;

use super::{MasterService, ServiceError, NO_LEADER};
use master_client::MasterClient;
use slapos_domain::{Command, Op, RequestId};
use slapos_proto::rpc::master::{
    authority_response, issue_response, partition_certificate_response, AuthorityRequest,
    AuthorityResponse, CertificatePair, IssueRequest, IssueResponse, PartitionCertificateRequest,
    PartitionCertificateResponse,
};
use std::time::Duration;
use tonic::{Request, Response, Status};

impl MasterService {
    /// The leader signs with the group's authority, then records the certificate through
    /// Raft: a certificate is handed out only once the group knows it (so it can be
    /// revoked). `keep`: the private key the masters made (partition certificates), kept
    /// with the record for the partition's node.
    pub(super) async fn sign_and_record(
        &self,
        sign: slapos_ca::IssueRequest<'_>,
        keep: Option<String>,
    ) -> Result<(String, String), ServiceError> {
        use slapos_ca::Authority;
        let material = self
            .state
            .read(|s, _| s.authority().cloned())
            .ok_or(slapos_domain::DomainError::NoAuthority)?;
        let authority = Authority::load(&material)?;
        let issued = authority.issue(&sign)?;
        let hex = format!("{:x}", sign.serial);
        let command = Command {
            // A growing sequence (the outcomes kept per client are the newest ones).
            request_id: RequestId::new(
                format!("master-{}-ca", self.id),
                master_client::proposer_time().micros(),
            ),
            at: master_client::proposer_time(),
            op: Op::RecordCertificate {
                serial: hex.clone(),
                identity: sign.identity.clone(),
                not_after: slapos_domain::Timestamp(
                    issued.not_after_unix.saturating_mul(1_000_000),
                ),
                pair: keep.map(|key_pem| slapos_domain::IssuedPair {
                    cert_pem: issued.pem.clone(),
                    key_pem,
                }),
            },
        };
        self.write_reply(command).await?;
        Ok((issued.pem, hex))
    }

    /// `Issue`: a certificate for the CSR and identity of the request.
    pub(super) async fn issue_for(
        &self,
        req: &IssueRequest,
    ) -> Result<(String, String), ServiceError> {
        if !req.token_sha256.is_empty() {
            return self.enroll(req).await;
        }
        let identity = slapos_ca::Identity::parse(&req.identity)?;
        let mut ips = Vec::new();
        for ip in &req.ip_addresses {
            ips.push(
                ip.parse()
                    .map_err(|_| ServiceError::Refused(format!("not an IP address: {ip:?}")))?,
            );
        }
        let validity = match req.validity_secs {
            0 => slapos_ca::default_validity(&identity),
            s => Duration::from_secs(s.min(10 * 365 * 86400)),
        };
        let now = std::time::SystemTime::now();
        let serial = slapos_ca::random_serial()?;
        self.sign_and_record(
            slapos_ca::IssueRequest {
                csr_pem: &req.csr_pem,
                identity,
                serial,
                not_before: now - Duration::from_secs(300),
                not_after: now + validity,
                dns_names: req.dns_names.clone(),
                ip_addresses: ips,
            },
            None,
        )
        .await
    }

    /// `Issue` with a server enrollment token: the CSR checked first (a bad one does not
    /// spend the token), the token spent through Raft, then the certificate its grant
    /// names (identity and server names from the token, not from the request).
    pub(super) async fn enroll(
        &self,
        req: &IssueRequest,
    ) -> Result<(String, String), ServiceError> {
        slapos_ca::check_csr(&req.csr_pem)?;
        let command = Command {
            request_id: RequestId::new(
                format!("master-{}-enroll", self.id),
                master_client::proposer_time().micros(),
            ),
            at: master_client::proposer_time(),
            op: Op::ConsumeToken {
                hash: req.token_sha256.clone(),
            },
        };
        let grant = match self.write_reply(command).await? {
            slapos_domain::Reply::Enrolled { grant } => grant,
            slapos_domain::Reply::Registered { computer, .. } => slapos_domain::ServerGrant {
                identity: slapos_ca::Identity::Computer(computer),
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
            },
            other => {
                return Err(ServiceError::Internal(format!(
                    "a token answered {other:?}"
                )))
            }
        };
        let granted = IssueRequest {
            csr_pem: req.csr_pem.clone(),
            identity: grant.identity.common_name(),
            validity_secs: 0,
            dns_names: grant.dns_names,
            ip_addresses: grant.ip_addresses,
            token_sha256: String::new(),
            presented_cert_pem: String::new(),
            proof: String::new(),
        };
        Box::pin(self.issue_for(&granted)).await
    }

    /// `PartitionCertificate`: the partition's kept certificate, or a new one (key made
    /// here) while it hosts an instance.
    pub(super) async fn partition_pair(
        &self,
        computer: &str,
        partition: &str,
    ) -> Result<CertificatePair, ServiceError> {
        let identity = slapos_ca::Identity::Partition {
            computer: computer.to_owned(),
            partition: partition.to_owned(),
        };
        identity.check()?;
        let validity = slapos_ca::default_validity(&identity);
        let now = master_client::proposer_time();
        let margin = validity.as_micros() as u64 / 3;
        let (hosts, kept) = self.state.read(|s, _| {
            (
                s.partition_hosts_instance(computer, partition),
                s.partition_certificate(computer, partition, now, margin)
                    .map(|(serial, p)| (serial, p.clone())),
            )
        });
        if let Some((serial, pair)) = kept {
            return Ok(CertificatePair {
                cert_pem: pair.cert_pem,
                key_pem: pair.key_pem,
                serial: format!("{serial:x}"),
            });
        }
        if !hosts {
            return Err(ServiceError::Refused(format!(
                "partition {partition} of {computer} hosts no instance: no certificate"
            )));
        }
        let (key_pem, csr_pem) = slapos_ca::new_key_and_csr(&identity)?;
        let at = std::time::SystemTime::now();
        let serial = slapos_ca::random_serial()?;
        let (cert_pem, serial) = self
            .sign_and_record(
                slapos_ca::IssueRequest {
                    csr_pem: &csr_pem,
                    identity,
                    serial,
                    not_before: at - Duration::from_secs(300),
                    not_after: at + validity,
                    dns_names: Vec::new(),
                    ip_addresses: Vec::new(),
                },
                Some(key_pem.clone()),
            )
            .await?;
        Ok(CertificatePair {
            cert_pem,
            key_pem,
            serial,
        })
    }

    pub(super) async fn authority_rpc(
        &self,
        _request: Request<AuthorityRequest>,
    ) -> Result<Response<AuthorityResponse>, Status> {
        let pem = self
            .state
            .read(|s, _| s.authority().map(|m| m.cert_pem.clone()));
        Ok(Response::new(AuthorityResponse {
            result: Some(match pem {
                Some(p) => authority_response::Result::CertPem(p),
                None => authority_response::Result::Error(
                    slapos_domain::DomainError::NoAuthority.to_string(),
                ),
            }),
        }))
    }

    pub(super) async fn issue_rpc(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let caller = crate::tls::peer_identity(&request);
        let mut req = request.into_inner();
        // Under mTLS a gateway has issued only what a registration or a renewal it
        // relays needs, each proven by what the gateway cannot make (`issuance.rs`);
        // servers' and operators' certificates are the operator's.
        // Checked where the caller is known (a forwarded request names the replica that
        // forwards it). A follower may lag the leader (a token created a moment ago): its
        // refusal sends the caller to the leader, whose state has every write it
        // acknowledged, and only the leader's refusal is final.
        if let Some(slapos_ca::Identity::Gateway(g)) = &caller {
            let now = std::time::SystemTime::now();
            if let Err(refused) = self
                .state
                .read(|s, _| rules::check_gateway_request(s, g, &mut req, now))
            {
                if self.is_leader() {
                    return Err(refused);
                }
                return Ok(Response::new(IssueResponse {
                    result: Some(match self.leader_hint() {
                        Some(h) => issue_response::Result::NotLeader(h),
                        None => issue_response::Result::Unavailable(NO_LEADER.into()),
                    }),
                    serial: String::new(),
                }));
            }
        }
        if !self.is_leader() {
            let r = self
                .ask_leader(
                    forwarded,
                    async |mut leader: MasterClient| leader.issue_once(&req).await,
                    |hint| IssueResponse {
                        result: Some(match hint {
                            Some(h) => issue_response::Result::NotLeader(h),
                            None => issue_response::Result::Unavailable(NO_LEADER.into()),
                        }),
                        serial: String::new(),
                    },
                )
                .await;
            return Ok(Response::new(r));
        }
        Ok(Response::new(match self.issue_for(&req).await {
            Ok((pem, serial)) => IssueResponse {
                result: Some(issue_response::Result::CertPem(pem)),
                serial,
            },
            Err(e) => IssueResponse {
                result: Some(if e.is_unavailable() {
                    issue_response::Result::Unavailable(e.to_string())
                } else {
                    issue_response::Result::Error(e.to_string())
                }),
                serial: String::new(),
            },
        }))
    }

    pub(super) async fn partition_certificate_rpc(
        &self,
        request: Request<PartitionCertificateRequest>,
    ) -> Result<Response<PartitionCertificateResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let caller = crate::tls::peer_identity(&request)
            .map_or_else(|| "a caller".to_string(), |c| c.common_name());
        let req = request.into_inner();
        if !self.is_leader() {
            let r = self
                .ask_leader(
                    forwarded,
                    async |mut leader: MasterClient| leader.partition_certificate_once(&req).await,
                    |hint| PartitionCertificateResponse {
                        result: Some(match hint {
                            Some(h) => partition_certificate_response::Result::NotLeader(h),
                            None => partition_certificate_response::Result::Unavailable(
                                NO_LEADER.into(),
                            ),
                        }),
                    },
                )
                .await;
            return Ok(Response::new(r));
        }
        // Whoever asks (a plain group has no identities): keys leave the masters only for
        // a computer marked as running SlapOS's Python agent. Checked here, on the leader,
        // whose state has every write it acknowledged: a follower may not have applied
        // the computer yet.
        self.state
            .read(|s, _| rules::check_key_delivery(s, &caller, &req.computer))?;
        Ok(Response::new(PartitionCertificateResponse {
            result: Some(
                match self.partition_pair(&req.computer, &req.partition).await {
                    Ok(pair) => partition_certificate_response::Result::Pair(pair),
                    Err(e) if e.is_unavailable() => {
                        partition_certificate_response::Result::Unavailable(e.to_string())
                    }
                    Err(e) => partition_certificate_response::Result::Error(e.to_string()),
                },
            ),
        }))
    }
}
