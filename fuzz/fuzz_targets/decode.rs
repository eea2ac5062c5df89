//! Feed arbitrary bytes to the decoder from each starting state (before CONNECT, after a
//! 3.1.1 CONNECT, after a 5.0 CONNECT). The decoder must never panic, and every packet it
//! accepts must re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use edgemq_codec::{Decoder, ProtocolVersion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(64 * 1024);
    decoder.version = match selector % 3 {
        0 => None,
        1 => Some(ProtocolVersion::V3_1_1),
        _ => Some(ProtocolVersion::V5),
    };
    let mut buf = BytesMut::from(input);
    while let Ok(Some(packet)) = decoder.decode(&mut buf) {
        let Some(version) = decoder.version else {
            break;
        };
        let mut out = BytesMut::new();
        if packet.encode(version, &mut out).is_ok()
            && !matches!(packet, edgemq_codec::Packet::Connect(_))
        {
            let mut again = Decoder::new(u32::MAX);
            again.version = Some(version);
            let decoded = again.decode(&mut out).ok().flatten();
            assert_eq!(
                decoded.as_ref(),
                Some(&packet),
                "re-encoding changed the packet"
            );
        }
    }
});
