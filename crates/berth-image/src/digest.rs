//! sha256 digests: parsing `sha256:<hex>` strings and hashing streams.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// Returns the hex part of `sha256:<64 lower-case hex>`, or an error naming
/// the bad digest. Only sha256 is supported.
pub fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256_hex(hex) => Ok(hex),
        _ => Err(ImageError::InvalidDigest(digest.to_owned())),
    }
}

/// True for exactly 64 lower-case hex digits.
pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let mut h = Hasher::new();
    h.update(data);
    h.digest()
}

/// An incremental sha256 that also counts bytes.
#[derive(Clone, Default)]
pub(crate) struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `sha256:<hex>` of everything seen so far.
    pub(crate) fn digest(&self) -> String {
        let out = self.sha.clone().finalize();
        format!("sha256:{}", hex::encode(out.as_slice()))
    }
}

/// A reader that hashes every byte that passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Reads the rest of the stream (so trailing padding is hashed too) and
    /// returns the hasher.
    pub(crate) fn finish(mut self, buf: &mut [u8]) -> io::Result<Hasher> {
        loop {
            match self.read(buf) {
                Ok(0) => return Ok(self.hasher),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_digest(b""), empty);
        assert!(sha256_hex(empty).is_ok());
        assert!(sha256_hex("sha512:abc").is_err());
        assert!(sha256_hex(&empty.to_uppercase()).is_err());
        assert!(sha256_hex("sha256:../../etc/passwd").is_err());
    }

    #[test]
    fn hashing_reader_hashes_everything() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        let h = r.finish(&mut [0u8; 4096]).unwrap();
        assert_eq!(h.len(), 100_000);
        assert_eq!(h.digest(), sha256_digest(&data));
    }
}
