//! Content-addressed artifacts (SPEC section 3, "POST /v1/artifacts").
//!
//! `id = "sha256:" + hex(sha256(canonical JSON of {"content", "kind"}))`, where canonical
//! JSON is compact with object keys sorted (serde_json's default `Value` map is ordered).
//! The same kind and content always give the same id. Two backends: a bounded memory
//! store per shard, and a directory with one file per artifact, written atomically and
//! verified against its id on every read.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Plan,
    Summary,
    Diff,
    Trace,
    Other,
}

impl ArtifactKind {
    /// The name it has in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Plan => "plan",
            ArtifactKind::Summary => "summary",
            ArtifactKind::Diff => "diff",
            ArtifactKind::Trace => "trace",
            ArtifactKind::Other => "other",
        }
    }
}

/// Most tags one artifact may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in characters (Unicode scalar values) as JSON Schema's `maxLength`
/// counts them, not in bytes.
pub const MAX_TAG_LEN: usize = 256;

/// The content address of `kind` + `content`.
pub fn content_id(kind: ArtifactKind, content: &serde_json::Value) -> String {
    id_of_canonical(kind, &serde_json::to_vec(content).expect("canonical JSON"))
}

/// The content address of `kind` + content already serialized as canonical JSON: the
/// sha256 of `{"content":<content>,"kind":"<kind>"}`.
fn id_of_canonical(kind: ArtifactKind, content: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"{\"content\":");
    h.update(content);
    h.update(b",\"kind\":\"");
    h.update(kind.as_str().as_bytes());
    h.update(b"\"}");
    hex_id(h.finalize().as_slice())
}

/// `sha256:` + the digest in lowercase hex.
fn hex_id(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(7 + 2 * digest.len());
    id.push_str("sha256:");
    for b in digest {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 15)]));
    }
    id
}

/// True for `sha256:` followed by 64 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 71
        && id.starts_with("sha256:")
        && id[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A `POST /v1/artifacts` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewArtifact {
    pub kind: ArtifactKind,
    pub content: serde_json::Value,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

impl NewArtifact {
    /// Parses and validates a request body; errors name the field.
    pub fn parse(body: &[u8]) -> Result<NewArtifact, ApiError> {
        let a: NewArtifact = crate::error::parse_json(body)?;
        if !a.content.is_object() {
            return Err(ApiError::invalid("content: must be a JSON object"));
        }
        if a.tags.len() > MAX_TAGS
            || a.tags
                .iter()
                .any(|t| t.is_empty() || t.chars().count() > MAX_TAG_LEN)
        {
            return Err(ApiError::invalid(format!(
                "tags: at most {MAX_TAGS} tags of 1 to {MAX_TAG_LEN} characters"
            )));
        }
        if a.parent.as_ref().is_some_and(|p| !valid_id(p)) {
            return Err(ApiError::invalid(
                "parent: must be an artifact id (sha256:<64 hex digits>)",
            ));
        }
        if a.metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(ApiError::invalid("metadata: must be a JSON object"));
        }
        Ok(a)
    }

    /// The stored document: id, digest and creation time added.
    pub fn into_stored(self) -> Stored {
        let id = content_id(self.kind, &self.content);
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut doc = serde_json::json!({
            "id": id,
            "kind": self.kind,
            "digest": &id[7..],
            "created_ms": created_ms,
            "tags": self.tags,
            "content": self.content,
        });
        if let Some(p) = self.parent {
            doc["parent"] = p.into();
        }
        if let Some(m) = self.metadata {
            doc["metadata"] = m;
        }
        Stored {
            json: Bytes::from(serde_json::to_vec(&doc).expect("serializes")),
            id,
            kind: self.kind,
        }
    }
}

/// A task's transcript as a `trace` artifact: the document (and id) that a `POST
/// /v1/artifacts` of the content `{"frames", "session_id", "task_id", "terminal"}` with
/// tags `transcript` and `task:<id>` would store, written frame by frame, as the task makes them: each frame is escaped
/// into the document and hashed once when it is emitted, so ending a task only closes
/// the document and the hash. (Written whole at the end, 256 tasks ending in the same
/// tick made the requests arriving right then wait for 256 transcripts:
/// perf/results/2026-12-05-issue16-first-pass.md.)
///
/// The document is `{"content":{"frames":[...],"session_id","task_id","terminal"},
/// "created_ms","digest","id","kind":"trace","tags"}`: its keys in canonical order, so
/// the bytes from its start to the end of the content are what the id hashes.
pub struct TranscriptWriter {
    doc: Vec<u8>,
    /// Hashes `{"content":` + the content + `,"kind":"trace"}` ([`id_of_canonical`]).
    hash: Sha256,
    /// Bytes of `doc` not hashed yet: hashing in runs of a few frames, not per frame.
    unhashed: usize,
    frames: usize,
}

impl TranscriptWriter {
    const HEAD: &'static [u8] = b"{\"content\":{\"frames\":[";
    /// Hash whenever this much is waiting (a few frames; SHA-256 works in 64-byte blocks).
    const HASH_RUN: usize = 1024;

    /// A writer holding `frames`, with room for `more` frames and the document's end,
    /// in one allocation (grown by doubling, a short task's document was reallocated
    /// twice, which cost more than writing it). A frame is about 60 bytes as a JSON
    /// string; ids, terminal, digest and tags about 450.
    pub fn starting_with(frames: &[Bytes], more: usize) -> TranscriptWriter {
        let room = (frames.len() + more) * 72 + 768;
        let mut doc = Vec::with_capacity(Self::HEAD.len() + room);
        doc.extend_from_slice(Self::HEAD);
        let mut w = TranscriptWriter {
            doc,
            hash: Sha256::new(),
            unhashed: Self::HEAD.len(),
            frames: 0,
        };
        for f in frames {
            w.frame(f);
        }
        w
    }

    /// Appends one frame (orchd's own UTF-8 SSE text) as a JSON string.
    pub fn frame(&mut self, frame: &[u8]) {
        if self.frames > 0 {
            self.doc.push(b',');
        }
        self.frames += 1;
        let text = std::str::from_utf8(frame).unwrap_or("");
        let before = self.doc.len();
        serde_json::to_writer(&mut self.doc, text).expect("writes to a Vec");
        self.unhashed += self.doc.len() - before + usize::from(self.frames > 1);
        if self.unhashed >= Self::HASH_RUN {
            self.hash_pending();
        }
    }

    fn hash_pending(&mut self) {
        let from = self.doc.len() - self.unhashed;
        self.hash.update(&self.doc[from..]);
        self.unhashed = 0;
    }

    /// Closes the content with the task's ids and how it ended, and the document with
    /// its id, digest, time and tags.
    pub fn finish(
        mut self,
        task_id: uuid::Uuid,
        session_id: Option<uuid::Uuid>,
        terminal: &serde_json::Value,
    ) -> Stored {
        let before = self.doc.len();
        // A task without a session (the OpenAI door without X-Session-Id): null.
        match session_id {
            Some(s) => write!(self.doc, "],\"session_id\":\"{s}\""),
            None => write!(self.doc, "],\"session_id\":null"),
        }
        .expect("writes to a Vec");
        write!(self.doc, ",\"task_id\":\"{task_id}\",\"terminal\":").expect("writes to a Vec");
        serde_json::to_writer(&mut self.doc, terminal).expect("a Value serializes");
        self.doc.push(b'}');
        self.unhashed += self.doc.len() - before;
        self.hash_pending();
        self.hash.update(b",\"kind\":\"trace\"}");
        let id = hex_id(self.hash.finalize().as_slice());
        let digest = &id["sha256:".len()..];
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut doc = self.doc;
        write!(
            doc,
            ",\"created_ms\":{created_ms},\"digest\":\"{digest}\",\"id\":\"{id}\",\"kind\":\"trace\",\"tags\":[\"transcript\",\"task:{task_id}\"]}}"
        )
        .expect("writes to a Vec");
        // The store counts a document by its length: a task that ended long before the
        // frames it reserved for (canceled, failed) gives the rest back.
        if doc.capacity() > 2 * doc.len() {
            doc.shrink_to_fit();
        }
        Stored {
            json: Bytes::from(doc),
            id,
            kind: ArtifactKind::Trace,
        }
    }
}

/// A stored artifact: its document as JSON bytes.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: String,
    pub kind: ArtifactKind,
    pub json: Bytes,
}

/// Why a store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the artifact store is full ({used} of {max} bytes hold artifacts that are never evicted)"
    )]
    Full { used: u64, max: u64 },
    #[error("artifact {id} is corrupt: its content does not match its id")]
    Corrupt { id: String },
    #[error("artifact store IO failed: {0}")]
    Io(#[from] io::Error),
}

/// The bounded in-memory backend of one shard. Transcripts are evicted oldest first to
/// make room; user artifacts are never evicted, so a store full of them refuses more.
///
/// Each tenant has its own shelf (issue 19): an artifact is visible to the tenants
/// that stored it, each with its own copy (its own `created_ms`, tags and metadata),
/// so neither an id nor a timestamp tells one tenant what another stored.
#[derive(Debug)]
pub struct MemoryStore {
    max_bytes: u64,
    used: u64,
    /// By [`shelf_key`].
    items: HashMap<String, Stored>,
    /// Evictable (transcript) keys, oldest first.
    evictable: VecDeque<String>,
}

/// Where `tenant`'s artifact `id` is kept in a [`MemoryStore`].
fn shelf_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        MemoryStore {
            max_bytes,
            used: 0,
            items: HashMap::new(),
            evictable: VecDeque::new(),
        }
    }

    /// Stores `item` on `tenant`'s shelf (a no-op if present there), evicting
    /// transcripts to make room. Returns the stored document (the first one, for
    /// content the tenant stored before).
    pub fn put(
        &mut self,
        tenant: &str,
        item: Stored,
        evictable: bool,
    ) -> Result<Bytes, StoreError> {
        let key = shelf_key(tenant, &item.id);
        if let Some(s) = self.items.get(&key) {
            return Ok(s.json.clone());
        }
        let size = item.json.len() as u64;
        while self.used + size > self.max_bytes {
            let Some(old) = self.evictable.pop_front() else {
                return Err(StoreError::Full {
                    used: self.used,
                    max: self.max_bytes,
                });
            };
            if let Some(o) = self.items.remove(&old) {
                self.used -= o.json.len() as u64;
            }
        }
        self.used += size;
        if evictable {
            self.evictable.push_back(key.clone());
        }
        let json = item.json.clone();
        self.items.insert(key, item);
        Ok(json)
    }

    /// `tenant`'s artifact `id`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<Bytes> {
        self.items
            .get(&shelf_key(tenant, id))
            .map(|s| s.json.clone())
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }
}

/// The durable backend: one file `<hex>.json` per artifact on its tenant's shelf, a
/// directory: `<dir>` itself for the tenant `default` (so stores from before tenants
/// keep working), `<dir>/tenants/<name>` for the others (names are `[A-Za-z0-9_.-]`,
/// never `.` or `..`). Blocking IO: run it off the shard's executor.
pub mod fs_store {
    use super::*;

    fn shelf(dir: &Path, tenant: &str) -> PathBuf {
        if tenant == crate::tenant::DEFAULT_TENANT {
            dir.to_path_buf()
        } else {
            dir.join("tenants").join(tenant)
        }
    }

    fn path_of(dir: &Path, tenant: &str, id: &str) -> PathBuf {
        shelf(dir, tenant).join(format!("{}.json", &id[7..]))
    }

    /// Creates the directory and removes temp files a crash left behind (on every
    /// tenant's shelf).
    pub fn prepare(dir: &Path) -> io::Result<usize> {
        fs::create_dir_all(dir)?;
        let mut shelves = vec![dir.to_path_buf()];
        match fs::read_dir(dir.join("tenants")) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        shelves.push(e.path());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut removed = 0;
        for shelf in shelves {
            for entry in fs::read_dir(shelf)? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Writes the artifact to `tenant`'s shelf unless present there: temp file,
    /// fsync, rename, fsync of the directory. Returns the stored document (the
    /// existing one if present and sound).
    pub fn put(dir: &Path, tenant: &str, item: &Stored) -> Result<Bytes, StoreError> {
        if let Some(existing) = get(dir, tenant, &item.id)? {
            return Ok(existing);
        }
        let shelf = shelf(dir, tenant);
        let path = path_of(dir, tenant, &item.id);
        let tmp = shelf.join(format!(".{}.{}.tmp", &item.id[7..], std::process::id()));
        let result = (|| -> io::Result<()> {
            if !shelf.exists() {
                // A new shelf (and `tenants/`, the first time) survives a crash once
                // every directory that gained an entry is synced.
                fs::create_dir_all(&shelf)?;
                let tenants = dir.join("tenants");
                fs::File::open(&tenants)?.sync_all()?;
                fs::File::open(dir)?.sync_all()?;
            }
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&item.json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&shelf)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        Ok(item.json.clone())
    }

    /// Reads and verifies `tenant`'s artifact: a file whose content does not hash to
    /// its id (truncated, edited, bit rot) is reported as corrupt, never served.
    pub fn get(dir: &Path, tenant: &str, id: &str) -> Result<Option<Bytes>, StoreError> {
        let bytes = match fs::read(path_of(dir, tenant, id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Doc {
            kind: ArtifactKind,
            content: serde_json::Value,
        }
        let sound = serde_json::from_slice::<Doc>(&bytes)
            .is_ok_and(|d| content_id(d.kind, &d.content) == id);
        if !sound {
            return Err(StoreError::Corrupt { id: id.to_string() });
        }
        Ok(Some(Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_is_the_document_a_post_of_its_content_would_store() {
        let (task, session) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let first = [
            Bytes::from_static(b"id: 0\nevent: started\ndata: {\"queue_position\":0}\n\n"),
            Bytes::from_static(
                "id: 1\nevent: token\ndata: {\"t\":\"\u{e9}\\\"\",\"i\":0}\n\n".as_bytes(),
            ),
        ];
        // Enough frames that the writer hashes in several runs, not only at the end.
        let many: Vec<Bytes> = (0..200)
            .map(|i| {
                Bytes::from(format!(
                    "id: {i}\nevent: token\ndata: {{\"t\":\" w\\n{i}\",\"i\":{i}}}\n\n"
                ))
            })
            .collect();
        let terminal = serde_json::json!({"event": "end", "tokens_out": 1, "decode_ms": 0});
        for frames in [&[][..], &first[..], &many[..]] {
            let built =
                TranscriptWriter::starting_with(frames, 0).finish(task, Some(session), &terminal);
            let frames_text: Vec<&str> = frames
                .iter()
                .map(|f| std::str::from_utf8(f).unwrap())
                .collect();
            let posted = NewArtifact {
                kind: ArtifactKind::Trace,
                content: serde_json::json!({
                    "task_id": task, "session_id": session, "frames": frames_text, "terminal": terminal,
                }),
                tags: vec!["transcript".into(), format!("task:{task}")],
                parent: None,
                metadata: None,
            }
            .into_stored();
            assert_eq!(built.id, posted.id, "{} frames", frames.len());
            assert_eq!(built.kind, ArtifactKind::Trace);
            let mut a: serde_json::Value = serde_json::from_slice(&built.json).unwrap();
            let mut b: serde_json::Value = serde_json::from_slice(&posted.json).unwrap();
            assert!(a["created_ms"].as_u64().unwrap() > 0);
            a["created_ms"] = 0.into();
            b["created_ms"] = 0.into();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn an_id_is_the_sha256_of_canonical_content_and_kind() {
        use std::fmt::Write as _;
        let content = serde_json::json!({"b": 1, "a": ["x\n", 2]});
        for kind in [
            ArtifactKind::Plan,
            ArtifactKind::Summary,
            ArtifactKind::Diff,
            ArtifactKind::Trace,
            ArtifactKind::Other,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            let canonical =
                serde_json::to_vec(&serde_json::json!({"content": content, "kind": kind})).unwrap();
            let mut want = String::from("sha256:");
            for b in Sha256::digest(&canonical) {
                write!(want, "{b:02x}").unwrap();
            }
            assert_eq!(content_id(kind, &content), want);
        }
    }

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
        assert!(valid_id(&a));
        assert_ne!(
            a,
            content_id(
                ArtifactKind::Trace,
                &serde_json::json!({"b": 1, "a": [1, 2]})
            )
        );
    }

    fn item(n: u8) -> Stored {
        let a = NewArtifact::parse(
            format!(
                r#"{{"kind":"plan","content":{{"n":{n},"pad":"{}"}}}}"#,
                "x".repeat(20)
            )
            .as_bytes(),
        )
        .unwrap();
        a.into_stored()
    }

    #[test]
    fn memory_store_evicts_transcripts_and_refuses_when_full_of_user_artifacts() {
        let size = item(0).json.len() as u64;
        let mut s = MemoryStore::new(size * 2 + size / 2);
        let t = item(1);
        s.put("a", t.clone(), true).unwrap();
        s.put("a", item(2), false).unwrap();
        assert!(s.get("b", &item(2).id).is_none(), "another tenant's");
        s.put("a", item(3), false).unwrap();
        assert!(s.get("a", &t.id).is_none(), "the transcript made room");
        assert!(matches!(
            s.put("a", item(4), false),
            Err(StoreError::Full { .. })
        ));
        assert!(s.used_bytes() <= size * 2 + size / 2);
        // The same content again is the same artifact, even when full.
        s.put("a", item(2), false).unwrap();
    }

    #[test]
    fn fs_store_round_trips_and_detects_corruption() {
        let dir = std::env::temp_dir().join(format!("orchd-fs-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::write(dir.with_extension("probe"), b"").unwrap();
        fs_store::prepare(&dir).unwrap();
        fs::write(dir.join(".leftover.1.tmp"), b"junk").unwrap();
        assert_eq!(fs_store::prepare(&dir).unwrap(), 1);
        let a = item(7);
        fs_store::put(&dir, "default", &a).unwrap();
        assert_eq!(
            fs_store::get(&dir, "default", &a.id).unwrap().unwrap(),
            a.json
        );
        assert!(fs_store::get(&dir, "team-b", &a.id).unwrap().is_none());
        fs_store::put(&dir, "team-b", &a).unwrap();
        let theirs = dir
            .join("tenants/team-b")
            .join(format!("{}.json", &a.id[7..]));
        assert_eq!(fs::read(&theirs).unwrap(), a.json);
        fs::write(dir.join("tenants/team-b/.x.2.tmp"), b"junk").unwrap();
        assert_eq!(fs_store::prepare(&dir).unwrap(), 1, "every shelf is swept");
        let missing = item(8);
        assert!(fs_store::get(&dir, "default", &missing.id)
            .unwrap()
            .is_none());
        // The tenant `default`'s shelf is the directory itself, as before tenants.
        let path = dir.join(format!("{}.json", &a.id[7..]));
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            fs_store::get(&dir, "default", &a.id),
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
        let _ = fs::remove_file(dir.with_extension("probe"));
    }

    #[test]
    fn bad_bodies_name_their_field() {
        for (body, field) in [
            (r#"{"kind":"poem","content":{}}"#, "kind"),
            (r#"{"kind":"plan","content":[1]}"#, "content"),
            (r#"{"kind":"plan"}"#, "content"),
            (r#"{"kind":"plan","content":{},"tags":[1]}"#, "tags"),
            (r#"{"kind":"plan","content":{},"parent":"x"}"#, "parent"),
            (r#"{"kind":"plan","content":{},"extra":1}"#, "extra"),
            ("nope", "body"),
        ] {
            let e = NewArtifact::parse(body.as_bytes()).unwrap_err();
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
    }
}
