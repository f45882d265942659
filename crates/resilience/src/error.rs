//! Errors of this crate: only configuration errors; run-time refusals (breaker rejection, full
//! bulkhead) are typed values of their own modules.

/// A setting is out of its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct ConfigError {
    /// The setting's field name, e.g. `failure_rate_threshold`.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, reason: &'static str) -> Self {
        Self { setting, reason }
    }
}

/// Returns an error unless `ok`.
pub(crate) fn ensure(
    ok: bool,
    setting: &'static str,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(setting, reason))
    }
}
