//! A JSON-RPC call served against the master's Raft group: the reads each answer needs
//! (the computer, or the instance and then its host's computer), and writes through
//! [`Masters::write`], rendered from the state that write reads back. With a caller
//! (client certificates), what only the state can tell is checked here: who may read an
//! instance, and what a write on an instance becomes ([`crate::server::authz`]).

use slapos_domain::State;

use super::{render_request, render_write, success, Call, JsonError, Read};
use crate::server::authz::{self, Access, Caller};
use crate::server::master::{MasterError, Masters};
use crate::slap::forms::Query;
use crate::slap::SlapResponse;

fn master_error(e: MasterError) -> JsonError {
    JsonError::new(e.status(), e.to_string())
}

async fn computer(masters: &Masters, computer: &str) -> Result<State, JsonError> {
    masters
        .read(&Query::Computer {
            computer: computer.to_string(),
        })
        .await
        .map_err(master_error)
}

/// The state an instance's answer needs: see [`Masters::read_instance`].
async fn instance(masters: &Masters, id: slapos_domain::InstanceId) -> Result<State, JsonError> {
    masters.read_instance(id).await.map_err(master_error)
}

async fn read_state(masters: &Masters, read: &Read) -> Result<State, JsonError> {
    match read {
        Read::ComputerInstances(c) | Read::ComputerSoftware(c) => computer(masters, c).await,
        Read::Partition { computer: c, .. } => computer(masters, c).await,
        Read::Hosted(id) | Read::Instance(id) => instance(masters, *id).await,
        Read::Trees { owner } => masters.read_trees(owner, None).await.map_err(master_error),
        Read::Tree { owner, title } => masters
            .read_trees(owner, Some(title))
            .await
            .map_err(master_error),
        Read::Ledger(read) => {
            let (customer, provider) = read.filter();
            masters
                .read_ledger(customer, provider, read.from, read.to)
                .await
                .map_err(master_error)
        }
    }
}

fn forbidden(why: String) -> JsonError {
    JsonError::new(403, format!("forbidden: {why}"))
}

/// Whether `caller` may read instance `id`, which `state` holds.
async fn may_read(
    masters: &Masters,
    caller: &Caller,
    state: &State,
    id: slapos_domain::InstanceId,
) -> Result<(), JsonError> {
    match authz::instance_access(caller, state, id) {
        Access::Allowed => Ok(()),
        Access::Refused(why) => Err(forbidden(why)),
        Access::IfInTree {
            computer: c,
            partition,
            root,
        } => {
            let own = computer(masters, &c).await?;
            if authz::in_tree(&own, &c, &partition, root) {
                Ok(())
            } else {
                Err(forbidden(format!(
                    "partition:{c}:{partition} may not read instance {id} (not of its tree)"
                )))
            }
        }
    }
}

/// Serves a parsed call; `caller` (with client certificates) passed
/// [`authz::check_jsonrpc`] already.
pub async fn serve(masters: &Masters, call: Call, caller: Option<&Caller>) -> SlapResponse {
    match call {
        Call::Read(read) => match read_state(masters, &read).await {
            Ok(state) => {
                if let (Some(caller), Read::Hosted(id) | Read::Instance(id)) = (caller, &read) {
                    if let Err(e) = may_read(masters, caller, &state, *id).await {
                        return e.to_response();
                    }
                }
                read.render(&state)
            }
            Err(e) => e.to_response(),
        },
        Call::Write { op, title } => match masters.write(op).await {
            Ok(w) => render_write(&w.outcome, title),
            Err(e) => master_error(e).to_response(),
        },
        Call::Request(op) => match masters.write(op).await {
            Ok(w) => render_request(&w.state, &w.outcome),
            Err(e) => master_error(e).to_response(),
        },
        Call::InstanceWrite { id, action } => {
            let state = match instance(masters, id).await {
                Ok(s) => s,
                Err(e) => return e.to_response(),
            };
            match action.op(&state, id) {
                Ok(Some((op, title))) => {
                    if let Some(caller) = caller {
                        if let Err(why) = authz::check_op(caller, &op) {
                            return forbidden(why).to_response();
                        }
                    }
                    match masters.write(op).await {
                        Ok(w) => render_write(&w.outcome, title),
                        Err(e) => master_error(e).to_response(),
                    }
                }
                Ok(None) => success("Ignored"),
                Err(e) => e.to_response(),
            }
        }
    }
}
