//! The group itself: replicas that left, and who administers it.

use super::check_person;
use crate::command::{Outcome, Reply};
use crate::ids::Timestamp;
use crate::state::State;

impl State {
    pub(super) fn set_admin(&mut self, person: &str, admin: &bool, now: Timestamp) -> Outcome {
        check_person("person", person)?;
        if *admin {
            if !self.admins.contains_key(person) {
                self.admins.insert(person.to_owned(), now);
            }
        } else {
            self.admins.remove(person);
        }
        Ok(Reply::Done)
    }

    pub(super) fn retire_replica(&mut self, id: &u64, now: Timestamp) -> Outcome {
        if !self.retired_replicas.contains_key(id) {
            self.retired_replicas.insert(*id, now);
        }
        // Its certificates, and those of the gateway that served beside it
        // (`gateway:r<id>` by convention), end with it: a retired seed's keys
        // must not outlive its membership.
        let replica = crate::identity::Identity::Replica(*id);
        let gateway = crate::identity::Identity::Gateway(format!("r{id}"));
        self.revoke_where(now, |_, r| r.identity == replica || r.identity == gateway);
        Ok(Reply::Done)
    }
}
