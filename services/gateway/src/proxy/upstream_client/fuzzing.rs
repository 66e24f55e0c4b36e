//! The response-head parser and the chunk decoder on bytes alone, with no connection: what
//! the property tests (`properties`) and the fuzz target (`services/gateway/fuzz`, feature
//! `fuzzing`) drive.

use bytes::BytesMut;
use http::Method;

use super::body::{Chunk, Decoder, Step};
use super::head::{parse_response, Parsed};

/// Parses `wire` as the client does while reading a head to a `method` request: interim
/// responses skipped, up to a final head, a partial one or a refusal.
pub fn parse_all(wire: &[u8], method: &Method) {
    let mut at = 0;
    while let Ok(Parsed::Interim(len)) = parse_response(&wire[at..], method) {
        at += len;
    }
}

/// Decodes `wire` as a chunked body read in pieces of the given sizes (cycled): the body and
/// what was read after its end, or why it is refused.
pub fn decode_chunked(wire: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let mut decoder = Decoder::Chunked(Chunk::Size);
    let mut read = BytesMut::new();
    let mut body = Vec::new();
    let mut at = 0;
    let mut sizes = pieces.iter().cycle();
    loop {
        match decoder.step(&mut read)? {
            Step::Data(bytes) => body.extend_from_slice(&bytes),
            Step::End => return Ok((body, read.to_vec())),
            Step::More if at == wire.len() => return Err("the wire ended before the body"),
            Step::More => {
                let size = sizes.next().copied().unwrap_or(1).max(1);
                let end = (at + size).min(wire.len());
                read.extend_from_slice(&wire[at..end]);
                at = end;
            }
        }
    }
}
