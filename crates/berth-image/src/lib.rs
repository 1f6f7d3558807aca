//! berth's content store and image import.
//!
//! * [`Store`]: a content-addressed store of blobs (`blobs/sha256/<hex>`)
//!   and unpacked layers (`layers/<diff-id-hex>/`, each an overlayfs
//!   lowerdir), with a staging area (`tmp/`).
//! * [`Store::import`]: all-or-nothing import of an OCI image layout or a
//!   `docker save` tarball (plain, gzip or zstd).
//! * [`unpack_layer`]: the confined OCI layer unpacker (whiteouts as 0:0
//!   character devices, opaque directories as `trusted.overlay.opaque=y`).
//!
//! ```
//! # fn main() -> Result<(), berth_image::ImageError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = berth_image::Store::open(&dir.path().join("image"))?;
//! let digest = store.write_blob(br#"{"hello":"world"}"#)?;
//! assert_eq!(store.read_blob(&digest)?, br#"{"hello":"world"}"#);
//! // An empty tar is not an image archive: nothing changes in the store.
//! let err = store.import(&[0u8; 1024][..]).unwrap_err();
//! assert_eq!(err.to_string(), "archive has neither index.json nor manifest.json");
//! assert_eq!(store.list_layers()?.len(), 0);
//! # Ok(()) }
//! ```

mod compress;
mod digest;
mod error;
mod import;
mod manifest;
mod pull;
mod staging;
mod store;
mod sys;
mod unpack;

pub use digest::{sha256_digest, sha256_hex};
pub use error::ImageError;
pub use import::ImportedImage;
pub use manifest::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
pub use pull::{Ingest, IngestImage, LayerOutcome};
pub use staging::MAX_JSON_SIZE;
pub use store::Store;
pub use sys::read_xattr;
pub use unpack::{unpack_layer, unpack_layer_digest, UnpackReport, OPAQUE_XATTR};
