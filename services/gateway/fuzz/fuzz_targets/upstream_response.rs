//! The upstream client's response-head parser and chunk decoder on arbitrary bytes: neither
//! may panic, and a decoded body is never longer than the bytes it came from.

#![no_main]

use gateway::proxy::upstream_client::fuzzing::{decode_chunked, parse_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|wire: &[u8]| {
    parse_all(wire, &http::Method::GET);
    parse_all(wire, &http::Method::HEAD);
    // The first byte picks the read size, the rest is the chunked body.
    if let Some((&piece, body)) = wire.split_first() {
        if let Ok((decoded, rest)) = decode_chunked(body, &[usize::from(piece) + 1]) {
            assert!(decoded.len() + rest.len() <= body.len());
        }
    }
});
