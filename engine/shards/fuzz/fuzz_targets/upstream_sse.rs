//! An engine's response body -> the upstream SSE parser of the HTTP adapters
//! (`orchd_shards::engines`), for both wire formats (`openai`, `llamacpp`).
//!
//! Input layout: byte 0 gives `n = byte % 32` chunk lengths, the next `n` bytes are
//! those lengths (0 = an empty body frame), the rest is the body. The body is fed the
//! way `HttpStream::next` feeds it, one body frame at a time: in one piece, split
//! at the fuzzer's points (the remainder being the last chunk), and one byte at a time.
//!
//! Asserts: no panic; all three splits give the same pieces and the same error (for
//! bodies under the parser's 1 MiB event limit, which is checked per read and so does
//! depend on the split); text pieces are never empty; nothing follows `End` or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchd_engine::config::AdapterKind;
use orchd_shards::engines::fuzzing::{parse_event, take_event, MAX_EVENT};
use orchd_shards::engines::Piece;

/// `HttpStream::next` called until the stream is done, minus the socket: the pieces,
/// then the error (as its message) if the stream failed.
fn run<'a>(
    kind: AdapterKind,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Result<Piece, String>> {
    let mut chunks = chunks.into_iter();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        if let Some(event) = take_event(&mut buf) {
            match parse_event(kind, &event) {
                Ok(Some(p)) => {
                    let end = matches!(p, Piece::End(_));
                    out.push(Ok(p));
                    if end {
                        return out; // `next` answers End from now on
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
            continue;
        }
        if buf.len() > MAX_EVENT {
            out.push(Err("an event larger than 1 MiB".into()));
            return out;
        }
        match chunks.next() {
            Some(c) => buf.extend_from_slice(c),
            None => return out, // the body ended without the engine saying so
        }
    }
}

fn split<'a>(lens: &[u8], mut body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    for &n in lens {
        let (c, rest) = body.split_at(usize::from(n).min(body.len()));
        chunks.push(c);
        body = rest;
    }
    chunks.push(body);
    chunks
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32).min(rest.len());
    let (lens, body) = rest.split_at(n);
    for kind in [AdapterKind::Openai, AdapterKind::Llamacpp] {
        let whole = run(kind, [body]);
        for (i, p) in whole.iter().enumerate() {
            if let Ok(Piece::Text(t)) = p {
                assert!(!t.is_empty(), "an empty text piece");
            }
            if matches!(p, Ok(Piece::End(_)) | Err(_)) {
                assert_eq!(i + 1, whole.len(), "a piece after the end");
            }
        }
        if body.len() <= MAX_EVENT {
            let cut = run(kind, split(lens, body));
            assert_eq!(whole, cut, "{kind:?}: split at {lens:?}");
            let bytes = run(kind, body.chunks(1));
            assert_eq!(whole, bytes, "{kind:?}: one byte at a time");
        }
    }
});
