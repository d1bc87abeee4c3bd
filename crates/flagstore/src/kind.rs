//! Kinds: the namespaces items live in.

use std::borrow::{Borrow, Cow};
use std::fmt;

/// A namespace of items, such as feature flags or segments.
///
/// The two LaunchDarkly kinds are [`Kind::FEATURES`] and [`Kind::SEGMENTS`], but stores treat a kind
/// as an opaque name: any non-empty name works, because other SDKs' test suites use made-up kinds.
///
/// ```
/// use flagstore::Kind;
///
/// assert_eq!(Kind::FEATURES.name(), "features");
/// assert_eq!(Kind::new("widgets").to_string(), "widgets");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(Cow<'static, str>);

impl Kind {
    /// Feature flags, stored under the name `features`.
    pub const FEATURES: Kind = Kind(Cow::Borrowed("features"));
    /// Segments, stored under the name `segments`.
    pub const SEGMENTS: Kind = Kind(Cow::Borrowed("segments"));

    /// A kind with the given namespace name.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Kind(name.into())
    }

    /// The namespace name, exactly as it appears in storage keys.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Where this kind goes when a full data set is written: segments first, then flags (which may
    /// reference segments), then anything else. Other SDKs write in this order too, so that a
    /// reader of a half-written store never sees a flag whose segments are missing.
    pub(crate) fn init_priority(&self) -> u8 {
        match self.name() {
            "segments" => 0,
            "features" => 1,
            _ => 2,
        }
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.name(), f)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Borrow<str> for Kind {
    fn borrow(&self) -> &str {
        self.name()
    }
}

impl From<&'static str> for Kind {
    fn from(name: &'static str) -> Self {
        Kind::new(name)
    }
}

impl From<String> for Kind {
    fn from(name: String) -> Self {
        Kind::new(name)
    }
}
