//! What this gateway gives the web portal (`slapos-portal`, mounted at `/portal/`): the
//! portal's [`Backend`] over the gateway's own master reads and writes, every call
//! checked by the one authorization table (`authz.rs`) as the signed-in person.

use std::collections::BTreeMap;
use std::sync::Arc;

use slapos_domain::{
    DomainError, Identity, InstanceId, Op, ParamValue, Reply, Requester, SoftwareReport,
    SoftwareState, State, StatusKind, Timestamp,
};
use slapos_portal::{
    Backend, BackendError, GroupStatus, Installed, Member, Offer, Principal, Reported, Server,
    Service, ServiceRequest, ServiceRow, SessionInfo, SignedInBy,
};

use super::app::App;
use super::authz::{self, Caller};
use super::master::MasterError;

/// The portal's view of this gateway.
pub struct PortalBackend {
    pub app: Arc<App>,
}

fn from_master(e: MasterError) -> BackendError {
    match e.status() {
        403 => BackendError::Forbidden(e.to_string()),
        404 => BackendError::NotFound(e.to_string()),
        409 => BackendError::Conflict(e.to_string()),
        400 => BackendError::Invalid(e.to_string()),
        _ => BackendError::Unavailable(e.to_string()),
    }
}

fn from_domain(e: &DomainError) -> BackendError {
    match crate::slap::render::domain_status(e) {
        403 => BackendError::Forbidden(e.to_string()),
        404 => BackendError::NotFound(e.to_string()),
        409 => BackendError::Conflict(e.to_string()),
        400 => BackendError::Invalid(e.to_string()),
        _ => BackendError::Unavailable(e.to_string()),
    }
}

fn secs(t: Timestamp) -> u64 {
    t.0 / 1_000_000
}

/// The caller the table checks: the person the portal signed in (by certificate or
/// password session). A session has no certificate: serial 0, nothing to renew.
fn caller_of(who: &Principal) -> Caller {
    Caller::Identity {
        identity: Identity::Person(who.person.clone()),
        admin: who.admin,
        serial: 0,
        lifetime_secs: 0,
        certificate: Arc::from(Vec::new()),
    }
}

fn reported(i: &slapos_domain::Instance) -> Option<Reported> {
    i.access_status.as_ref().map(|a| Reported {
        kind: match a.kind {
            StatusKind::Started => "started",
            StatusKind::Stopped => "stopped",
            StatusKind::Error => "error",
            StatusKind::Bang => "bang",
        }
        .to_owned(),
        message: a.message.clone(),
        at: secs(a.at),
    })
}

fn placement(state: &State, id: InstanceId) -> Option<String> {
    let v = state.instance_view(id).ok()?;
    match (v.host, v.computer, v.partition) {
        (Some(h), _, _) => Some(format!("shared on {}", h.id)),
        (None, Some(c), Some(p)) => Some(format!("{}/{}", c.id, p.id)),
        _ => None,
    }
}

fn strings(map: &BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect()
}

/// A tree as the portal shows it, from a state holding its members.
fn service_of(state: &State, id: InstanceId) -> Option<Service> {
    let root = state.instance(id)?;
    let members = state
        .tree_members(id)
        .map(|m| Member {
            id: m.id.to_string(),
            title: m.title.clone(),
            software_type: m.software_type.clone(),
            requested_state: m.requested_state.as_str().to_owned(),
            placement: placement(state, m.id),
            reported: reported(m),
        })
        .collect();
    Some(Service {
        id: root.id.to_string(),
        title: root.title.clone(),
        software_release: root.software_release.clone(),
        software_type: root.software_type.clone(),
        shared: root.shared,
        requested_state: root.own_state.as_str().to_owned(),
        reported: reported(root),
        parameters: strings(&root.parameter_strings),
        connection: strings(&root.connection),
        sla: root.sla.clone(),
        placement: placement(state, id),
        computer: state
            .instance_view(id)
            .ok()
            .and_then(|v| v.computer.map(|c| c.id.clone())),
        members,
    })
}

impl Backend for PortalBackend {
    fn certificate_person(
        &self,
        parts: &axum::http::request::Parts,
    ) -> Result<Option<Principal>, BackendError> {
        match super::authz::caller_of(&self.app, parts) {
            Err(r) => Err(BackendError::Forbidden(
                String::from_utf8_lossy(&r.body).into_owned(),
            )),
            Ok(Some(Some(c))) => Ok(c.person().map(|p| Principal {
                person: p.to_owned(),
                admin: c.is_admin(),
                via: SignedInBy::Certificate,
            })),
            // No certificate (or no client certificates at all on this gateway): the
            // portal asks for a password.
            Ok(_) => Ok(None),
        }
    }

    async fn password_hash(&self, person: &str) -> Result<Option<String>, BackendError> {
        let state = self
            .app
            .masters
            .read_person(person)
            .await
            .map_err(from_master)?;
        Ok(state.password_hash(person).map(str::to_owned))
    }

    async fn set_password(
        &self,
        who: &Principal,
        person: &str,
        hash: Option<String>,
    ) -> Result<(), BackendError> {
        let op = Op::SetPassword {
            person: person.to_owned(),
            by: Some(who.person.clone()),
            hash,
        };
        authz::check_op(&caller_of(who), &op).map_err(BackendError::Forbidden)?;
        self.write(op).await.map(|_| ())
    }

    async fn open_session(
        &self,
        person: &str,
        hash: &str,
        expires_at: u64,
    ) -> Result<(), BackendError> {
        // Written by the gateway itself once it checked the password (no caller yet):
        // the session's token never leaves the browser, only its hash is recorded.
        self.write(Op::OpenWebSession {
            hash: hash.to_owned(),
            person: person.to_owned(),
            expires_at: Timestamp::from_secs(expires_at),
        })
        .await
        .map(|_| ())
    }

    async fn session(&self, hash: &str) -> Result<Option<SessionInfo>, BackendError> {
        let state = self
            .app
            .masters
            .read_web_session(hash)
            .await
            .map_err(from_master)?;
        Ok(state.web_session(hash).map(|s| SessionInfo {
            admin: self.app.admins.contains(&s.person),
            person: s.person.clone(),
            expires_at: secs(s.expires_at),
        }))
    }

    async fn end_session(&self, hash: &str) -> Result<(), BackendError> {
        self.write(Op::EndWebSession {
            hash: hash.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn services(&self, who: &Principal) -> Result<Vec<ServiceRow>, BackendError> {
        let caller = caller_of(who);
        let owner = authz::portal_reader(&caller).map_err(BackendError::Forbidden)?;
        // The roots alone (`Query::Roots`): the list shows no member, parameter or
        // placement, so neither the trees' other members nor their computers are read.
        let state = self
            .app
            .masters
            .read_roots(owner)
            .await
            .map_err(from_master)?;
        Ok(state
            .roots_of(owner)
            .filter_map(|(_, id)| state.instance(id))
            .map(|root| ServiceRow {
                id: root.id.to_string(),
                title: root.title.clone(),
                software_release: root.software_release.clone(),
                requested_state: root.own_state.as_str().to_owned(),
                reported: reported(root),
            })
            .collect())
    }

    async fn service(&self, who: &Principal, id: &str) -> Result<Service, BackendError> {
        let caller = caller_of(who);
        let owner = authz::portal_reader(&caller).map_err(BackendError::Forbidden)?;
        let not_found = || BackendError::NotFound(format!("no service {id} of yours"));
        let root = InstanceId::parse(id).ok_or_else(not_found)?;
        let state = self
            .app
            .masters
            .read_tree(root)
            .await
            .map_err(from_master)?;
        // Only the person's own roots: another's tree, or a member's id, is not found.
        match state.instance(root) {
            Some(i) if i.is_root() && i.owner == owner => {
                service_of(&state, root).ok_or_else(not_found)
            }
            _ => Err(not_found()),
        }
    }

    async fn catalog(&self, who: &Principal) -> Result<Vec<Offer>, BackendError> {
        let caller = caller_of(who);
        let person = authz::portal_reader(&caller).map_err(BackendError::Forbidden)?;
        let state = self
            .app
            .masters
            .read_catalog(person)
            .await
            .map_err(from_master)?;
        Ok(state
            .supplied_releases()
            .into_iter()
            .map(|(url, computers)| Offer {
                url: url.to_owned(),
                computers: computers.len(),
            })
            .collect())
    }

    async fn servers(&self, who: &Principal) -> Result<Vec<Server>, BackendError> {
        let caller = caller_of(who);
        // The table's portal reader: the owner read is the caller, never a name from
        // the request, so a person sees only the computers registered as theirs.
        let owner = authz::portal_reader(&caller).map_err(BackendError::Forbidden)?;
        let state = self
            .app
            .masters
            .read_computers(owner)
            .await
            .map_err(from_master)?;
        Ok(state
            .computers()
            .filter(|c| c.owner == owner)
            .filter_map(|c| state.computer_view(&c.id).ok())
            .map(|v| Server {
                id: v.computer.id.clone(),
                title: v.computer.title.clone(),
                region: v.computer.region.clone(),
                partitions: v.computer.partitions.len(),
                used: v
                    .computer
                    .partitions
                    .iter()
                    .filter(|p| p.instance.is_some())
                    .count(),
                releases: v
                    .software
                    .iter()
                    .map(|s| Installed {
                        url: s.url.to_owned(),
                        requested: match s.installation.requested {
                            SoftwareState::Available => "available",
                            SoftwareState::Destroyed => "destroyed",
                        }
                        .to_owned(),
                        reported: s.installation.reported.as_ref().map(|r| match r {
                            SoftwareReport::Building => "building".to_owned(),
                            SoftwareReport::Available => "available".to_owned(),
                            SoftwareReport::Error(e) => format!("error: {e}"),
                            SoftwareReport::Destroyed => "destroyed".to_owned(),
                        }),
                    })
                    .collect(),
                last_contact: v.computer.last_contact.map(secs),
            })
            .collect())
    }

    async fn group(&self, who: &Principal) -> Result<GroupStatus, BackendError> {
        authz::portal_operator(&caller_of(who)).map_err(BackendError::Forbidden)?;
        self.app.masters.group_status().await.map_err(from_master)
    }

    async fn parameter_schema(
        &self,
        software_release: &str,
        software_type: &str,
    ) -> Option<serde_json::Value> {
        let store = self.app.releases.as_ref()?;
        let sha = software_release
            .strip_suffix("/software.toml")?
            .rsplit('/')
            .next()?;
        crate::releases::parameter_schema(store, sha, software_type)
    }

    async fn wait_for_change(&self, service: &Service, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        match &service.computer {
            // Woken by the replicas' stream of applied changes that names the computer
            // (`follow.rs`), as a node's long poll is.
            Some(computer) => {
                let mut held = self.app.views.hold(computer);
                !matches!(held.wait(deadline).await, super::views::Wake::Closing)
            }
            None => {
                tokio::time::sleep_until(deadline).await;
                true
            }
        }
    }

    async fn request(
        &self,
        who: &Principal,
        request: ServiceRequest,
    ) -> Result<String, BackendError> {
        let op = Op::RequestInstance {
            requester: Requester::Person(who.person.clone()),
            title: request.title,
            software_release: request.software_release,
            software_type: request.software_type,
            state: request.state,
            shared: false,
            parameters: request
                .parameters
                .into_iter()
                .map(|(k, v)| (k, ParamValue::Str(v)))
                .collect(),
            sla: request.sla,
        };
        authz::check_op(&caller_of(who), &op).map_err(BackendError::Forbidden)?;
        match self.write(op).await? {
            Reply::Instance { id, .. } => Ok(id.to_string()),
            other => Err(BackendError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }
}

impl PortalBackend {
    async fn write(&self, op: Op) -> Result<Reply, BackendError> {
        let written = self.app.masters.write(op).await.map_err(from_master)?;
        written.outcome.map_err(|e| from_domain(&e))
    }
}
