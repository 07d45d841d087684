//! The allocation index: for each software release, the computers that supply it and
//! still have a free partition, in the order of allocation's [`Score`](super::alloc::Score)
//! (installed before merely supplied, then fewest instances, then computer id), also
//! kept by (release, region). A request walks it from the best candidate and stops at the
//! first computer its SLA, the computer's allocation scope and the tree's spread admit,
//! instead of scanning every computer: among 100,000 computers a request usually looks
//! at a handful.
//!
//! Derived, never persisted, outside the state's equality. It is built from the whole
//! state at the first allocation after a load, then kept up to date from the keys the
//! `computers` and `software` maps recorded as written since (`Tracked::take_touched`):
//! every mutation of those maps goes through a recording method, so a computer whose
//! partitions, load or software changed is always indexed again before the next walk.
//! A state whose maps do not record (not made by `State::new`) is never indexed, and
//! allocation scans as before; so does a walk that finds nothing, to say why.

use super::command::SoftwareReport;
use super::records::{Computer, SoftwareInstallation, SoftwareState};
use super::tracked::Tracked;
use std::collections::{BTreeMap, BTreeSet};

/// (rank: 0 installed, 1 supplied; load: partitions in use; computer id).
type Entry = (u8, usize, String);

#[derive(Debug, Clone, Default)]
pub(crate) struct AllocIndex {
    built: bool,
    by_release: BTreeMap<String, BTreeSet<Entry>>,
    by_release_region: BTreeMap<(String, String), BTreeSet<Entry>>,
    /// What each computer put in: (release, its entry, its region), to take it out again.
    of_computer: BTreeMap<String, Vec<(String, Entry, Option<String>)>>,
}

/// How a supply ranks a computer for its release: installed (0), only supplied (1), or
/// not a candidate (None).
pub(crate) fn rank(sw: &SoftwareInstallation) -> Option<u8> {
    (sw.requested == SoftwareState::Available).then_some(
        if sw.reported == Some(SoftwareReport::Available) {
            0
        } else {
            1
        },
    )
}

impl AllocIndex {
    /// Brings the index up to date with what the two maps recorded; false when it cannot
    /// be kept (the maps do not record their writes).
    pub(crate) fn refresh(
        &mut self,
        computers: &mut Tracked<String, Computer>,
        software: &mut Tracked<(String, String), SoftwareInstallation>,
    ) -> bool {
        if !computers.is_watched() || !software.is_watched() {
            return false;
        }
        let mut ids = computers.take_touched();
        ids.extend(software.take_touched().into_iter().map(|(c, _)| c));
        if !self.built {
            *self = AllocIndex {
                built: true,
                ..AllocIndex::default()
            };
            for id in computers.keys() {
                self.reindex(id, computers, software);
            }
            return true;
        }
        for id in &ids {
            self.reindex(id, computers, software);
        }
        true
    }

    /// Whether the index may be walked: built, and nothing written since its refresh.
    pub(crate) fn is_current(
        &self,
        computers: &Tracked<String, Computer>,
        software: &Tracked<(String, String), SoftwareInstallation>,
    ) -> bool {
        self.built
            && computers.is_watched()
            && software.is_watched()
            && !computers.has_touched()
            && !software.has_touched()
    }

    /// The candidates for `release` (in `region` when given), best first.
    pub(crate) fn candidates<'a>(
        &'a self,
        release: &str,
        region: Option<&str>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let set = match region {
            Some(r) => self
                .by_release_region
                .get(&(release.to_string(), r.to_string())),
            None => self.by_release.get(release),
        };
        set.into_iter()
            .flat_map(|s| s.iter())
            .map(|(_, _, id)| id.as_str())
    }

    fn reindex(
        &mut self,
        id: &str,
        computers: &Tracked<String, Computer>,
        software: &Tracked<(String, String), SoftwareInstallation>,
    ) {
        for (release, entry, region) in self.of_computer.remove(id).unwrap_or_default() {
            if let Some(set) = self.by_release.get_mut(&release) {
                set.remove(&entry);
                if set.is_empty() {
                    self.by_release.remove(&release);
                }
            }
            if let Some(region) = region {
                let key = (release, region);
                if let Some(set) = self.by_release_region.get_mut(&key) {
                    set.remove(&entry);
                    if set.is_empty() {
                        self.by_release_region.remove(&key);
                    }
                }
            }
        }
        let Some(computer) = computers.get(id) else {
            return;
        };
        if computer.partitions.iter().all(|p| p.instance.is_some()) {
            return;
        }
        let load = computer.used_partitions();
        let mut mine = Vec::new();
        let from = (id.to_string(), String::new());
        for ((_, release), sw) in software.range(from..).take_while(|((c, _), _)| c == id) {
            let Some(rank) = rank(sw) else {
                continue;
            };
            let entry = (rank, load, id.to_string());
            self.by_release
                .entry(release.clone())
                .or_default()
                .insert(entry.clone());
            if let Some(region) = &computer.region {
                self.by_release_region
                    .entry((release.clone(), region.clone()))
                    .or_default()
                    .insert(entry.clone());
            }
            mine.push((release.clone(), entry, computer.region.clone()));
        }
        if !mine.is_empty() {
            self.of_computer.insert(id.to_string(), mine);
        }
    }
}
