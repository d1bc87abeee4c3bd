//! Keeping passwords and tokens out of logs, `Debug`, `Display` and error messages.

use std::borrow::Cow;
use std::fmt;

/// What secrets are replaced with.
pub const REDACTED: &str = "***";

/// The URL with anything that may be a password or token replaced by `***`, for logs and messages.
///
/// Works on any text without parsing it as a URL, so even a string too malformed to connect with
/// is safe to put in an error message. Everything between the scheme and the *last* `@` is
/// treated as user-info: generated passwords often hold unencoded `/`, `?` or `#`, and typos such
/// as `redis:pw@h` or `redis//:pw@h` must not leak either. A plain user name (`user:` followed by
/// the password) is kept; anything else in that span is masked whole. Text without an `@` has no
/// user-info and is returned as it is.
///
/// ```
/// use flagstore::backend::redact_url;
///
/// assert_eq!(redact_url("redis://app:hunter2@cache:6379/2"), "redis://app:***@cache:6379/2");
/// assert_eq!(redact_url("rediss://:hunter2@cache"), "rediss://:***@cache");
/// assert_eq!(redact_url("redis://s3cr3t@cache"), "redis://***@cache");
/// assert_eq!(redact_url("redis://:abc/def@cache"), "redis://:***@cache");
/// assert_eq!(redact_url("redis:pw@cache"), "redis:***@cache");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    // The last '@' ends the user-info: passwords may contain '@' themselves.
    let Some(at) = url.rfind('@') else {
        return Cow::Borrowed(url);
    };
    let start = scheme_end(url).filter(|&end| end <= at).unwrap_or(0);
    let userinfo = &url[start..at];
    let user = userinfo
        .split_once(':')
        .map(|(user, _)| user)
        .filter(|user| {
            user.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~%".contains(c))
        });
    let masked = match user {
        Some(user) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    Cow::Owned(format!("{}{masked}{}", &url[..start], &url[at..]))
}

/// Where the text after a URL scheme starts: after `scheme://`, `scheme:/` or `scheme:`, when
/// the text opens with a scheme name (letters, digits, `+`, `-`, `.`, starting with a letter).
fn scheme_end(url: &str) -> Option<usize> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid {
        return None;
    }
    let rest = &url[colon + 1..];
    let slashes = rest.len() - rest.trim_start_matches('/').len();
    Some(colon + 1 + slashes.min(2))
}

/// A secret string whose `Debug` and `Display` print `***`.
///
/// ```
/// use flagstore::backend::Secret;
///
/// let token = Secret::new("s3cr3t");
/// assert_eq!(format!("{token:?} {token}"), "*** ***");
/// assert_eq!(token.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_in_every_url_shape() {
        let cases = [
            ("redis://u:p@h:1/0", "redis://u:***@h:1/0"),
            ("redis://u:p@ss@h", "redis://u:***@h"),
            ("redis://:p@h?x=1", "redis://:***@h?x=1"),
            ("redis://h/0#insecure", "redis://h/0#insecure"),
            ("not a url", "not a url"),
            ("consul://tok@h:8500", "consul://***@h:8500"),
            ("consul://token@host", "consul://***@host"),
            // Unencoded '/', '?' and '#' in a password (common in generated ones).
            ("redis://:s3cret/PW@h", "redis://:***@h"),
            ("redis://:s3cret?PW@h", "redis://:***@h"),
            ("redis://:s3cret#PW@h", "redis://:***@h"),
            ("redis://app:s3cret/PW@h:1/0", "redis://app:***@h:1/0"),
            // Typos in the scheme separator.
            ("redis:/:pw@h", "redis:/:***@h"),
            ("redis:pw@h", "redis:***@h"),
            ("redis//:pw@h", "***@h"),
            ("//:pw@h", "***@h"),
            // An '@' later in the text is treated as the end of user-info: masking too much is safe.
            ("redis://h/path@x", "redis://***@x"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn no_secret_survives_any_shape() {
        for secret in ["s3cret/PW", "s3cret?PW", "s3cret#PW", "s3:cr@et", "pw"] {
            for shape in [
                "redis://:{}@h",
                "redis://user:{}@h:6379/0",
                "rediss://{}@h",
                "redis:/:{}@h",
                "redis:{}@h",
                "redis//:{}@h",
                "consul://{}@host",
                "redis+unix://:{}@/tmp/redis.sock",
            ] {
                let url = shape.replace("{}", secret);
                let shown = redact_url(&url);
                assert!(!shown.contains(secret), "{url} shown as {shown}");
            }
        }
    }
}
