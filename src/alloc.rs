//! The allocator, and how it gives memory back to the system.
//!
//! mimalloc: the click path allocates small strings per click, where glibc's malloc took a seventh of the CPU.
//! Two settings keep resident memory close to what is in use:
//! - freed pages go back to the system at once. mimalloc's default delays that by a second, and the delay only
//!   runs out while the same thread keeps allocating: a configuration load freed by a thread that then sleeps stayed
//!   resident (with 10,000 campaigns, 10 to 30 MiB more while serving);
//! - no transparent huge pages: a 2 MiB region the allocator uses only in part would stay wholly resident.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Option numbers of the linked mimalloc (its `mi_option_e`, version 3; `libmimalloc-sys` is pinned to the
/// version these were read from, and a test checks them against the options' defaults).
mod option {
    use libmimalloc_sys::mi_option_t;
    pub const PURGE_DELAY: mi_option_t = 15;
    pub const ALLOW_THP: mi_option_t = 43;
}

/// Applies the settings above; call first thing in `main`. mimalloc's own environment variables
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ALLOW_THP`) still win where they are set.
pub fn configure() {
    for (option, env, value) in
        [(option::PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0), (option::ALLOW_THP, "MIMALLOC_ALLOW_THP", 0)]
    {
        if std::env::var_os(env).is_none() {
            // SAFETY: setting an option only stores a number mimalloc reads on its next purge or OS allocation.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
    no_huge_pages();
}

/// Turns transparent huge pages off for the whole process, for the memory other libraries map too.
#[cfg(target_os = "linux")]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; it takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        eprintln!("traffoflex: cannot turn transparent huge pages off: {}", std::io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn no_huge_pages() {}

#[cfg(test)]
mod tests {
    use super::option;
    use libmimalloc_sys::{mi_option_get, mi_option_t};

    fn get(o: mi_option_t) -> std::ffi::c_long {
        // SAFETY: reads an option's value.
        unsafe { mi_option_get(o) }
    }

    #[test]
    fn the_option_numbers_name_the_options_meant() {
        // Untouched in this test process, so each still has its default: purge_delay 1000 (ms),
        // use_numa_nodes 0 right after it, allow_thp 1, minimal_purge_size 0 right after it.
        assert_eq!((get(option::PURGE_DELAY), get(option::PURGE_DELAY + 1)), (1000, 0));
        assert_eq!((get(option::ALLOW_THP), get(option::ALLOW_THP + 1)), (1, 0));
    }
}
