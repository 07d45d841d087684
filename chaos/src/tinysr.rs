//! tinysr, the tiny buildout software release of `chaos/tinysr/` (its software.cfg says
//! what it exercises), carried inside the binary so that `slapos bench node` needs no
//! source tree, and written out for the tests that deploy it with our node agent and with
//! SlapOS's own (tests/tests/slapgrid.rs, slapgrid_vs_reference.rs, node_agent.rs).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the release's files name the folder they are written to (zc.buildout has no
/// `${:_profile_base_location_}`): [`write`] replaces it, as node_helper.py `prepare`
/// does for its copy of a [`write_source`] tree.
pub const DIR_PLACEHOLDER: &str = "@TINYSR@";

/// The release's files (path in the release, content), every one of `chaos/tinysr/`.
pub const FILES: &[(&str, &str)] = &[
    ("software.cfg", include_str!("../tinysr/software.cfg")),
    (
        "instance-profile.cfg",
        include_str!("../tinysr/instance-profile.cfg"),
    ),
    (
        "eggs/tinysr_recipe-1.0.egg/EGG-INFO/PKG-INFO",
        include_str!("../tinysr/eggs/tinysr_recipe-1.0.egg/EGG-INFO/PKG-INFO"),
    ),
    (
        "eggs/tinysr_recipe-1.0.egg/EGG-INFO/entry_points.txt",
        include_str!("../tinysr/eggs/tinysr_recipe-1.0.egg/EGG-INFO/entry_points.txt"),
    ),
    (
        "eggs/tinysr_recipe-1.0.egg/tinysr_recipe/__init__.py",
        include_str!("../tinysr/eggs/tinysr_recipe-1.0.egg/tinysr_recipe/__init__.py"),
    ),
];

fn write_files(dir: &Path, placeholder_to: Option<&str>) -> io::Result<()> {
    for (rel, text) in FILES {
        let path = dir.join(rel);
        let parent = path.parent().expect("a file in a folder");
        std::fs::create_dir_all(parent)?;
        let text = match placeholder_to {
            Some(to) => text.replace(DIR_PLACEHOLDER, to),
            None => (*text).to_owned(),
        };
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    // Every folder readable by every user: the software user builds from it.
    let mut folders: Vec<PathBuf> = FILES
        .iter()
        .flat_map(|(rel, _)| Path::new(rel).ancestors().skip(1).map(|a| dir.join(a)))
        .collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Writes the release under `dir` (created if needed) ready to be supplied: the
/// placeholder replaced by `dir`, readable by every user. Returns its URL, the path of
/// its software.cfg.
pub fn write(dir: &Path) -> io::Result<PathBuf> {
    let dir = std::path::absolute(dir)?;
    let to = dir.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not UTF-8", dir.display()),
        )
    })?;
    write_files(&dir, Some(to))?;
    Ok(dir.join("software.cfg"))
}

/// Writes the release's files under `dir` as they are in the repository, the placeholder
/// kept: the source node_helper.py `prepare` copies and completes.
pub fn write_source(dir: &Path) -> io::Result<()> {
    write_files(dir, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tinysr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }

    #[test]
    fn every_file_of_the_folder_is_carried() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tinysr");
        let mut on_disk = Vec::new();
        files_under(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut carried: Vec<String> = FILES.iter().map(|(rel, _)| rel.to_string()).collect();
        carried.sort();
        assert_eq!(carried, on_disk, "chaos/tinysr/ and FILES differ");
    }

    #[test]
    fn written_release_names_its_own_folder_and_is_readable_by_all() {
        let dir = scratch("write");
        let url = write(&dir).unwrap();
        assert_eq!(url, dir.join("software.cfg"));
        let software = std::fs::read_to_string(&url).unwrap();
        assert!(!software.contains(DIR_PLACEHOLDER), "{software}");
        assert!(
            software.contains(&format!("find-links = {}/eggs", dir.display())),
            "{software}"
        );
        assert!(
            software.contains(&format!("from = {}/instance-profile.cfg", dir.display())),
            "{software}"
        );
        let recipe = dir.join("eggs/tinysr_recipe-1.0.egg/tinysr_recipe/__init__.py");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&recipe), 0o644);
        assert_eq!(mode(recipe.parent().unwrap()), 0o755);
        assert_eq!(mode(&dir.join("eggs")), 0o755);

        let source = scratch("source");
        write_source(&source).unwrap();
        let kept = std::fs::read_to_string(source.join("software.cfg")).unwrap();
        assert!(kept.contains(&format!("find-links = {DIR_PLACEHOLDER}/eggs")));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&source).unwrap();
    }
}
