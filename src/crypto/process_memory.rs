//! Keeping key material out of core dumps and swap, as far as the operating
//! system lets a process.

/// Marks the process non-dumpable (no core dumps, no ptrace by other users)
/// and locks its memory when the memlock limit allows it. Returns what could
/// not be done, for the caller to log: the vault still runs without it.
#[cfg(target_os = "linux")]
pub fn protect_process_memory() -> Vec<String> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

    let mut warnings = Vec::new();
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        warnings.push(format!(
            "core dumps stay possible: PR_SET_DUMPABLE failed ({error})"
        ));
    }
    // Locking future allocations under a finite limit would make later
    // allocations fail; lock only when the limit cannot be reached.
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => {
            if let Err(error) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
                warnings.push(format!("memory is not locked: mlockall failed ({error})"));
            }
        }
        Ok((soft, _)) => warnings.push(format!(
            "memory is not locked, so keys may reach swap: RLIMIT_MEMLOCK is {soft} bytes; \
             run with `ulimit -l unlimited` (or CAP_IPC_LOCK and an unlimited limit)"
        )),
        Err(error) => warnings.push(format!("memory is not locked: getrlimit failed ({error})")),
    }
    warnings
}

#[cfg(not(target_os = "linux"))]
pub fn protect_process_memory() -> Vec<String> {
    vec!["core dumps and swap are not guarded on this operating system".to_owned()]
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_process_becomes_non_dumpable() {
        let _warnings = super::protect_process_memory();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
