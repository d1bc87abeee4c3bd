//! SDK keys: read from the environment or a file, sent only in the `Authorization` header, shown
//! everywhere else as at most their last 4 characters.

use std::fmt;
use std::path::Path;

use flagstore::backend::Secret;

use crate::SyncError;

/// A LaunchDarkly server-side SDK key. `Display` and `Debug` show it masked.
///
/// ```
/// use flagstore_sync::SdkKey;
///
/// let key = SdkKey::new("sdk-12345678-abcd-ef01-2345-6789abcdef01")?;
/// assert_eq!(key.to_string(), "sdk-********ef01");
/// assert_eq!(format!("{key:?}"), "SdkKey(sdk-********ef01)");
/// # Ok::<(), flagstore_sync::SyncError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SdkKey(Secret);

impl SdkKey {
    /// The key, trimmed of surrounding whitespace (a key file's last newline). An empty key, or
    /// one holding anything but visible ASCII (it could not be sent in a header as it is), is
    /// refused.
    pub fn new(key: impl Into<String>) -> Result<SdkKey, SyncError> {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(SyncError::config("the SDK key is empty"));
        }
        if !trimmed.chars().all(|c| c.is_ascii_graphic()) {
            return Err(SyncError::config(
                "the SDK key holds a space, a line break or a character that is not ASCII (two keys in the key file?)",
            ));
        }
        Ok(SdkKey(Secret::new(trimmed)))
    }

    /// The key in the environment variable `name`.
    pub fn from_env(name: &str) -> Result<SdkKey, SyncError> {
        let key = std::env::var(name).map_err(|_| {
            SyncError::config(format!(
                "no SDK key: the environment variable {name} is not set"
            ))
        })?;
        Self::new(key)
            .map_err(|e| SyncError::config(format!("{e} (from the environment variable {name})")))
    }

    /// The key in the file at `path` (a mounted secret), surrounding whitespace ignored.
    pub fn from_file(path: &Path) -> Result<SdkKey, SyncError> {
        let key = std::fs::read_to_string(path).map_err(|e| {
            SyncError::config(format!(
                "cannot read the SDK key file {}: {e}",
                path.display()
            ))
        })?;
        Self::new(key).map_err(|e| SyncError::config(format!("{e} (in {})", path.display())))
    }

    /// The key masked for status pages and logs: the `sdk-` prefix, then at most the last 4
    /// characters, and those only of a key long enough that they give nothing away.
    pub fn masked(&self) -> String {
        let key = self.0.expose();
        let prefix = if key.starts_with("sdk-") { "sdk-" } else { "" };
        let chars: Vec<char> = key.chars().collect();
        let tail: String = if chars.len() >= 16 {
            chars[chars.len() - 4..].iter().collect()
        } else {
            String::new()
        };
        format!("{prefix}********{tail}")
    }

    /// The key itself, for the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Display for SdkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for SdkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SdkKey({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn masks_and_checks() {
        assert_eq!(SdkKey::new("short").unwrap().masked(), "********");
        assert_eq!(
            SdkKey::new(" mob-0123456789abcdef\n").unwrap().masked(),
            "********cdef"
        );
        assert!(SdkKey::new(" \n").is_err());
        assert!(SdkKey::new("sdk-a\nb").is_err());
        assert!(SdkKey::new("sdk-a b").is_err());
        assert!(SdkKey::new("sdk-caf\u{e9}").is_err());
        let err = SdkKey::from_env("FLAGSTORE_SYNC_TEST_NO_SUCH_VARIABLE").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid sync configuration: no SDK key: the environment variable FLAGSTORE_SYNC_TEST_NO_SUCH_VARIABLE is not set"
        );
    }
}
