//! What the escape tests set up the way a careless caller or a hostile
//! client would.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// `c` runs with descriptors 3..=30 open on the directory `dir` (not
/// close-on-exec), as a careless caller's would be: what berth must not
/// let reach a container (CVE-2024-21626).
pub fn with_open_fds(mut c: Command, dir: &Path) -> Command {
    let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("a path");
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (open, dup2, close) on a path that
    // was allocated before the fork.
    unsafe {
        c.pre_exec(move || {
            let fd = libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for n in 3..=30 {
                if n != fd {
                    libc::dup2(fd, n);
                }
            }
            if fd > 30 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    c
}
