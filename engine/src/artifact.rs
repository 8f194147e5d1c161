//! Content-addressed artifacts (SPEC section 3, "POST /v1/artifacts").
//!
//! `id = "sha256:" + hex(sha256(canonical JSON of {"kind", "content"}))`, where canonical
//! JSON is compact with object keys sorted (serde_json's default `Value` map is ordered).
//! The same kind and content always give the same id.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Plan,
    Summary,
    Diff,
    Trace,
    Other,
}

/// The content address of `kind` + `content`.
pub fn content_id(kind: ArtifactKind, content: &serde_json::Value) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        content: &'a serde_json::Value,
        kind: ArtifactKind,
    }
    let bytes = serde_json::to_vec(&Canonical { content, kind }).expect("canonical JSON");
    let digest = Sha256::digest(&bytes);
    let mut id = String::with_capacity(7 + 64);
    id.push_str("sha256:");
    for b in digest {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// A stored artifact: its document (`id`, `kind`, `content`, `tags`, ...) as JSON bytes.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: String,
    pub kind: ArtifactKind,
    pub json: Bytes,
}

/// The bounded in-memory backend of one shard. Oldest entries go first when full.
#[derive(Debug)]
pub struct MemoryStore {
    max_bytes: u64,
    used: u64,
    items: HashMap<String, Stored>,
    order: VecDeque<String>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        MemoryStore {
            max_bytes,
            used: 0,
            items: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Stores `item`, evicting the oldest entries to make room. Returns false when the
    /// item alone is larger than the store.
    pub fn put(&mut self, item: Stored) -> bool {
        let size = item.json.len() as u64;
        if size > self.max_bytes {
            return false;
        }
        if self.items.contains_key(&item.id) {
            return true;
        }
        while self.used + size > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(o) = self.items.remove(&old) {
                self.used -= o.json.len() as u64;
            }
        }
        self.used += size;
        self.order.push_back(item.id.clone());
        self.items.insert(item.id.clone(), item);
        true
    }

    pub fn get(&self, id: &str) -> Option<&Stored> {
        self.items.get(id)
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_content_addresses() {
        let a = content_id(
            ArtifactKind::Plan,
            &serde_json::json!({"b": 1, "a": [1, 2]}),
        );
        let b = content_id(
            ArtifactKind::Plan,
            &serde_json::json!({"a": [1, 2], "b": 1}),
        );
        assert_eq!(a, b, "key order does not matter");
        assert!(a.starts_with("sha256:") && a.len() == 71);
        assert_ne!(
            a,
            content_id(
                ArtifactKind::Trace,
                &serde_json::json!({"b": 1, "a": [1, 2]})
            )
        );
    }

    #[test]
    fn memory_store_is_bounded_and_evicts_oldest() {
        let item = |id: &str| Stored {
            id: id.into(),
            kind: ArtifactKind::Trace,
            json: Bytes::from(vec![b'x'; 40]),
        };
        let mut s = MemoryStore::new(100);
        assert!(s.put(item("a")));
        assert!(s.put(item("b")));
        assert!(s.put(item("c")));
        assert!(s.get("a").is_none());
        assert!(s.get("c").is_some());
        assert!(s.used_bytes() <= 100);
    }
}
