//! Wraps a store in the TTL cache, loads flags, reads them back, and shows the cache riding out
//! an outage. Needs no server: it uses the in-memory store.
//!
//! Run with `cargo run -p flagstore --example quickstart`. Needs no cargo features.

use std::time::Duration;

use flagstore::memory::MemoryStore;

use flagstore::{CachingStore, Collection, Item, Kind, PersistentDataStore, sort_for_init};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let database = MemoryStore::new();
    let store = CachingStore::builder(database.clone())
        .cache_time(Duration::from_secs(30))
        .build()?;
    println!("store: {store}");

    let flags = vec![
        Item::from_json(
            "checkout",
            r#"{"key":"checkout","version":4,"on":true,"prerequisites":[{"key":"payments","variation":0}]}"#,
        )?,
        Item::from_json("payments", r#"{"key":"payments","version":2,"on":true}"#)?,
    ];
    let segments = vec![Item::from_json(
        "beta",
        r#"{"key":"beta","version":1,"included":["u1"]}"#,
    )?];
    let data = sort_for_init(vec![
        Collection::new(Kind::FEATURES, flags),
        Collection::new(Kind::SEGMENTS, segments),
    ]);
    for collection in &data {
        let keys: Vec<_> = collection.items.iter().map(Item::key).collect();
        println!("writing {}: {}", collection.kind, keys.join(", "));
    }
    store.init(&data).await?;
    println!("initialized: {}", store.is_initialized().await?);

    store
        .upsert(&Kind::FEATURES, Item::tombstone("payments", 3))
        .await?;
    for item in store.get_all(&Kind::FEATURES).await? {
        println!(
            "  {} v{}{}",
            item.key(),
            item.version(),
            if item.is_deleted() { " (deleted)" } else { "" }
        );
    }

    database.database().set_available(false);
    let checkout = store.get(&Kind::FEATURES, "checkout").await?;
    println!(
        "database down; checkout still served from the cache: v{}",
        checkout.map_or(0, |i| i.version())
    );
    match store.get(&Kind::FEATURES, "not-cached").await {
        Ok(_) => println!("unexpected: an uncached read succeeded"),
        Err(err) => println!("an uncached read fails honestly: {err}"),
    }
    println!("status: {:?}", store.status());
    Ok(())
}
