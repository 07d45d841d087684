//! The group as an operator sees it (`slapos cluster status`): the view and its timer
//! warnings are master-client's (`master_client::status`, which the gateway's portal
//! shows too); this asks the addresses the operator gave.

use crate::error::{Context, OperatorError};
use master_client::MasterClient;
use std::time::Duration;

pub use master_client::status::{timer_warnings, GroupStatus, MemberStatus, TimerStatus};

/// Asks `via`, then the leader, then every member for its own view
/// ([`master_client::status::group_status`]), within 10 s.
pub async fn group_status(via: Vec<String>) -> Result<GroupStatus, OperatorError> {
    let client = MasterClient::new(via).with_deadline(Duration::from_secs(10));
    master_client::status::group_status(client)
        .await
        .context("no replica answered")
}
