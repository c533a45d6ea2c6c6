//! Property tests: no input makes the SIP parser (or the 400 salvage path) or the SDP
//! answerer panic — random bytes, and every corpus message with random bytes flipped,
//! cut short or spliced.

use proptest::prelude::*;
use tonewall::media::Codec;
use tonewall::sip::message::{salvage_bad_request, Message};
use tonewall::sip::sdp;

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sip");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    out.sort();
    out
}

fn exercise(buf: &[u8]) {
    if let Ok(Message::Request(r)) = Message::parse(buf) {
        let _ = r.headers.top_via();
        let _ = r.headers.call_id();
        let _ = r.headers.tag("To");
        if let Ok(body) = std::str::from_utf8(&r.body) {
            let _ = sdp::answer(
                body,
                &[Codec::Pcmu, Codec::Pcma],
                [127, 0, 0, 1].into(),
                30000,
                1,
            );
        }
    }
    let _ = salvage_bad_request(buf);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..1500)) {
        exercise(&buf);
    }

    #[test]
    fn mutated_corpus_never_panics(
        pick in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let corpus = corpus();
        let mut buf = corpus[pick % corpus.len()].clone();
        for (at, b) in flips {
            if !buf.is_empty() {
                let i = at % buf.len();
                buf[i] = b;
            }
        }
        exercise(&buf);
        let n = cut % (buf.len() + 1);
        exercise(&buf[..n]);
    }

    #[test]
    fn random_sdp_never_panics(text in "[a-z]=[ -~]{0,60}(\r\n[a-z]=[ -~]{0,60}){0,12}") {
        let _ = sdp::answer(&text, &[Codec::Pcmu], [127, 0, 0, 1].into(), 30000, 1);
    }
}
