//! The outcome and offer-learning settings, read from the environment.

/// `OUTCOME_CONFIRM_SECS`: an action matching a step this soon after the answer confirms it.
pub const DEFAULT_CONFIRM_SECS: f64 = 600.0;
/// `OUTCOME_WINDOW_SECS`: how long an answer is watched (assumed after it; reopened within it).
pub const DEFAULT_WINDOW_SECS: f64 = 86_400.0;
/// `OFFER_ACCEPT_SECS`: a visitor message this soon after an offer accepts it.
pub const DEFAULT_ACCEPT_SECS: f64 = 600.0;
/// `OFFER_LEARN_WINDOW`: offers per trigger judged together.
pub const DEFAULT_LEARN_WINDOW: usize = 50;
/// `OFFER_MIN_ACCEPT`: acceptance below this over a full window pauses the trigger.
pub const DEFAULT_MIN_ACCEPT: f64 = 0.05;
/// How long a trigger is paused.
pub const PAUSE_SECS: f64 = 86_400.0;
/// Largest `OFFER_LEARN_WINDOW`.
pub const MAX_LEARN_WINDOW: usize = 10_000;

/// Every setting of the crate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub confirm_secs: f64,
    pub window_secs: f64,
    pub offers: OfferSettings,
}

/// Offer learning's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfferSettings {
    /// `OFFER_LEARNING` (`on` by default): `off` keeps counting results but never pauses.
    pub learning: bool,
    pub accept_secs: f64,
    pub window: usize,
    pub min_accept: f64,
    pub pause_secs: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { confirm_secs: DEFAULT_CONFIRM_SECS, window_secs: DEFAULT_WINDOW_SECS, offers: OfferSettings::default() }
    }
}

impl Default for OfferSettings {
    fn default() -> Self {
        Self {
            learning: true,
            accept_secs: DEFAULT_ACCEPT_SECS,
            window: DEFAULT_LEARN_WINDOW,
            min_accept: DEFAULT_MIN_ACCEPT,
            pause_secs: PAUSE_SECS,
        }
    }
}

/// A setting that could not be read; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {expected}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Settings {
    /// From the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup(name)`; unset and empty variables take their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let secs = |variable: &'static str, default: f64| match get(variable) {
            None => Ok(default),
            Some(value) => match value.parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
                _ => Err(SettingsError { variable, value, expected: "a number of seconds above 0" }),
            },
        };
        let window = match get("OFFER_LEARN_WINDOW") {
            None => DEFAULT_LEARN_WINDOW,
            Some(value) => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LEARN_WINDOW).contains(&n) => n,
                _ => {
                    return Err(SettingsError {
                        variable: "OFFER_LEARN_WINDOW",
                        value,
                        expected: "a whole number of offers from 1 to 10000",
                    });
                }
            },
        };
        let min_accept = match get("OFFER_MIN_ACCEPT") {
            None => DEFAULT_MIN_ACCEPT,
            Some(value) => match value.parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => x,
                _ => {
                    return Err(SettingsError {
                        variable: "OFFER_MIN_ACCEPT",
                        value,
                        expected: "a fraction from 0 to 1 (0.05 = 5 %)",
                    });
                }
            },
        };
        let learning = match get("OFFER_LEARNING").map(|v| v.to_ascii_lowercase()) {
            None => true,
            Some(v) if matches!(v.as_str(), "on" | "true" | "1" | "yes") => true,
            Some(v) if matches!(v.as_str(), "off" | "false" | "0" | "no") => false,
            Some(value) => {
                return Err(SettingsError { variable: "OFFER_LEARNING", value, expected: "on or off" });
            }
        };
        let settings = Settings {
            confirm_secs: secs("OUTCOME_CONFIRM_SECS", DEFAULT_CONFIRM_SECS)?,
            window_secs: secs("OUTCOME_WINDOW_SECS", DEFAULT_WINDOW_SECS)?,
            offers: OfferSettings {
                learning,
                accept_secs: secs("OFFER_ACCEPT_SECS", DEFAULT_ACCEPT_SECS)?,
                window,
                min_accept,
                pause_secs: PAUSE_SECS,
            },
        };
        if settings.confirm_secs > settings.window_secs {
            return Err(SettingsError {
                variable: "OUTCOME_CONFIRM_SECS",
                value: settings.confirm_secs.to_string(),
                expected: "at most OUTCOME_WINDOW_SECS",
            });
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(read(&[]).unwrap(), Settings::default());
        assert_eq!(read(&[("OUTCOME_CONFIRM_SECS", " ")]).unwrap(), Settings::default(), "empty is unset");
        let s = read(&[
            ("OUTCOME_CONFIRM_SECS", "2"),
            ("OUTCOME_WINDOW_SECS", "4"),
            ("OFFER_ACCEPT_SECS", "30.5"),
            ("OFFER_LEARN_WINDOW", "10"),
            ("OFFER_MIN_ACCEPT", "0.2"),
            ("OFFER_LEARNING", "OFF"),
        ])
        .unwrap();
        assert_eq!((s.confirm_secs, s.window_secs), (2.0, 4.0));
        assert_eq!(
            s.offers,
            OfferSettings { learning: false, accept_secs: 30.5, window: 10, min_accept: 0.2, pause_secs: PAUSE_SECS }
        );
    }

    #[test]
    fn errors_name_the_variable() {
        for (name, value) in [
            ("OUTCOME_CONFIRM_SECS", "soon"),
            ("OUTCOME_WINDOW_SECS", "-1"),
            ("OFFER_ACCEPT_SECS", "NaN"),
            ("OFFER_LEARN_WINDOW", "0"),
            ("OFFER_LEARN_WINDOW", "2.5"),
            ("OFFER_MIN_ACCEPT", "5"),
            ("OFFER_LEARNING", "maybe"),
        ] {
            let err = read(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.to_string().starts_with(name), "{err}");
        }
        let err = read(&[("OUTCOME_CONFIRM_SECS", "100"), ("OUTCOME_WINDOW_SECS", "10")]).unwrap_err();
        assert_eq!(err.variable, "OUTCOME_CONFIRM_SECS");
    }
}
