//! The store a `--store` or `--to` URL names, as the flagstore-url library opens it.

pub(crate) use flagstore::backend::ItemLimit;
use flagstore::big_segments::DynBigSegmentStore;
use flagstore::{DynStore, PersistentDataStore};
pub(crate) use flagstore_url::StoreUrl;

use crate::CliError;

/// An opened store and what the commands need to know about its backend.
pub(crate) struct Opened {
    pub(crate) store: DynStore,
    pub(crate) limit: Option<ItemLimit>,
    /// The Big Segments data under the same prefix, for backends that hold it.
    pub(crate) big_segments: Option<DynBigSegmentStore>,
}

/// Opens `url`'s store; unless `create`, a store that does not exist yet is reported, not made.
pub(crate) fn open(url: &StoreUrl, create: bool) -> Result<Opened, CliError> {
    let store = if create {
        url.open()?
    } else {
        url.open_existing()?
    };
    Ok(Opened {
        limit: store.item_limit(),
        store,
        big_segments: url.open_big_segments().ok(),
    })
}
