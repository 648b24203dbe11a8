//! The erasure journal: every erasure's receipt, appended to a file of its own
//! and made durable before the erasure is acknowledged. It is kept apart from
//! the store (beside the keyring), so restoring an old copy of the store does
//! not roll it back: at start the vault erases again every customer whose
//! receipt the store does not have.
//!
//! Each record is `length u32 BE | postcard(ReceiptRecord) | first 8 bytes of
//! SHA-256 of the postcard bytes`. A record cut short by a crash fails its
//! check and is cut off on open. Receipts name customers by id and hold no
//! personal value.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::records::{decode, encode};
use super::{ReceiptRecord, StoreError};

const CHECK_LEN: usize = 8;
/// A receipt is a few hundred bytes; anything near this is not one.
const MAX_RECORD_LEN: usize = 64 * 1024;

pub struct ErasureJournal {
    path: PathBuf,
    file: Mutex<File>,
}

impl ErasureJournal {
    /// Opens (or creates, mode 0600) the journal and returns every receipt in
    /// it, oldest first, after cutting off a torn last record.
    pub fn open(path: &Path) -> Result<(ErasureJournal, Vec<ReceiptRecord>), StoreError> {
        let io = |error| StoreError::engine(format!("erasure journal {}", path.display()), error);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(io)?;
        let (receipts, valid_len) = parse(&contents)?;
        if valid_len < contents.len() {
            tracing::warn!(
                path = %path.display(),
                cut = contents.len() - valid_len,
                "erasure journal ended in a torn record; cut off"
            );
            file.set_len(valid_len as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let journal = ErasureJournal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        };
        Ok((journal, receipts))
    }

    /// Appends a receipt and waits for it to reach the disk.
    pub fn append(&self, receipt: &ReceiptRecord) -> Result<(), StoreError> {
        let payload = encode(receipt)?;
        let mut record = Vec::with_capacity(4 + payload.len() + CHECK_LEN);
        record.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        record.extend_from_slice(&payload);
        record.extend_from_slice(&check(&payload));
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&record)
            .and_then(|()| file.sync_data())
            .map_err(|error| {
                StoreError::engine(format!("erasure journal {}", self.path.display()), error)
            })
    }
}

fn check(payload: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::digest(payload);
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    check
}

/// The receipts of every whole record, and how many bytes they take.
fn parse(mut rest: &[u8]) -> Result<(Vec<ReceiptRecord>, usize), StoreError> {
    let total = rest.len();
    let mut receipts = Vec::new();
    while let Some((len, after_len)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_RECORD_LEN || after_len.len() < len + CHECK_LEN {
            break;
        }
        let (payload, after) = after_len.split_at(len);
        let (stored_check, after) = after.split_at(CHECK_LEN);
        if stored_check != check(payload) {
            break;
        }
        receipts.push(decode(payload)?);
        rest = after;
    }
    Ok((receipts, total - rest.len()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn receipt(id: &str) -> ReceiptRecord {
        ReceiptRecord {
            receipt_id: format!("rcpt_{id}"),
            customer_id: id.into(),
            deleted_at_ms: 5,
            reason: "asked".into(),
            fields_erased: 2,
            tokens_erased: 1,
            data_keys_destroyed: vec![format!("{id}/dek-v1")],
            wrapped_under: [1].into(),
            audit_hash: "ab".into(),
        }
    }

    #[test]
    fn receipts_survive_a_reopen_in_order_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, found) = ErasureJournal::open(&path).unwrap();
        assert!(found.is_empty());
        journal.append(&receipt("c1")).unwrap();
        journal.append(&receipt("c2")).unwrap();
        drop(journal);
        let (_, found) = ErasureJournal::open(&path).unwrap();
        assert_eq!(found, vec![receipt("c1"), receipt("c2")]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_appending_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, _) = ErasureJournal::open(&path).unwrap();
        journal.append(&receipt("c1")).unwrap();
        journal.append(&receipt("c2")).unwrap();
        drop(journal);
        let whole = std::fs::read(&path).unwrap();
        for cut in 1..20 {
            std::fs::write(&path, &whole[..whole.len() - cut]).unwrap();
            let (journal, found) = ErasureJournal::open(&path).unwrap();
            assert_eq!(found, vec![receipt("c1")], "cut {cut}");
            journal.append(&receipt("c3")).unwrap();
            drop(journal);
            let (_, found) = ErasureJournal::open(&path).unwrap();
            assert_eq!(found, vec![receipt("c1"), receipt("c3")]);
        }
    }
}
