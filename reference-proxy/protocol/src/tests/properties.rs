//! Properties of the codec, checked with proptest.
//!
//! Case counts follow proptest's own `PROPTEST_CASES` environment variable: the normal test run
//! uses proptest's default (256 cases per property); `just proptest-long` raises it.

use super::roundtrip::{auth_kind_for, decode_frontend_alone};
use super::strategies::{any_backend, any_frontend, frontend_session};
use crate::limits::MAX_RESERVE_CHUNK;
use crate::{AuthResponseKind, BackendDecoder, DecoderLimits, FrontendDecoder, FrontendMessage};
use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

/// Splits `stream` at the given cut points (taken modulo its length).
fn chunks(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| stream[w[0]..w[1]].to_vec())
        .collect()
}

fn encode_all<M>(messages: &[M], encode: impl Fn(&M, &mut BytesMut)) -> Vec<u8> {
    let mut stream = BytesMut::new();
    for message in messages {
        encode(message, &mut stream);
    }
    stream.to_vec()
}

/// Feeds chunks one by one, decoding everything available after each.
fn decode_chunked<M>(
    chunks: &[Vec<u8>],
    mut decode: impl FnMut(&mut BytesMut) -> Option<M>,
) -> (Vec<M>, BytesMut) {
    let mut buffer = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        while let Some(message) = decode(&mut buffer) {
            out.push(message);
        }
    }
    (out, buffer)
}

/// Runs a decoder over hostile input until it stops, checking it never over-allocates. Returns
/// normally whether the input was valid or not: the property is "no panic, bounded memory".
fn survive<M>(
    input: &[u8],
    cuts: &[usize],
    max_message_len: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<M>, crate::DecodeError>,
) {
    let mut buffer = BytesMut::new();
    for chunk in chunks(input, cuts) {
        buffer.extend_from_slice(&chunk);
        loop {
            match decode(&mut buffer) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let bound = input.len() + max_message_len.min(MAX_RESERVE_CHUNK) + 64;
        assert!(
            buffer.capacity() <= bound.max(2 * input.len() + MAX_RESERVE_CHUNK),
            "buffer grew to {} for {} input bytes",
            buffer.capacity(),
            input.len()
        );
    }
}

proptest! {
    /// decode(encode(m)) == m, and encode(decode(bytes)) == bytes, for every frontend message.
    #[test]
    fn frontend_decode_inverts_encode(message in any_frontend()) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("generated messages are encodable");
        let encoded = bytes.clone();
        let decoded = decode_frontend_alone(&message, &mut bytes);
        prop_assert_eq!(&decoded, &message);
        let mut again = BytesMut::new();
        decoded.encode(&mut again).expect("encodable");
        prop_assert_eq!(again, encoded);
    }

    /// The same for every backend message.
    #[test]
    fn backend_decode_inverts_encode(message in any_backend()) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("generated messages are encodable");
        let encoded = bytes.clone();
        let decoded = BackendDecoder::new(DecoderLimits::default()).decode(&mut bytes);
        prop_assert_eq!(decoded, Ok(Some(message.clone())));
        let mut again = BytesMut::new();
        message.encode(&mut again).expect("encodable");
        prop_assert_eq!(again, encoded);
    }

    /// Any split of a valid client stream into chunks decodes to the same messages.
    #[test]
    fn frontend_stream_splits_decode_identically(
        session in frontend_session(),
        cuts in vec(any::<usize>(), 0..30),
    ) {
        let stream = encode_all(&session, |m, dst| m.encode(dst).expect("encodable"));
        // The server asks for one authentication kind right after the StartupMessage; the
        // decoder is told so, as a server would tell it.
        let first_auth = session
            .iter()
            .find(|m| m.tag() == Some(b'p'))
            .map_or(AuthResponseKind::Password, auth_kind_for);
        let mut decoder = FrontendDecoder::new(DecoderLimits::default());
        let (decoded, rest) = decode_chunked(&chunks(&stream, &cuts), |buffer| {
            let next = decoder.decode(buffer).expect("valid stream");
            if let Some(FrontendMessage::Startup(_)) = next {
                decoder.expect_auth_response(first_auth);
            }
            next
        });
        prop_assert!(rest.is_empty());
        prop_assert_eq!(decoded, session);
    }

    /// Any split of a valid server stream into chunks decodes to the same messages.
    #[test]
    fn backend_stream_splits_decode_identically(
        messages in vec(any_backend(), 0..30),
        cuts in vec(any::<usize>(), 0..30),
    ) {
        let stream = encode_all(&messages, |m, dst| m.encode(dst).expect("encodable"));
        let mut decoder = BackendDecoder::new(DecoderLimits::default());
        let (decoded, rest) = decode_chunked(&chunks(&stream, &cuts), |buffer| {
            decoder.decode(buffer).expect("valid stream")
        });
        prop_assert!(rest.is_empty());
        prop_assert_eq!(decoded, messages);
    }

    /// Arbitrary bytes never panic either decoder in any state, and never make it reserve
    /// memory beyond what arrived plus one bounded chunk.
    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(
        input in vec(any::<u8>(), 0..2048),
        cuts in vec(any::<usize>(), 0..8),
        max_message_len in 4usize..100_000,
        kind in 0usize..4,
    ) {
        let limits = DecoderLimits::with_max_message_len(max_message_len);
        let kinds = [
            AuthResponseKind::Password,
            AuthResponseKind::SaslInitial,
            AuthResponseKind::Sasl,
            AuthResponseKind::Gss,
        ];
        let mut startup = FrontendDecoder::new(limits);
        survive(&input, &cuts, max_message_len, |b| startup.decode(b));
        let mut running = FrontendDecoder::running(limits);
        running.expect_auth_response(kinds[kind]);
        survive(&input, &cuts, max_message_len, |b| running.decode(b));
        let mut backend = BackendDecoder::new(limits);
        survive(&input, &cuts, max_message_len, |b| backend.decode(b));
    }

    /// Valid frames with random corruption (one byte flipped) still never panic, and a decoded
    /// message always re-encodes (the decoder never accepts what the encoder cannot write).
    #[test]
    fn corrupted_frames_never_panic(
        message in any_backend(),
        position in any::<usize>(),
        value in any::<u8>(),
    ) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("encodable");
        let index = position % bytes.len();
        bytes[index] = value;
        if let Ok(Some(decoded)) = BackendDecoder::new(DecoderLimits::default()).decode(&mut bytes) {
            let mut again = BytesMut::new();
            prop_assert!(decoded.encode(&mut again).is_ok(), "{decoded} does not re-encode");
        }
    }

    /// The same for client messages.
    #[test]
    fn corrupted_client_frames_never_panic(
        message in any_frontend(),
        position in any::<usize>(),
        value in any::<u8>(),
    ) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("encodable");
        let index = position % bytes.len();
        bytes[index] = value;
        let mut decoder = if message.tag().is_some() {
            FrontendDecoder::running(DecoderLimits::default())
        } else {
            FrontendDecoder::new(DecoderLimits::default())
        };
        decoder.expect_auth_response(auth_kind_for(&message));
        if let Ok(Some(decoded)) = decoder.decode(&mut bytes) {
            let mut again = BytesMut::new();
            prop_assert!(decoded.encode(&mut again).is_ok(), "{decoded} does not re-encode");
        }
    }
}
