//! A JSON-RPC call served against the master's Raft group: the reads each answer needs
//! (the computer, or the instance and then its host's computer), and writes through
//! [`Masters::write`], rendered from the state that write reads back.

use master_node::State;

use super::{render_request, render_write, success, Call, JsonError, Read};
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
async fn instance(masters: &Masters, id: master_node::InstanceId) -> Result<State, JsonError> {
    masters.read_instance(id).await.map_err(master_error)
}

async fn read_state(masters: &Masters, read: &Read) -> Result<State, JsonError> {
    match read {
        Read::ComputerInstances(c) | Read::ComputerSoftware(c) => computer(masters, c).await,
        Read::Partition { computer: c, .. } => computer(masters, c).await,
        Read::Hosted(id) | Read::Instance(id) => instance(masters, *id).await,
        Read::Ledger(read) => {
            let (customer, provider) = read.filter();
            masters
                .read_ledger(customer, provider, read.from, read.to)
                .await
                .map_err(master_error)
        }
    }
}

/// Serves a parsed call.
pub async fn serve(masters: &Masters, call: Call) -> SlapResponse {
    match call {
        Call::Read(read) => match read_state(masters, &read).await {
            Ok(state) => read.render(&state),
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
                Ok(Some((op, title))) => match masters.write(op).await {
                    Ok(w) => render_write(&w.outcome, title),
                    Err(e) => master_error(e).to_response(),
                },
                Ok(None) => success("Ignored"),
                Err(e) => e.to_response(),
            }
        }
    }
}
