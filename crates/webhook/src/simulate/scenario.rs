//! The scenario format of `webhook simulate` (YAML): who the visitor is (their activity, the
//! decoy visitors beside them, whether operators are online), what they write, and what each
//! answer must do. Unknown keys are an error naming the file, the line and the key.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default, skip_serializing_if = "Operators::is_online")]
    pub operators: Operators,
    /// A folder of help articles, relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<PathBuf>,
    /// This visitor's actions, oldest first.
    #[serde(default)]
    pub activity: Vec<ActivityItem>,
    /// Other visitors whose activity is in the same store: never to be quoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_visitors: Vec<Decoy>,
    pub turns: Vec<Turn>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operators {
    #[default]
    Online,
    Offline,
}

impl Operators {
    fn is_online(&self) -> bool {
        *self == Operators::Online
    }
}

/// One action: `at` seconds before the first turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityItem {
    pub at: f64,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decoy {
    pub activity: Vec<ActivityItem>,
}

/// What the visitor writes, and what the bot's answer must do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub visitor: String,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `true`: the turn must hand over to a human; `false`: it must not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<bool>,
    /// Regexes that must all match the visible answer.
    #[serde(default)]
    pub mentions: Vec<Pattern>,
    /// Regexes that must not match it.
    #[serde(default)]
    pub not_mentions: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_words: Option<usize>,
    /// A rubric for the LLM judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
}

/// A regular expression, checked when the file is read.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Regex::new(&text).map(Pattern).map_err(|e| {
            let reason = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
            serde::de::Error::custom(format!("invalid regex {text:?}: {reason}"))
        })
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// A scenario and where it was read from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub scenario: Scenario,
}

impl Loaded {
    /// The knowledge folder, resolved against the scenario file's folder.
    pub fn knowledge_dir(&self) -> Option<PathBuf> {
        let dir = self.scenario.knowledge.as_ref()?;
        Some(self.path.parent().unwrap_or(Path::new(".")).join(dir))
    }
}

/// A file that cannot be used: its path and why (with the line, when the YAML says).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ScenarioError {
    pub path: String,
    pub reason: String,
}

impl Scenario {
    /// Parses and checks one scenario's text.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let scenario: Scenario = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.turns.is_empty() {
            return Err("turns: at least one turn is needed".into());
        }
        for (i, turn) in self.turns.iter().enumerate() {
            if turn.visitor.trim().is_empty() {
                return Err(format!("turns[{i}].visitor must not be empty"));
            }
        }
        let decoys = self.other_visitors.iter().enumerate().flat_map(|(d, decoy)| {
            decoy.activity.iter().map(move |item| (format!("other_visitors[{d}].activity"), item))
        });
        let own = self.activity.iter().map(|item| ("activity".to_owned(), item));
        for (place, item) in own.chain(decoys) {
            if !item.at.is_finite() || item.at < 0.0 {
                return Err(format!("{place}: at must be a number of seconds, 0 or more (got {})", item.at));
            }
            if item.title.trim().is_empty() {
                return Err(format!("{place}: title must not be empty"));
            }
        }
        Ok(())
    }

    /// Titles only decoy visitors have: an answer naming one leaked another visitor's activity.
    pub fn decoy_only_titles(&self) -> Vec<String> {
        let own: std::collections::HashSet<String> =
            self.activity.iter().map(|a| a.title.trim().to_lowercase()).collect();
        let mut titles: Vec<String> = self
            .other_visitors
            .iter()
            .flat_map(|d| d.activity.iter())
            .map(|a| a.title.trim().to_owned())
            .filter(|t| !own.contains(&t.to_lowercase()))
            .collect();
        titles.sort();
        titles.dedup();
        titles
    }

    /// The scenario as YAML (for `--record`).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }
}

/// Reads the scenarios at `paths`: files, or folders whose `*.yaml` / `*.yml` files are read
/// (sorted by name, sub-folders too).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Loaded>, ScenarioError> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    if files.is_empty() {
        let path = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(ScenarioError { path, reason: "no scenario files (*.yaml, *.yml) found".into() });
    }
    files
        .into_iter()
        .map(|path| {
            let fail = |reason: String| ScenarioError { path: path.display().to_string(), reason };
            let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
            let scenario = Scenario::parse(&text).map_err(fail)?;
            Ok(Loaded { path, scenario })
        })
        .collect()
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let fail = |reason: String| ScenarioError { path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| fail(format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let is_yaml = entry.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if is_yaml {
            files.push(entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"name: export question on the billing page
operators: online            # online | offline; default online
knowledge: ./help            # optional folder, relative to this file
activity:                    # this visitor's actions, oldest first
  - {at: 120, title: "Page Load: Billing settings", url: "https://app.example.com/billing"}
  - {at: 30, title: "Click Export CSV button"}
other_visitors:              # optional decoys, loaded into the same store
  - activity: [{at: 10, title: "Click Delete workspace button"}]
turns:
  - visitor: "How do I download my invoices?"
    expect:
      handoff: false
      mentions: ["(?i)export"]
      not_mentions: ["(?i)sorry"]
      max_words: 120
      judge: "The answer points to the Export CSV button."
"#;

    #[test]
    fn the_documented_example_reads() {
        let s = Scenario::parse(EXAMPLE).unwrap();
        assert_eq!(s.name, "export question on the billing page");
        assert_eq!(s.operators, Operators::Online);
        assert_eq!(s.knowledge.as_deref(), Some(Path::new("./help")));
        assert_eq!(s.activity.len(), 2);
        assert_eq!(s.activity[0].url.as_deref(), Some("https://app.example.com/billing"));
        assert_eq!(s.activity[1].at, 30.0);
        assert_eq!(s.other_visitors[0].activity[0].title, "Click Delete workspace button");
        let expect = &s.turns[0].expect;
        assert_eq!(expect.handoff, Some(false));
        assert!(expect.mentions[0].0.is_match("Use EXPORT"));
        assert_eq!(expect.not_mentions[0].as_str(), "(?i)sorry");
        assert_eq!(expect.max_words, Some(120));
        assert!(expect.judge.is_some());
        assert_eq!(s.decoy_only_titles(), vec!["Click Delete workspace button".to_owned()]);
    }

    #[test]
    fn defaults_are_online_and_no_expectations() {
        let s = Scenario::parse("name: n\nturns:\n  - visitor: hi\n").unwrap();
        assert_eq!(s.operators, Operators::Online);
        assert!(s.activity.is_empty() && s.other_visitors.is_empty());
        assert!(s.turns[0].expect.handoff.is_none() && s.turns[0].expect.mentions.is_empty());
        let offline = Scenario::parse("name: n\noperators: offline\nturns: [{visitor: hi}]\n").unwrap();
        assert_eq!(offline.operators, Operators::Offline);
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_line() {
        let text = "name: n\nturns:\n  - visitor: hi\n    expect:\n      mention: [x]\n";
        let e = Scenario::parse(text).unwrap_err();
        assert!(e.contains("unknown field `mention`"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        let top = Scenario::parse("name: n\nturn: []\n").unwrap_err();
        assert!(top.contains("unknown field `turn`") && top.contains("line 2"), "{top}");
        let activity =
            Scenario::parse("name: n\nactivity: [{at: 1, title: t, page: p}]\nturns: [{visitor: x}]\n").unwrap_err();
        assert!(activity.contains("unknown field `page`") && activity.contains("line 2"), "{activity}");
    }

    #[test]
    fn bad_values_are_refused() {
        let bad_regex = Scenario::parse("name: n\nturns:\n  - visitor: hi\n    expect: {mentions: [\"(\"]}\n");
        assert!(bad_regex.as_ref().unwrap_err().contains("invalid regex"), "{bad_regex:?}");
        assert!(bad_regex.unwrap_err().contains("line 4"));
        assert!(Scenario::parse("name: n\nturns: []\n").unwrap_err().contains("at least one turn"));
        assert!(Scenario::parse("name: n\noperators: maybe\nturns: [{visitor: x}]\n").is_err());
        let negative = Scenario::parse("name: n\nactivity: [{at: -1, title: t}]\nturns: [{visitor: x}]\n");
        assert!(negative.unwrap_err().contains("at must be"));
    }

    #[test]
    fn a_written_scenario_reads_back() {
        let s = Scenario::parse(EXAMPLE).unwrap();
        let again = Scenario::parse(&s.to_yaml()).unwrap();
        assert_eq!(again.turns[0].expect.mentions[0].as_str(), "(?i)export");
        assert_eq!(again.activity.len(), 2);
    }

    #[test]
    fn folders_are_read_sorted_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), "name: b\nturns: [{visitor: x}]\n").unwrap();
        std::fs::write(dir.path().join("a.yml"), "name: a\nturns: [{visitor: x}]\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a scenario").unwrap();
        let loaded = load(&[dir.path().to_owned()]).unwrap();
        assert_eq!(loaded.iter().map(|l| l.scenario.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        std::fs::write(dir.path().join("c.yaml"), "name: c\nturns: [{visitor: x}]\nextra: 1\n").unwrap();
        let e = load(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(e.contains("c.yaml") && e.contains("extra") && e.contains("line 3"), "{e}");
    }
}
