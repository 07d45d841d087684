//! Software installations: what a provider supplies and what its node reports.

use super::check_url;
use crate::command::{Outcome, Reply, SoftwareReport};
use crate::error::DomainError;
use crate::ids::Timestamp;
use crate::records::{SoftwareInstallation, SoftwareState};
use crate::state::State;

impl State {
    pub(super) fn supply(
        &mut self,
        computer: &str,
        url: &str,
        state: &str,
        now: Timestamp,
    ) -> Outcome {
        check_url(url)?;
        let requested = match state {
            "available" => SoftwareState::Available,
            "destroyed" => SoftwareState::Destroyed,
            other => {
                return Err(DomainError::invalid(
                    "state",
                    format!("'{other}' is not one of available, destroyed"),
                ))
            }
        };
        self.computer(computer)?;
        let key = (computer.to_owned(), url.to_owned());
        // Every supply moves the release to the end of the node's list (as
        // slapproxy's INSERT OR REPLACE does).
        self.next_supply += 1;
        let order = self.next_supply;
        match self.software.get_mut(&key) {
            Some(sw) => {
                sw.requested = requested;
                sw.supplied_at = now;
                sw.order = order;
            }
            None => {
                self.software.insert(
                    key,
                    SoftwareInstallation {
                        requested,
                        reported: None,
                        reported_at: None,
                        supplied_at: now,
                        order,
                    },
                );
            }
        }
        Ok(Reply::Done)
    }

    pub(super) fn report_software(
        &mut self,
        computer: &str,
        url: &str,
        report: &SoftwareReport,
        now: Timestamp,
    ) -> Outcome {
        self.computer(computer)?;
        let key = (computer.to_owned(), url.to_owned());
        let Some(sw) = self.software.get(&key) else {
            return Err(DomainError::UnknownSoftware {
                computer: computer.to_owned(),
                url: url.to_owned(),
            });
        };
        if *report == SoftwareReport::Destroyed {
            if sw.requested != SoftwareState::Destroyed {
                return Err(DomainError::SoftwareNotDestroyed {
                    computer: computer.to_owned(),
                    url: url.to_owned(),
                });
            }
            self.software.remove(&key);
            self.touch(computer, now);
            return Ok(Reply::SoftwareRemoved);
        }
        if let Some(sw) = self.software.get_mut(&key) {
            sw.reported = Some(report.clone());
            sw.reported_at = Some(now);
        }
        self.touch(computer, now);
        Ok(Reply::Done)
    }
}
