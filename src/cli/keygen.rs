use std::path::Path;

use crate::crypto::RootKey;

pub fn run(out: &Path) -> anyhow::Result<()> {
    RootKey::generate_file(out)?;
    println!("wrote a new root key to {} (mode 0600)", out.display());
    println!("Back it up somewhere safe: without it, nothing in the vault can be read.");
    Ok(())
}
