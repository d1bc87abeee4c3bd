#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod open;
mod parse;

pub use parse::StoreUrl;

/// Opens the store `url` names: [`StoreUrl::parse`] then [`StoreUrl::open`].
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir()?;
/// # let url = format!("sqlite:{}?prefix=docs", dir.path().join("flags.db").display());
/// use flagstore::{Kind, PersistentDataStore};
///
/// let store = flagstore_url::open(&url)?;
/// assert!(!store.is_initialized().await?);
/// assert_eq!(store.get(&Kind::FEATURES, "any").await?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn open(url: &str) -> flagstore::Result<flagstore::DynStore> {
    StoreUrl::parse(url)?.open()
}
