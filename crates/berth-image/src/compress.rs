//! Transparent decompression: plain, gzip or zstd, chosen by magic bytes.

use std::io::{self, BufReader, Cursor, Read};

/// Size of the read buffers and the copy buffer.
pub(crate) const BUF_SIZE: usize = 256 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a stream.
    pub(crate) fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// A reader that remembers whether it ever hit end of file. A tar reader
/// that stops at the end-of-archive marker never does; one that reads into
/// EOF found a truncated archive.
pub(crate) struct EofWatch<R> {
    inner: R,
    pub hit_eof: bool,
}

impl<R: Read> EofWatch<R> {
    pub(crate) fn new(inner: R) -> Self {
        EofWatch {
            inner,
            hit_eof: false,
        }
    }
}

impl<R: Read> Read for EofWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        Ok(n)
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for. The returned
/// reader is buffered (reads of any size are cheap).
pub(crate) fn decompress<'a, R: Read + 'a>(
    mut reader: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kind = Compression::detect(&head[..got]);
    let input =
        BufReader::with_capacity(BUF_SIZE, Cursor::new(head).take(got as u64).chain(reader));
    let out: Box<dyn Read + 'a> = match kind {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF_SIZE,
            flate2::bufread::MultiGzDecoder::new(input),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            BUF_SIZE,
            zstd::stream::read::Decoder::with_buffer(input)?,
        )),
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(kind: Compression, data: &[u8]) -> Vec<u8> {
        let packed = match kind {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
        };
        let (got, mut r) = decompress(&packed[..]).unwrap();
        assert_eq!(got, kind);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn detects_and_decodes() {
        let data = b"hello layer".repeat(1000);
        for kind in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(roundtrip(kind, &data), data);
        }
        assert_eq!(roundtrip(Compression::None, b"ab"), b"ab");
        assert_eq!(roundtrip(Compression::None, b""), b"");
    }

    #[test]
    fn truncated_streams_fail() {
        let data = b"some bytes that compress".repeat(5000);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        let gz = e.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for packed in [&gz[..gz.len() / 2], &zs[..zs.len() / 2]] {
            let (_, mut r) = decompress(packed).unwrap();
            assert!(r.read_to_end(&mut Vec::new()).is_err());
        }
    }
}
