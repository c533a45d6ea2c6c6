//! Framing of the Xsi-Events channel: the response body is an endless sequence of XML
//! documents (each starting with `<?xml`), split across chunks at any byte and several to a
//! chunk. `DocSplitter` takes chunks and yields whole documents as soon as their root
//! element closes.
//!
//! Must never: panic or grow without bound on any input (garbage is skipped up to the next
//! `<?xml` and reported, an oversized document is dropped), or interpret a document.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::xml::{XmlError, MAX_DOC};

/// Splits a byte stream into XML documents.
#[derive(Debug, Default)]
pub struct DocSplitter {
    buf: Vec<u8>,
}

enum Scan {
    /// A whole document ends at this offset.
    Complete(usize),
    /// More bytes are needed (or the document is malformed: only what follows can tell).
    Incomplete,
}

fn scan(buf: &[u8]) -> Scan {
    let mut reader = Reader::from_reader(buf);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Scan::Complete(pos(&reader, buf));
                }
            }
            Ok(Event::Empty(_)) if depth == 0 => return Scan::Complete(pos(&reader, buf)),
            Ok(Event::Eof) | Err(_) => return Scan::Incomplete,
            Ok(_) => {}
        }
    }
}

fn pos(reader: &Reader<&[u8]>, buf: &[u8]) -> usize {
    usize::try_from(reader.buffer_position())
        .unwrap_or(buf.len())
        .min(buf.len())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

impl DocSplitter {
    pub fn new() -> DocSplitter {
        DocSplitter::default()
    }

    /// Add the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held for a document not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole document, `None` when more bytes are needed, or an error for bytes
    /// that were skipped (garbage, an undecodable or oversized document).
    pub fn next_doc(&mut self) -> Option<Result<String, XmlError>> {
        let start = self.buf.iter().position(|b| !b.is_ascii_whitespace());
        match start {
            None => {
                self.buf.clear();
                return None;
            }
            Some(s) => {
                self.buf.drain(..s);
            }
        }
        if self.buf.first() != Some(&b'<') {
            let skip = find(&self.buf, b"<", 0).unwrap_or(self.buf.len());
            self.buf.drain(..skip);
            return Some(Err(XmlError("garbage between documents".into())));
        }
        match scan(&self.buf) {
            Scan::Complete(end) => {
                let doc: Vec<u8> = self.buf.drain(..end).collect();
                Some(String::from_utf8(doc).map_err(|_| XmlError("document is not UTF-8".into())))
            }
            Scan::Incomplete => {
                if let Some(next) = find(&self.buf, b"<?xml", 1) {
                    self.buf.drain(..next);
                    return Some(Err(XmlError("malformed document skipped".into())));
                }
                if self.buf.len() > MAX_DOC {
                    self.buf.clear();
                    return Some(Err(XmlError("document too large".into())));
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Channel xmlns="x"><channelId>c</channelId></Channel>"#;
    const B: &str = r#"<?xml version="1.0" encoding="UTF-8"?><ChannelHeartBeat xmlns="x"/>"#;

    fn drain(s: &mut DocSplitter) -> Vec<Result<String, XmlError>> {
        std::iter::from_fn(|| s.next_doc()).collect()
    }

    #[test]
    fn every_split_point_yields_the_same_documents() {
        let all = format!("{A}\r\n{B}{A}");
        for cut in 0..all.len() {
            let mut s = DocSplitter::new();
            let mut got = Vec::new();
            s.push(&all.as_bytes()[..cut]);
            got.extend(drain(&mut s));
            s.push(&all.as_bytes()[cut..]);
            got.extend(drain(&mut s));
            let got: Vec<String> = got.into_iter().map(|d| d.unwrap()).collect();
            assert_eq!(
                got,
                vec![A.to_string(), B.to_string(), A.to_string()],
                "cut {cut}"
            );
            assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn a_document_is_yielded_as_soon_as_it_closes() {
        let mut s = DocSplitter::new();
        s.push(B.as_bytes());
        assert_eq!(s.next_doc(), Some(Ok(B.to_string())));
        assert_eq!(s.next_doc(), None);
    }

    #[test]
    fn garbage_is_skipped_up_to_the_next_document() {
        let mut s = DocSplitter::new();
        s.push(format!("junk{A}<?xml version=\"1.0\"?><a><b></a>{B}").as_bytes());
        let got = drain(&mut s);
        assert!(got[0].is_err());
        assert_eq!(got[1], Ok(A.to_string()));
        assert!(got[2].is_err());
        assert_eq!(got[3], Ok(B.to_string()));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn an_endless_document_is_dropped() {
        let mut s = DocSplitter::new();
        s.push(b"<?xml version=\"1.0\"?><a>");
        let filler = vec![b'x'; 64 * 1024];
        let mut errors = 0;
        for _ in 0..20 {
            s.push(&filler);
            errors += drain(&mut s).iter().filter(|d| d.is_err()).count();
        }
        assert!(errors >= 1);
        assert!(s.pending() <= MAX_DOC);
    }
}
