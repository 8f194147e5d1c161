//! Server-Sent Events as they come off the wire: bytes in, [`Event`]s out, however the
//! reads split the frames. Both transports (the blocking client in [`crate::http`] and
//! the hyper client of `orchd-features`) feed this one parser.
//!
//! Stricter than a browser, as a test of orchd should be: every event must carry an
//! `id` that is a sequence number and JSON `data` (or OpenAI's end marker `[DONE]`, kept
//! as the JSON string `"[DONE]"`); a field SPEC section 2 does not use
//! (`retry`, anything else) or a field given twice is an error, not ignored.

use serde_json::Value;

/// One frame of an event stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `id:`, the frame's sequence number in its task.
    pub id: u64,
    /// `event:`; `message` when absent, as the SSE standard has it.
    pub event: String,
    /// `data:` (its lines joined with `\n`), as JSON.
    pub data: Value,
    /// The exact text of the frame, its first line to the blank line that ends it.
    pub raw: String,
}

impl Event {
    /// `end` or `error`: the frame after which the server closes the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self.event.as_str(), "end" | "error")
    }
}

/// An incremental parser: [`push`](Parser::push) bytes as they arrive, take events with
/// [`next_event`](Parser::next_event). Comment lines (`: hb` heartbeats) are kept aside.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    comments: Vec<String>,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Comment lines seen so far, without the colon and leading spaces.
    pub fn comments(&self) -> &[String] {
        &self.comments
    }

    /// `: hb` comments seen so far.
    pub fn heartbeats(&self) -> usize {
        self.comments.iter().filter(|c| *c == "hb").count()
    }

    /// Bytes received that do not make a whole frame yet (at the end of a stream: the
    /// frame it ended inside of).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next whole event; `Ok(None)` when more bytes are needed. Blocks holding only
    /// comments are recorded and passed over.
    pub fn next_event(&mut self) -> Result<Option<Event>, String> {
        while let Some(end) = block_end(&self.buf) {
            let block: Vec<u8> = self.buf.drain(..end).collect();
            if let Some(ev) = self.parse_block(block)? {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    fn parse_block(&mut self, block: Vec<u8>) -> Result<Option<Event>, String> {
        let raw = String::from_utf8(block).map_err(|e| format!("frame is not UTF-8: {e}"))?;
        let text = raw.replace("\r\n", "\n").replace('\r', "\n");
        let (mut id, mut event, mut data) = (None, None, None::<String>);
        let mut has_field = false;
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            if let Some(comment) = line.strip_prefix(':') {
                self.comments.push(comment.trim_start().to_string());
                continue;
            }
            has_field = true;
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" if id.is_none() => {
                    id = Some(value.parse::<u64>().map_err(|_| {
                        format!("frame id {value:?} is not a sequence number: {raw:?}")
                    })?)
                }
                "event" if event.is_none() => event = Some(value.to_string()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "id" | "event" => return Err(format!("field {field:?} twice in {raw:?}")),
                other => return Err(format!("unexpected SSE field {other:?} in {raw:?}")),
            }
        }
        if !has_field {
            return Ok(None);
        }
        let id = id.ok_or_else(|| format!("frame without an id: {raw:?}"))?;
        let data = data.ok_or_else(|| format!("frame without data: {raw:?}"))?;
        // OpenAI's streams end with `data: [DONE]`, the one data that is not JSON.
        let data = match data.as_str() {
            "[DONE]" => Value::String(data),
            _ => serde_json::from_str(&data)
                .map_err(|e| format!("frame data is not JSON ({e}): {raw:?}"))?,
        };
        Ok(Some(Event {
            id,
            event: event.unwrap_or_else(|| "message".to_string()),
            data,
            raw,
        }))
    }
}

/// Where the first block of `buf` ends (just after its blank line), if `buf` holds a
/// whole one. Lines end with LF, CRLF or CR; a CR that ends `buf` may be the first half
/// of a CRLF, so it waits for the next byte.
fn block_end(buf: &[u8]) -> Option<usize> {
    let (mut i, mut line_start) = (0, 0);
    while i < buf.len() {
        let eol = match (buf[i], buf.get(i + 1)) {
            (b'\n', _) => 1,
            (b'\r', Some(b'\n')) => 2,
            (b'\r', Some(_)) => 1,
            (b'\r', None) => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start {
            return Some(i + eol);
        }
        i += eol;
        line_start = i;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut Parser) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = p.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_with_their_exact_bytes() {
        let wire = "id: 0\nevent: started\ndata: {\"queue_position\":0}\n\n: hb\n\n\
                    id: 1\nevent: token\ndata: {\"t\":\" a\",\"i\":0}\n\n";
        for cut in 0..wire.len() {
            let mut p = Parser::new();
            p.push(&wire.as_bytes()[..cut]);
            let mut got = all(&mut p);
            p.push(&wire.as_bytes()[cut..]);
            got.extend(all(&mut p));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(
                got[0].raw,
                "id: 0\nevent: started\ndata: {\"queue_position\":0}\n\n"
            );
            assert_eq!((got[1].id, got[1].data["t"].as_str()), (1, Some(" a")));
            assert_eq!(p.heartbeats(), 1);
            assert!(p.pending().is_empty());
        }
    }

    #[test]
    fn crlf_and_cr_line_ends_and_multiline_data() {
        let mut p = Parser::new();
        p.push(b"id: 3\r\nevent: end\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nid: 4\rdata: 2\r\r");
        let got = all(&mut p);
        assert_eq!(got.len(), 1, "a CR at the end may be half a CRLF: {got:?}");
        assert_eq!(got[0].data, serde_json::json!({"a": 1}));
        p.push(b"id: 5");
        let got = all(&mut p);
        assert_eq!((got[0].id, got[0].event.as_str()), (4, "message"));
        assert_eq!(p.pending(), b"id: 5");
    }

    #[test]
    fn frames_orchd_must_not_send_are_errors() {
        for bad in [
            "event: token\ndata: {}\n\n",
            "id: x\ndata: {}\n\n",
            "id: 1\ndata: not json\n\n",
            "id: 1\nevent: a\n\n",
            "id: 1\nretry: 5\ndata: {}\n\n",
            "id: 1\nid: 2\ndata: {}\n\n",
        ] {
            let mut p = Parser::new();
            p.push(bad.as_bytes());
            assert!(p.next_event().is_err(), "{bad:?} accepted");
        }
    }
}
