//! Big Segments: segments with millions of members, whose membership lives in the database
//! (written by the Relay Proxy) instead of in the segment's JSON.
//!
//! The SDKs that support them (Go, Python, Node, Java, .NET, Ruby) read two things per store: when
//! the data was last synchronized, and, for one context, which big segments include or exclude
//! it. A context is looked up by [`context_hash`] of its key, and a segment is named by its
//! [`segment_ref`] (`key.gN`, N the segment's generation).

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::Result;

/// How old the synchronization time may be before the data counts as stale: the other SDKs'
/// default (`stale_after`, 2 minutes).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(120);

/// The key a context's memberships are stored under: standard base64 (with padding) of the
/// SHA-256 of the context's key, as every LaunchDarkly SDK computes it.
///
/// ```
/// assert_eq!(
///     flagstore::big_segments::context_hash("alice"),
///     "K9gGyX8OAK8aH8Myj6djqSaXI8jbj6xPk69x2xhtbpA="
/// );
/// ```
pub fn context_hash(context_key: &str) -> String {
    let digest = Sha256::digest(context_key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// How a big segment is named in membership data: `{key}.g{generation}`, generation 0 when the
/// segment has none, as the Go, Python and Node SDKs and the Relay Proxy name it.
///
/// ```
/// assert_eq!(flagstore::big_segments::segment_ref("beta-testers", Some(3)), "beta-testers.g3");
/// assert_eq!(flagstore::big_segments::segment_ref("beta-testers", None), "beta-testers.g0");
/// ```
pub fn segment_ref(segment_key: &str, generation: Option<u64>) -> String {
    format!("{segment_key}.g{}", generation.unwrap_or(0))
}

/// When the Big Segments data was last brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BigSegmentMetadata {
    /// Unix time in milliseconds of the last synchronization; `None` if the store holds none.
    pub last_synchronized: Option<u64>,
}

impl BigSegmentMetadata {
    /// Metadata saying the data was synchronized at `unix_millis`.
    pub fn synchronized_at(unix_millis: u64) -> Self {
        BigSegmentMetadata {
            last_synchronized: Some(unix_millis),
        }
    }

    /// Whether the data is stale: never synchronized, or longer ago than `stale_after`, by the
    /// same rule the SDKs apply (a reader then still uses it, and reports the status `STALE`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use flagstore::big_segments::{BigSegmentMetadata, DEFAULT_STALE_AFTER};
    ///
    /// assert!(BigSegmentMetadata::default().is_stale(DEFAULT_STALE_AFTER));
    /// assert!(BigSegmentMetadata::synchronized_at(0).is_stale(DEFAULT_STALE_AFTER));
    /// let now = std::time::SystemTime::now()
    ///     .duration_since(std::time::UNIX_EPOCH)
    ///     .unwrap()
    ///     .as_millis() as u64;
    /// assert!(!BigSegmentMetadata::synchronized_at(now).is_stale(DEFAULT_STALE_AFTER));
    /// ```
    pub fn is_stale(&self, stale_after: Duration) -> bool {
        let Some(synchronized) = self.last_synchronized else {
            return true;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let limit = u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(synchronized) >= limit
    }
}

/// Which big segments include, and which exclude, one context: the two sets of
/// [`segment_ref`]s stored for its [`context_hash`].
///
/// ```
/// use flagstore::big_segments::BigSegmentMembership;
///
/// let membership = BigSegmentMembership::new(["beta.g1"], ["beta.g1", "staff.g2"]);
/// assert_eq!(membership.check("beta.g1"), Some(true)); // an inclusion wins
/// assert_eq!(membership.check("staff.g2"), Some(false));
/// assert_eq!(membership.check("other.g1"), None); // no say: the segment's rules decide
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BigSegmentMembership {
    included: BTreeSet<String>,
    excluded: BTreeSet<String>,
}

impl BigSegmentMembership {
    /// A membership from the segment refs that include and exclude the context.
    pub fn new<I, E>(included: I, excluded: E) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        E: IntoIterator,
        E::Item: Into<String>,
    {
        BigSegmentMembership {
            included: included.into_iter().map(Into::into).collect(),
            excluded: excluded.into_iter().map(Into::into).collect(),
        }
    }

    /// `Some(true)` if the segment includes the context, `Some(false)` if it excludes it (and
    /// does not include it: an inclusion wins, as in every SDK), `None` if it says nothing.
    pub fn check(&self, segment_ref: &str) -> Option<bool> {
        if self.included.contains(segment_ref) {
            Some(true)
        } else if self.excluded.contains(segment_ref) {
            Some(false)
        } else {
            None
        }
    }

    /// The refs of the segments that include the context, sorted.
    pub fn included(&self) -> impl Iterator<Item = &str> {
        self.included.iter().map(String::as_str)
    }

    /// The refs of the segments that exclude the context, sorted.
    pub fn excluded(&self) -> impl Iterator<Item = &str> {
        self.excluded.iter().map(String::as_str)
    }

    /// Whether no segment mentions the context.
    pub fn is_empty(&self) -> bool {
        self.included.is_empty() && self.excluded.is_empty()
    }
}

/// One change to a Big Segment's memberships, as LaunchDarkly's Big Segments endpoints send it
/// (`/sdk/big-segments/revisions` and the `/big-segments` stream): the context keys already
/// hashed ([`context_hash`]), the segment named by its [`segment_ref`]. Patches form a chain:
/// each applies on top of the one whose `version` is its `previous_version`, which
/// [`BigSegmentStore::apply_patch`] checks against the stored cursor.
///
/// ```
/// use flagstore::big_segments::{BigSegmentPatch, context_hash};
///
/// let mut patch = BigSegmentPatch::new("beta.g1", "", "v1");
/// patch.included_add.push(context_hash("alice"));
/// assert_eq!(patch.segment_ref, "beta.g1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BigSegmentPatch {
    /// The segment, as `{key}.g{generation}` (LaunchDarkly's `segmentId`).
    pub segment_ref: String,
    /// The cursor this patch applies on top of; empty for the first of a fresh synchronization.
    pub previous_version: String,
    /// The cursor once it is applied.
    pub version: String,
    /// Context hashes the segment now includes.
    pub included_add: Vec<String>,
    /// Context hashes the segment no longer includes.
    pub included_remove: Vec<String>,
    /// Context hashes the segment now excludes.
    pub excluded_add: Vec<String>,
    /// Context hashes the segment no longer excludes.
    pub excluded_remove: Vec<String>,
}

impl BigSegmentPatch {
    /// A patch of `segment_ref` from `previous_version` to `version` that changes nothing yet.
    pub fn new(
        segment_ref: impl Into<String>,
        previous_version: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        BigSegmentPatch {
            segment_ref: segment_ref.into(),
            previous_version: previous_version.into(),
            version: version.into(),
            ..BigSegmentPatch::default()
        }
    }

    /// Every membership change, in the order the lists come: included added, included
    /// removed, excluded added, excluded removed.
    pub fn changes(&self) -> impl Iterator<Item = MembershipChange<'_>> {
        let lists = [
            (&self.included_add, true, true),
            (&self.included_remove, true, false),
            (&self.excluded_add, false, true),
            (&self.excluded_remove, false, false),
        ];
        lists.into_iter().flat_map(|(hashes, included, add)| {
            hashes.iter().map(move |hash| MembershipChange {
                context_hash: hash,
                included,
                add,
            })
        })
    }

    /// Whether it applies on top of `cursor` (the stored one, `None` before the first patch):
    /// when its previous version is the cursor, or when nothing is stored yet, as the Relay
    /// Proxy decides.
    pub fn follows(&self, cursor: Option<&str>) -> bool {
        cursor.is_none_or(|cursor| cursor == self.previous_version)
    }
}

/// One change of a [`BigSegmentPatch`]: the segment ref added to (or removed from) one
/// context's included (or excluded) set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipChange<'a> {
    /// The context's hash.
    pub context_hash: &'a str,
    /// The included set (else the excluded one).
    pub included: bool,
    /// Added (else removed).
    pub add: bool,
}

/// A database holding Big Segments data in the layout the LaunchDarkly SDKs read and the Relay
/// Proxy writes. Redis and DynamoDB implement it on their stores, with the same prefix as the
/// flag data.
///
/// The reading half is what an SDK needs; the writing half is the Relay Proxy's job in
/// production, and here serves tests, tools and `flagstore big-segments load`.
#[async_trait]
pub trait BigSegmentStore: Debug + Display + Send + Sync + 'static {
    /// When the data was last synchronized; `last_synchronized: None` if never.
    async fn get_metadata(&self) -> Result<BigSegmentMetadata>;

    /// The memberships stored for the context whose key hashes to `context_hash` (see
    /// [`context_hash`]); `None` if none is (no segment mentions the context).
    async fn get_membership(&self, context_hash: &str) -> Result<Option<BigSegmentMembership>>;

    /// Replaces the stored memberships of each context (by hash): exactly these sets, an empty
    /// membership removing the context's data. Not atomic across contexts.
    async fn set_memberships(&self, memberships: &[(String, BigSegmentMembership)]) -> Result<()>;

    /// Records the synchronization time (Unix milliseconds).
    async fn set_synchronized_on(&self, unix_millis: u64) -> Result<()>;

    /// Removes all Big Segments data under this store's prefix: every membership, the
    /// synchronization time and the cursor. The flag data is untouched.
    async fn clear_big_segments(&self) -> Result<()>;

    /// The cursor: the `version` of the last [`BigSegmentPatch`] applied (the Relay Proxy's
    /// `big_segments_cursor`, DynamoDB's `lastVersion`); `None` before the first.
    async fn get_cursor(&self) -> Result<Option<String>>;

    /// Applies `patch` if it [follows](BigSegmentPatch::follows) the stored cursor, moving the
    /// cursor to its version together with the memberships; `Ok(false)`, changing nothing, if
    /// it does not (a gap: the caller reads the chain again from the stored cursor).
    async fn apply_patch(&self, patch: &BigSegmentPatch) -> Result<bool>;
}

macro_rules! forward_big_segments {
    ($wrapper:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: BigSegmentStore + ?Sized> BigSegmentStore for $wrapper {
            async fn get_metadata(&self) -> Result<BigSegmentMetadata> {
                (**self).get_metadata().await
            }
            async fn get_membership(
                &self,
                context_hash: &str,
            ) -> Result<Option<BigSegmentMembership>> {
                (**self).get_membership(context_hash).await
            }
            async fn set_memberships(
                &self,
                memberships: &[(String, BigSegmentMembership)],
            ) -> Result<()> {
                (**self).set_memberships(memberships).await
            }
            async fn set_synchronized_on(&self, unix_millis: u64) -> Result<()> {
                (**self).set_synchronized_on(unix_millis).await
            }
            async fn clear_big_segments(&self) -> Result<()> {
                (**self).clear_big_segments().await
            }
            async fn get_cursor(&self) -> Result<Option<String>> {
                (**self).get_cursor().await
            }
            async fn apply_patch(&self, patch: &BigSegmentPatch) -> Result<bool> {
                (**self).apply_patch(patch).await
            }
        }
    };
}

forward_big_segments!(Arc<T>);
forward_big_segments!(Box<T>);

/// A Big Segments store chosen at run time.
pub type DynBigSegmentStore = Arc<dyn BigSegmentStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_sdks() {
        // echo -n "" | openssl dgst -sha256 -binary | base64
        assert_eq!(
            context_hash(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        // Non-ASCII keys hash their UTF-8 bytes.
        assert_eq!(context_hash("é").len(), 44);
    }
}
