//! Keys and ciphers of the vault: the root key file, the keyring of master keys,
//! wrapped data keys (DEKs), the data envelope, blind indexes and the DEK cache.
//!
//! Nothing here knows about storage or transport; callers hand in bytes and ids.

mod dek_cache;
mod envelope;
mod error;
mod index;
mod keyring;
mod keyring_codec;
mod keyring_file;
mod keyring_sealed;
mod process_memory;
mod root_key;
mod sealed;
mod secret;
mod secure_file;

pub use dek_cache::DekCache;
pub use envelope::{key_version_of, Binding, DataCipher, Dek};
pub use error::CryptoError;
pub use index::{IndexKey, TokenKey};
pub use keyring::{master_version_of_wrapped, Keyring, KeyringId, MasterKey, VersionSeal};
pub use keyring_file::{
    is_root_key_image, keyring_file_contents, open_sealed_keyring, root_key_opens, seal_keyring,
    KeyringFile,
};
pub use keyring_sealed::{decode_image, encode_image, is_sealed_by_version, SealedKeyring};
pub use process_memory::protect_process_memory;
pub use root_key::RootKey;
pub use secret::Key32;
pub use secure_file::{read_private_file, KeyFileAccess};
