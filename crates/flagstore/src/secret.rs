//! Keeping passwords and tokens out of logs, `Debug`, `Display` and error messages.

use std::borrow::Cow;
use std::fmt;

/// What secrets are replaced with.
pub const REDACTED: &str = "***";

/// The URL with the password of its user-info part replaced by `***`, for logs and messages.
///
/// Works on any `scheme://user:password@host...` string without parsing it, so even a URL too
/// malformed to connect with is safe to put in an error message. A user name without a password
/// is kept; a lone token in the user-info (`redis://token@host`, which Redis reads as a password)
/// is masked.
///
/// ```
/// use flagstore::redact_url;
///
/// assert_eq!(redact_url("redis://app:hunter2@cache:6379/2"), "redis://app:***@cache:6379/2");
/// assert_eq!(redact_url("rediss://:hunter2@cache"), "rediss://:***@cache");
/// assert_eq!(redact_url("redis://s3cr3t@cache"), "redis://***@cache");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // The last '@' of the authority ends the user-info: passwords may contain '@' themselves.
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Cow::Borrowed(url);
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:{REDACTED}", &userinfo[..colon]),
        None => REDACTED.to_owned(),
    };
    Cow::Owned(format!("{}{masked}{}", &url[..scheme_end], &rest[at..]))
}

/// A secret string whose `Debug` and `Display` print `***`.
///
/// ```
/// use flagstore::Secret;
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
            ("redis://h/path@x", "redis://h/path@x"),
            ("not a url", "not a url"),
            ("consul://tok@h:8500", "consul://***@h:8500"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
