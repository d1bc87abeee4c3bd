//! For authors of backends: reading what other writers stored, the shared retry bounds, change
//! feed plumbing, and keeping secrets out of output. Applications using the stores need none of
//! it.

pub use crate::config::{
    ConfigKey, ItemLimit, NetworkConfigKey, NetworkOptions, UnknownKey, config_count,
    config_duration, find_key, parse_duration,
};
pub use crate::feed::{FeedSender, Reconnect};
pub use crate::item::DELETED_PLACEHOLDER_KEY;
pub use crate::order::write_stages;
pub use crate::secret::{REDACTED, Secret, redact_url};
pub use crate::store::{UPSERT_ATTEMPTS, contention_backoff, refuse_ignored, replaced_kinds};
pub use crate::stored::{
    PAGE_ITEMS, Pages, Rejected, StoredItems, UnreadableItem, item_rejected, paged,
    read_stored_bytes, read_stored_items, version_to_replace,
};
