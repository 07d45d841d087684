//! The INI dialect of Python's `configparser` as SlapOS configs use it: `[section]`
//! headers, `key = value` or `key: value`, continuation lines indented under a key, `#`
//! and `;` comment lines, keys case-insensitive, and `%(name)s` interpolation from the
//! same section or `[DEFAULT]` (`%%` is a literal `%`).

use std::collections::BTreeMap;

/// Interpolation depth Python allows before giving up (`MAX_INTERPOLATION_DEPTH`).
const MAX_DEPTH: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IniError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("[{section}] {key}: {message}")]
    Interpolation {
        section: String,
        key: String,
        message: String,
    },
}

/// A parsed file: sections in file order, keys lowercased.
#[derive(Debug, Clone, Default)]
pub struct Ini {
    sections: Vec<(String, BTreeMap<String, String>)>,
    defaults: BTreeMap<String, String>,
}

impl Ini {
    pub fn parse(text: &str) -> Result<Ini, IniError> {
        let mut ini = Ini::default();
        // (section index or None for DEFAULT, key) of the value continuation lines extend.
        let mut current: Option<Option<usize>> = None;
        let mut last_key: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = n + 1;
            let trimmed = raw.trim();
            let indented = raw.starts_with(' ') || raw.starts_with('\t');
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.is_empty() {
                // configparser keeps empty lines inside a multi-line value only when
                // more indented text follows; trailing ones are stripped below.
                if let (Some(section), Some(key)) = (current, &last_key) {
                    ini.map_mut(section)
                        .entry(key.clone())
                        .and_modify(|v| v.push('\n'));
                }
                continue;
            }
            if indented {
                if let (Some(section), Some(key)) = (current, &last_key) {
                    let value = ini.map_mut(section).entry(key.clone()).or_default();
                    value.push('\n');
                    value.push_str(trimmed);
                    continue;
                }
            }
            if let Some(header) = trimmed.strip_prefix('[') {
                let name = header.strip_suffix(']').ok_or_else(|| IniError::Syntax {
                    line,
                    message: format!("unterminated section header {trimmed:?}"),
                })?;
                current = Some(if name == "DEFAULT" {
                    None
                } else if let Some(i) = ini.sections.iter().position(|(s, _)| s == name) {
                    Some(i)
                } else {
                    ini.sections.push((name.to_owned(), BTreeMap::new()));
                    Some(ini.sections.len() - 1)
                });
                last_key = None;
                continue;
            }
            let Some(section) = current else {
                return Err(IniError::Syntax {
                    line,
                    message: "a key before any [section]".into(),
                });
            };
            let split = trimmed.find(['=', ':']).ok_or_else(|| IniError::Syntax {
                line,
                message: format!("expected `key = value`, got {trimmed:?}"),
            })?;
            let key = trimmed[..split].trim().to_lowercase();
            if key.is_empty() {
                return Err(IniError::Syntax {
                    line,
                    message: "empty key".into(),
                });
            }
            let value = trimmed[split + 1..].trim().to_owned();
            ini.map_mut(section).insert(key.clone(), value);
            last_key = Some(key);
        }
        for (_, map) in &mut ini.sections {
            for value in map.values_mut() {
                let kept = value.trim_end_matches('\n').len();
                value.truncate(kept);
            }
        }
        Ok(ini)
    }

    fn map_mut(&mut self, section: Option<usize>) -> &mut BTreeMap<String, String> {
        match section {
            None => &mut self.defaults,
            Some(i) => &mut self.sections[i].1,
        }
    }

    pub fn has_section(&self, section: &str) -> bool {
        self.sections.iter().any(|(s, _)| s == section)
    }

    /// Section names in file order (without `DEFAULT`).
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(s, _)| s.as_str())
    }

    fn raw(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|(s, _)| s == section)
            .and_then(|(_, map)| map.get(key))
            .or_else(|| self.defaults.get(key))
            .map(String::as_str)
    }

    /// The keys of a section (its own and `[DEFAULT]`'s).
    pub fn keys(&self, section: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.defaults.keys().cloned().collect();
        if let Some((_, map)) = self.sections.iter().find(|(s, _)| s == section) {
            keys.extend(map.keys().cloned());
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// The interpolated value of `key` in `section`, if the key exists.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<String>, IniError> {
        let key = key.to_lowercase();
        match self.raw(section, &key) {
            None => Ok(None),
            Some(raw) => self.interpolate(section, &key, raw, 0).map(Some),
        }
    }

    fn interpolate(
        &self,
        section: &str,
        key: &str,
        raw: &str,
        depth: usize,
    ) -> Result<String, IniError> {
        let fail = |message: String| IniError::Interpolation {
            section: section.to_owned(),
            key: key.to_owned(),
            message,
        };
        if depth > MAX_DEPTH {
            return Err(fail("interpolation too deep (a loop?)".into()));
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("%(") {
                let end = after
                    .find(")s")
                    .ok_or_else(|| fail(format!("bad interpolation syntax in {raw:?}")))?;
                let name = after[..end].to_lowercase();
                let value = self
                    .raw(section, &name)
                    .ok_or_else(|| fail(format!("no option {name:?} to interpolate")))?;
                out.push_str(&self.interpolate(section, &name, value, depth + 1)?);
                rest = &after[end + 2..];
            } else {
                return Err(fail(format!(
                    "'%' must be followed by '%' or '(' in {raw:?}"
                )));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_continuations_comments_and_interpolation() {
        let ini = Ini::parse(
            "# comment\n[DEFAULT]\nroot = /srv\n[slapos]\nComputer_ID = COMP-1\n\
             instance_root = %(root)s/slapgrid\nshared_part_list =\n  /a\n  /b\n\
             percent = 100%%\n; other\n[slapformat]\npartition_amount: 10\n",
        )
        .unwrap();
        assert_eq!(ini.get("slapos", "computer_id").unwrap().unwrap(), "COMP-1");
        assert_eq!(
            ini.get("slapos", "instance_root").unwrap().unwrap(),
            "/srv/slapgrid"
        );
        assert_eq!(
            ini.get("slapos", "shared_part_list").unwrap().unwrap(),
            "\n/a\n/b"
        );
        assert_eq!(ini.get("slapos", "percent").unwrap().unwrap(), "100%");
        assert_eq!(
            ini.get("slapformat", "partition_amount").unwrap().unwrap(),
            "10"
        );
        assert_eq!(ini.get("slapformat", "missing").unwrap(), None);
    }

    #[test]
    fn errors_name_the_line_or_the_key() {
        assert!(matches!(
            Ini::parse("key = 1\n"),
            Err(IniError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            Ini::parse("[a]\n[b\n"),
            Err(IniError::Syntax { line: 2, .. })
        ));
        let ini = Ini::parse("[a]\nx = %(y)s\nz = 5%\nl = %(l)s\n").unwrap();
        assert!(ini.get("a", "x").is_err());
        assert!(ini.get("a", "z").is_err());
        assert!(ini.get("a", "l").is_err());
    }
}
