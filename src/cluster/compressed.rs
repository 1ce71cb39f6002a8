//! Compression of what the caches hold for every object: small JSON
//! documents, most of whose bytes (field names, usual values) every object
//! shares. A dictionary of those shared bytes lets each document be stored
//! as little more than what is its own.

use std::cell::RefCell;

use zstd::{
    dict::{DecoderDictionary, EncoderDictionary},
    zstd_safe::{self, CCtx, DCtx},
};

/// Fast, and on documents this small higher levels gain almost nothing.
const LEVEL: i32 = 3;

thread_local! {
    // A context is about 100 KiB to set up: one per thread, for any dictionary.
    static COMPRESSION: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DECOMPRESSION: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// The bytes documents of one kind share.
pub struct Dictionary {
    encoder: EncoderDictionary<'static>,
    decoder: DecoderDictionary<'static>,
}

impl Dictionary {
    pub fn new(shared: &'static [u8]) -> Self {
        Self {
            encoder: EncoderDictionary::copy(shared, LEVEL),
            decoder: DecoderDictionary::copy(shared),
        }
    }

    pub fn compress(&self, document: &[u8]) -> Box<[u8]> {
        let mut compressed = Vec::with_capacity(zstd_safe::compress_bound(document.len()));
        COMPRESSION
            .with_borrow_mut(|context| {
                context.compress_using_cdict(&mut compressed, document, self.encoder.as_cdict())
            })
            .expect("the bound is room enough");
        compressed.into_boxed_slice()
    }

    /// What [`Dictionary::compress`] was given.
    pub fn decompress(&self, compressed: &[u8]) -> Vec<u8> {
        let size = zstd_safe::get_frame_content_size(compressed)
            .ok()
            .flatten()
            .expect("compressed here, with its size");
        let mut document = Vec::with_capacity(usize::try_from(size).expect("it fit before"));
        DECOMPRESSION
            .with_borrow_mut(|context| {
                context.decompress_using_ddict(&mut document, compressed, self.decoder.as_ddict())
            })
            .expect("compressed here with this dictionary");
        document
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompresses_what_it_compressed() {
        let dictionary = Dictionary::new(br#"{"name":"","labels":{"team":""}}"#);
        for document in [
            &b""[..],
            br#"{"name":"a","labels":{"team":"payments"}}"#,
            &[7u8; 100_000][..],
        ] {
            let compressed = dictionary.compress(document);
            assert_eq!(dictionary.decompress(&compressed), document);
        }
        let shared = br#"{"name":"abc","labels":{"team":"payments"}}"#;
        assert!(dictionary.compress(shared).len() < shared.len());
    }
}
