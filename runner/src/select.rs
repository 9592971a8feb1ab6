//! Choosing which runs of unittests.toml to consider: test-name globs, `-g` groups and the
//! `nodefault` group.

use glob::Pattern;

use crate::config::TestEntry;

/// The group that keeps a run out of default runs.
pub const NODEFAULT_GROUP: &str = "nodefault";

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Test names or glob patterns; empty means every test.
    pub names: Vec<String>,
    /// Groups (any of them); empty means every group.
    pub groups: Vec<String>,
    /// Include `nodefault` runs (`-a`).
    pub all: bool,
}

/// How one run fares under a selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Not asked for.
    Excluded,
    /// Asked for, but in group `nodefault` and not asked for explicitly: not run.
    Nodefault,
    /// To be run.
    Selected {
        /// Named exactly (not through a glob or group).
        explicit: bool,
    },
}

/// A selection error: a name that matches nothing, or a bad pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectError(pub String);

impl Selection {
    /// Decides for every entry, in order. Every name must match some entry.
    pub fn choose(&self, entries: &[TestEntry]) -> Result<Vec<Choice>, SelectError> {
        let patterns = self
            .names
            .iter()
            .map(|name| {
                Pattern::new(name)
                    .map_err(|error| SelectError(format!("bad test name pattern '{name}': {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (name, pattern) in self.names.iter().zip(&patterns) {
            if !entries.iter().any(|entry| pattern.matches(&entry.name)) {
                return Err(SelectError(format!("no test matches '{name}'")));
            }
        }
        let groups: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|group| group.split(','))
            .map(str::trim)
            .filter(|group| !group.is_empty())
            .collect();
        Ok(entries
            .iter()
            .map(|entry| {
                let explicit = self.names.contains(&entry.name);
                let named =
                    patterns.is_empty() || patterns.iter().any(|pattern| pattern.matches(&entry.name));
                let grouped = groups.iter().any(|group| entry.in_group(group));
                if !named || (!groups.is_empty() && !grouped) {
                    Choice::Excluded
                } else if entry.in_group(NODEFAULT_GROUP) && !self.all && !explicit && !grouped {
                    Choice::Nodefault
                } else {
                    Choice::Selected { explicit }
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn entries() -> Vec<TestEntry> {
        let text = r#"
[selftest]
groups = ["selftest"]
[msr]
[msr-extra]
groups = "nodefault msrs"
[fixture-pass]
groups = ["nodefault", "selftest-negative"]
[fixture-fail]
groups = ["nodefault", "selftest-negative"]
"#;
        Config::parse(Path::new("unittests.toml"), text.to_owned())
            .unwrap()
            .entries
    }

    fn selected(selection: &Selection) -> Vec<(String, Choice)> {
        let entries = entries();
        let choices = selection.choose(&entries).unwrap();
        entries
            .into_iter()
            .zip(choices)
            .filter(|(_, choice)| *choice != Choice::Excluded)
            .map(|(entry, choice)| (entry.name, choice))
            .collect()
    }

    fn names(selection: &Selection) -> Vec<String> {
        selected(selection)
            .into_iter()
            .filter(|(_, choice)| matches!(choice, Choice::Selected { .. }))
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn default_run_leaves_out_nodefault() {
        let selection = Selection::default();
        assert_eq!(names(&selection), ["selftest", "msr"]);
        assert_eq!(
            selected(&selection)[2],
            ("msr-extra".to_owned(), Choice::Nodefault)
        );
    }

    #[test]
    fn all_includes_nodefault() {
        let selection = Selection {
            all: true,
            ..Selection::default()
        };
        assert_eq!(names(&selection).len(), 5);
    }

    #[test]
    fn groups_select_nodefault_members() {
        let selection = Selection {
            groups: vec!["selftest-negative".into()],
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["fixture-pass", "fixture-fail"]);
        let selection = Selection {
            groups: vec!["selftest,msrs".into()],
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["selftest", "msr-extra"]);
        let selection = Selection {
            groups: vec!["selftest".into(), "msrs".into()],
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["selftest", "msr-extra"]);
    }

    #[test]
    fn names_and_globs() {
        let selection = Selection {
            names: vec!["msr".into()],
            ..Selection::default()
        };
        assert_eq!(
            selected(&selection),
            [("msr".to_owned(), Choice::Selected { explicit: true })]
        );
        let selection = Selection {
            names: vec!["msr*".into()],
            ..Selection::default()
        };
        assert_eq!(
            selected(&selection),
            [
                ("msr".to_owned(), Choice::Selected { explicit: false }),
                ("msr-extra".to_owned(), Choice::Nodefault)
            ]
        );
        let selection = Selection {
            names: vec!["fixture-pass".into()],
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["fixture-pass"]);
        let selection = Selection {
            names: vec!["fixture-?ail".into(), "selftest".into()],
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["selftest"]);
        let selection = Selection {
            names: vec!["fixture-*".into()],
            all: true,
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["fixture-pass", "fixture-fail"]);
    }

    #[test]
    fn names_and_groups_both_apply() {
        let selection = Selection {
            names: vec!["*".into()],
            groups: vec!["selftest".into()],
            ..Selection::default()
        };
        assert_eq!(names(&selection), ["selftest"]);
    }

    #[test]
    fn unmatched_names_are_errors() {
        let selection = Selection {
            names: vec!["msr".into(), "nosuch*".into()],
            ..Selection::default()
        };
        assert_eq!(
            selection.choose(&entries()),
            Err(SelectError("no test matches 'nosuch*'".into()))
        );
        let selection = Selection {
            names: vec!["[".into()],
            ..Selection::default()
        };
        assert!(selection.choose(&entries()).is_err());
    }
}
