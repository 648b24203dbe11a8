//! The keyring on disk: two fixed 64 KiB slots, each
//! `magic "PVKR" | format u8 | generation u64 | nonce 12 | payload length u32 |
//! AES-256-GCM(root key, payload) with the header as associated data | zeros`.
//! The format byte is the payload's (`keyring_codec`): 1 is read and upgraded
//! on the next save, 2 is written.
//!
//! Slots are overwritten in place and fsync'd rather than replaced by a rename, so
//! a destroyed master key does not linger in an unlinked file. (On copy-on-write
//! filesystems and SSDs, overwriting is the best a file can do; the keys are also
//! encrypted under the root key.)

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aes_gcm::{AeadInPlace, Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use super::keyring_codec;
use super::keyring_sealed::{self, SealedKeyring};
use super::sealed::{self, NONCE_LEN, TAG_LEN};
use super::secure_file::{create_private, ensure_private, sync_parent_dir, KeyFileAccess};
use super::{CryptoError, Keyring, RootKey};

const MAGIC: &[u8; 4] = b"PVKR";
const SLOT_LEN: usize = 64 * 1024;
const FILE_LEN: usize = 2 * SLOT_LEN;
const HEADER_LEN: usize = 4 + 1 + 8 + NONCE_LEN + 4;
const MAX_PAYLOAD_LEN: usize = SLOT_LEN - HEADER_LEN - TAG_LEN;

/// The open keyring file. Holds the root key's expanded cipher (wiped on drop),
/// not the root key itself, or nothing secret when a root of trust seals each
/// version (format 3, `keyring_sealed`).
pub struct KeyringFile {
    path: PathBuf,
    file: File,
    sealing: FileSealing,
    /// Generation of the newest valid slot, and which slot holds it.
    generation: u64,
    newest_slot: usize,
}

/// How the file's slots are sealed.
enum FileSealing {
    /// As a whole, by the root key file (formats 1 and 2).
    RootKey(Box<Aes256Gcm>),
    /// Version by version, by a root of trust (format 3).
    ByVersion,
    /// Version by version, after a migration off the root key, which is
    /// kept only to undo it if the first save fails.
    Migrated(Box<Aes256Gcm>),
    /// As a whole, by a new root key file (`by`) that replaced the one the
    /// file was sealed by (`was`), which is kept only to undo it if the
    /// first save fails.
    Replaced {
        by: Box<Aes256Gcm>,
        was: Box<Aes256Gcm>,
    },
    /// As a whole, by a root key file that replaced a root of trust sealing
    /// version by version.
    Unversioned(Box<Aes256Gcm>),
}

/// What reading one slot found.
enum Slot {
    /// No magic or an impossible header: never a slot we wrote completely.
    Garbage,
    /// A well-formed header whose ciphertext does not authenticate: a torn
    /// write, or another root key.
    Unauthenticated,
    Valid {
        generation: u64,
        format: u8,
        payload: Zeroizing<Vec<u8>>,
    },
}

impl KeyringFile {
    /// Opens the keyring file, or creates it (mode 0600) with a new keyring whose
    /// master version 1 is active. Refuses a file group or others can access.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        root: &RootKey,
        now_ms: i64,
    ) -> Result<(KeyringFile, Keyring), CryptoError> {
        let path = path.as_ref();
        match Self::open_with(path, root, KeyFileAccess::OwnerOnly)? {
            Some(opened) => Ok(opened),
            None => Self::create(path, root, now_ms),
        }
    }

    /// Opens an existing keyring file, allowing the group access that `access`
    /// allows; `None` when there is no file. Whether a missing keyring may be
    /// created is the caller's decision: never for a store that holds data.
    pub fn open_with(
        path: impl AsRef<Path>,
        root: &RootKey,
        access: KeyFileAccess,
    ) -> Result<Option<(KeyringFile, Keyring)>, CryptoError> {
        let path = path.as_ref();
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Self::open_existing(path, file, root, access).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CryptoError::io(path, e)),
        }
    }

    /// Writes the keyring to the older slot (generation g+1), fsyncs, then to the
    /// other slot (g+2), fsyncs. A crash at any point leaves one valid slot with
    /// the old or the new state; after success neither slot holds a key that
    /// `keyring` no longer has.
    pub fn save(&mut self, keyring: &Keyring) -> Result<(), CryptoError> {
        let payload = match self.sealing {
            FileSealing::RootKey(_)
            | FileSealing::Replaced { .. }
            | FileSealing::Unversioned(_) => Some(keyring_codec::encode(keyring)),
            FileSealing::ByVersion | FileSealing::Migrated(_) => None,
        };
        if let Some(payload) = &payload {
            if payload.len() > MAX_PAYLOAD_LEN {
                return Err(CryptoError::KeyringTooLarge {
                    payload_len: payload.len(),
                    max: MAX_PAYLOAD_LEN,
                });
            }
        }
        for _ in 0..2 {
            let slot = 1 - self.newest_slot;
            let generation = self.generation + 1;
            let image = match (&self.sealing, &payload) {
                (
                    FileSealing::RootKey(cipher)
                    | FileSealing::Replaced { by: cipher, .. }
                    | FileSealing::Unversioned(cipher),
                    Some(payload),
                ) => seal_slot(cipher, generation, payload)?,
                _ => Zeroizing::new(keyring_sealed::encode_image(keyring, generation)?),
            };
            self.write_slot(slot, &image)?;
            self.generation = generation;
            self.newest_slot = slot;
        }
        Ok(())
    }

    /// Creates the keyring file (mode 0600; it must not exist) with a new
    /// keyring whose master version 1 is active.
    pub fn create(
        path: &Path,
        root: &RootKey,
        now_ms: i64,
    ) -> Result<(KeyringFile, Keyring), CryptoError> {
        let file = create_private(path)?;
        let keyring = Keyring::generate(now_ms);
        let keyring_file = KeyringFile::create_new(
            path,
            file,
            FileSealing::RootKey(Box::new(sealed::cipher_for(root.key()))),
            &keyring,
        )?;
        Ok((keyring_file, keyring))
    }

    /// Creates the keyring file (mode 0600; it must not exist) holding
    /// `keyring`, each of whose versions a root of trust has sealed.
    pub fn create_sealed_by_version(
        path: &Path,
        keyring: &Keyring,
    ) -> Result<KeyringFile, CryptoError> {
        let file = create_private(path)?;
        KeyringFile::create_new(path, file, FileSealing::ByVersion, keyring)
    }

    fn create_new(
        path: &Path,
        file: File,
        sealing: FileSealing,
        keyring: &Keyring,
    ) -> Result<KeyringFile, CryptoError> {
        let mut keyring_file = KeyringFile {
            path: path.to_path_buf(),
            file,
            sealing,
            generation: 0,
            newest_slot: 1,
        };
        if let Err(e) = keyring_file.save(keyring) {
            // Nothing was ever wrapped under this keyring; a half-written file would
            // only block the next start.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        sync_parent_dir(path)?;
        Ok(keyring_file)
    }

    /// Opens an existing keyring file sealed version by version, and the
    /// newest image in it for the root of trust to open; `None` when there is
    /// no file.
    pub fn open_sealed_by_version(
        path: impl AsRef<Path>,
        access: KeyFileAccess,
    ) -> Result<Option<(KeyringFile, SealedKeyring)>, CryptoError> {
        let path = path.as_ref();
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CryptoError::io(path, e)),
        };
        let contents = read_whole(path, &file, access)?;
        let newest = contents
            .chunks_exact(SLOT_LEN)
            .enumerate()
            .filter_map(|(index, slot)| keyring_sealed::decode_image(slot).ok().map(|k| (index, k)))
            .max_by_key(|(_, sealed)| sealed.generation);
        let Some((newest_slot, sealed)) = newest else {
            return Err(if contents.chunks_exact(SLOT_LEN).any(is_root_key_slot) {
                CryptoError::SealedByAnotherRoot(
                    "the keyring is still sealed by a root key file: give that file with \
                     --root-key-file as well, then move the keyring with `pii-vault keys \
                     migrate-root-of-trust` (or start with --root-of-trust file)",
                )
            } else {
                CryptoError::KeyringCorrupt("no slot holds a keyring")
            });
        };
        let keyring_file = KeyringFile {
            path: path.to_path_buf(),
            file,
            sealing: FileSealing::ByVersion,
            generation: sealed.generation,
            newest_slot,
        };
        Ok(Some((keyring_file, sealed)))
    }

    /// From the next save on, seals the keyring version by version (moving
    /// a vault from a root key file to another root of trust, or between two
    /// roots of trust).
    pub fn seal_by_version_from_now_on(&mut self) {
        let sealing = std::mem::replace(&mut self.sealing, FileSealing::ByVersion);
        self.sealing = match sealing {
            FileSealing::RootKey(was) | FileSealing::Replaced { by: was, .. } => {
                FileSealing::Migrated(was)
            }
            FileSealing::Migrated(was) => FileSealing::Migrated(was),
            FileSealing::ByVersion | FileSealing::Unversioned(_) => FileSealing::ByVersion,
        };
    }

    /// From the next save on, seals the keyring as a whole by `root`, a new
    /// root key file replacing what seals it now (another root key file, or
    /// a root of trust). The save writes both slots, so afterwards no slot
    /// opens the old way.
    pub fn seal_by_root_key_from_now_on(&mut self, root: &RootKey) {
        let by = Box::new(sealed::cipher_for(root.key()));
        let sealing = std::mem::replace(&mut self.sealing, FileSealing::ByVersion);
        self.sealing = match sealing {
            FileSealing::RootKey(was) | FileSealing::Replaced { by: was, .. } => {
                FileSealing::Replaced { by, was }
            }
            FileSealing::ByVersion | FileSealing::Migrated(_) | FileSealing::Unversioned(_) => {
                FileSealing::Unversioned(by)
            }
        };
    }

    /// Undoes the last change of sealing (after the save that was to make it
    /// stick failed): seals as before it.
    pub fn seal_as_before(&mut self) {
        let sealing = std::mem::replace(&mut self.sealing, FileSealing::ByVersion);
        self.sealing = match sealing {
            FileSealing::Migrated(was) | FileSealing::Replaced { was, .. } => {
                FileSealing::RootKey(was)
            }
            FileSealing::Unversioned(_) | FileSealing::ByVersion => FileSealing::ByVersion,
            FileSealing::RootKey(key) => FileSealing::RootKey(key),
        };
    }

    fn open_existing(
        path: &Path,
        file: File,
        root: &RootKey,
        access: KeyFileAccess,
    ) -> Result<(KeyringFile, Keyring), CryptoError> {
        let contents = read_whole(path, &file, access)?;
        if contents
            .chunks_exact(SLOT_LEN)
            .any(keyring_sealed::is_sealed_by_version)
        {
            return Err(CryptoError::SealedByAnotherRoot(
                "the keyring is sealed version by version by another root of trust: start \
                 with the --root-of-trust that sealed it",
            ));
        }
        let root_cipher = sealed::cipher_for(root.key());
        let (newest_slot, generation, format, payload) =
            newest_valid_slot(&root_cipher, &contents)?;
        let keyring = keyring_codec::decode(format, &payload)?;
        let keyring_file = KeyringFile {
            path: path.to_path_buf(),
            file,
            sealing: FileSealing::RootKey(Box::new(root_cipher)),
            generation,
            newest_slot,
        };
        Ok((keyring_file, keyring))
    }

    /// Overwrites one whole slot (padding included, so no old ciphertext stays
    /// behind it) and waits for it to reach the disk.
    fn write_slot(&self, slot: usize, image: &[u8]) -> Result<(), CryptoError> {
        self.file
            .write_all_at(image, (slot * SLOT_LEN) as u64)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| CryptoError::io(&self.path, e))
    }
}

impl std::fmt::Debug for KeyringFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringFile")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What the keyring file at `path` holds, if there is one (to tell how,
/// and by what, it is sealed before opening it).
pub fn keyring_file_contents(path: &Path) -> Result<Option<Vec<u8>>, CryptoError> {
    match std::fs::read(path) {
        Ok(contents) => Ok(Some(contents)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CryptoError::io(path, e)),
    }
}

/// Whether `root` opens any of these slot images (a file's two, or a
/// table's one): which of two root key files seals a keyring.
pub fn root_key_opens(root: &RootKey, contents: &[u8]) -> bool {
    contents
        .chunks(SLOT_LEN)
        .any(|slot| open_sealed_keyring(root, slot).is_ok())
}

/// Whether slot images (a file's two, or a table's one) hold a keyring
/// sealed by a root key and none sealed version by version.
pub fn is_root_key_image(contents: &[u8]) -> bool {
    let slots = || contents.chunks(SLOT_LEN).filter(|slot| slot.len() >= 5);
    slots().any(is_root_key_slot) && !slots().any(keyring_sealed::is_sealed_by_version)
}

/// The whole file, checked for its permissions and length.
fn read_whole(path: &Path, file: &File, access: KeyFileAccess) -> Result<Vec<u8>, CryptoError> {
    ensure_private(file, path, access)?;
    let len = file.metadata().map_err(|e| CryptoError::io(path, e))?.len();
    if len != FILE_LEN as u64 {
        return Err(CryptoError::KeyringCorrupt("the file is not 128 KiB long"));
    }
    let mut contents = vec![0u8; FILE_LEN];
    file.read_exact_at(&mut contents, 0)
        .map_err(|e| CryptoError::io(path, e))?;
    Ok(contents)
}

/// Whether a slot looks like one the root key sealed (formats 1 and 2).
fn is_root_key_slot(slot: &[u8]) -> bool {
    &slot[..4] == MAGIC
        && matches!(
            slot[4],
            keyring_codec::FORMAT | keyring_codec::LEGACY_FORMAT
        )
}

/// The slot with the highest generation that authenticates; `WrongRootKey` when
/// none does but one looks like ours, `KeyringCorrupt` when neither does.
/// A slot that authenticated: its index, generation, payload format and payload.
type ValidSlot = (usize, u64, u8, Zeroizing<Vec<u8>>);

fn newest_valid_slot(root_cipher: &Aes256Gcm, contents: &[u8]) -> Result<ValidSlot, CryptoError> {
    let mut newest: Option<ValidSlot> = None;
    let mut saw_our_header = false;
    for (index, slot) in contents.chunks_exact(SLOT_LEN).enumerate() {
        match open_slot(root_cipher, slot) {
            Slot::Garbage => {}
            Slot::Unauthenticated => saw_our_header = true,
            Slot::Valid {
                generation,
                format,
                payload,
            } => {
                if newest
                    .as_ref()
                    .is_none_or(|(_, newest_gen, _, _)| generation > *newest_gen)
                {
                    newest = Some((index, generation, format, payload));
                }
            }
        }
    }
    match newest {
        Some(found) => Ok(found),
        None if saw_our_header => Err(CryptoError::WrongRootKey),
        None => Err(CryptoError::KeyringCorrupt("no slot holds a keyring")),
    }
}

fn open_slot(root_cipher: &Aes256Gcm, slot: &[u8]) -> Slot {
    let (header, body) = slot.split_at(HEADER_LEN);
    let format = header[4];
    if &header[..4] != MAGIC
        || !matches!(format, keyring_codec::FORMAT | keyring_codec::LEGACY_FORMAT)
    {
        return Slot::Garbage;
    }
    let generation = u64::from_be_bytes(header[5..13].try_into().unwrap_or_default());
    let nonce = &header[13..13 + NONCE_LEN];
    let payload_len = u32::from_be_bytes(header[25..29].try_into().unwrap_or_default()) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Slot::Garbage;
    }
    let mut payload = Zeroizing::new(body[..payload_len].to_vec());
    let tag = Tag::from_slice(&body[payload_len..payload_len + TAG_LEN]);
    match root_cipher.decrypt_in_place_detached(Nonce::from_slice(nonce), header, &mut payload, tag)
    {
        Ok(()) => Slot::Valid {
            generation,
            format,
            payload,
        },
        Err(_) => Slot::Unauthenticated,
    }
}

/// The keyring sealed by the root key as one slot image, for keeping it outside
/// a file (a database table shared by several vault processes).
pub fn seal_keyring(
    root: &RootKey,
    keyring: &Keyring,
    generation: u64,
) -> Result<Vec<u8>, CryptoError> {
    let payload = keyring_codec::encode(keyring);
    let image = seal_slot(&sealed::cipher_for(root.key()), generation, &payload)?;
    Ok(image.to_vec())
}

/// Opens what `seal_keyring` sealed: its generation and the keyring.
pub fn open_sealed_keyring(root: &RootKey, image: &[u8]) -> Result<(u64, Keyring), CryptoError> {
    if image.len() != SLOT_LEN {
        return Err(CryptoError::KeyringCorrupt(
            "a sealed keyring is one 64 KiB slot",
        ));
    }
    match open_slot(&sealed::cipher_for(root.key()), image) {
        Slot::Valid {
            generation,
            format,
            payload,
        } => Ok((generation, keyring_codec::decode(format, &payload)?)),
        Slot::Unauthenticated => Err(CryptoError::WrongRootKey),
        Slot::Garbage => Err(CryptoError::KeyringCorrupt("not a sealed keyring")),
    }
}

/// A full slot image. The buffer briefly holds the plaintext payload before it is
/// encrypted in place, hence `Zeroizing`.
fn seal_slot(
    root_cipher: &Aes256Gcm,
    generation: u64,
    payload: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let too_large = || CryptoError::KeyringTooLarge {
        payload_len: payload.len(),
        max: MAX_PAYLOAD_LEN,
    };
    let payload_len = u32::try_from(payload.len()).map_err(|_| too_large())?;
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(too_large());
    }
    let nonce = sealed::random_nonce();
    let mut image = Zeroizing::new(vec![0u8; SLOT_LEN]);
    let (header, body) = image.split_at_mut(HEADER_LEN);
    header[..4].copy_from_slice(MAGIC);
    header[4] = keyring_codec::FORMAT;
    header[5..13].copy_from_slice(&generation.to_be_bytes());
    header[13..25].copy_from_slice(&nonce);
    header[25..29].copy_from_slice(&payload_len.to_be_bytes());
    let (ciphertext, rest) = body.split_at_mut(payload.len());
    ciphertext.copy_from_slice(payload);
    let tag = root_cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), header, ciphertext)
        .map_err(|_| too_large())?;
    rest[..TAG_LEN].copy_from_slice(&tag);
    Ok(image)
}

#[cfg(test)]
#[path = "keyring_file_tests.rs"]
mod tests;
