//! Seccomp: compiling an OCI `LinuxSeccomp` into a BPF program with
//! libseccomp, and loading that program into the container's process.
//!
//! The two steps are apart on purpose. [`compile`] does all the work that
//! allocates or can fail in interesting ways (name resolution, libseccomp's
//! rule database, BPF generation) before the fork; [`Filter::load`] is a
//! single `seccomp(2)` call on the finished program, safe to make in the
//! child between `fork` and `execve`.
//!
//! Semantics follow runc's, so that configs written for Docker behave the
//! same here:
//! - a syscall name this libseccomp does not know is skipped;
//! - a rule whose action equals the default action is skipped;
//! - several conditions in one rule are ANDed, except when two of them test
//!   the same argument, in which case each becomes a rule of its own (ORed);
//! - `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` without `errnoRet` use EPERM.
//!
//! libseccomp is slow at this: Docker's default profile with its x86 and x32
//! sub-architectures takes about 20 ms to compile. [`compile_cached`] keeps
//! the generated program in a directory (the run root, a tmpfs cleared on
//! reboot) keyed by a hash of everything that shapes it.
//!
//! Unknown action, operator, architecture or flag *strings* never reach this
//! module: `oci-spec` rejects them when the config is parsed, and its error
//! names the offending value.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Highest syscall argument index (syscalls take at most six arguments).
const MAX_ARG_INDEX: usize = 5;

/// Above this many rules, ask libseccomp for a binary-tree filter (as runc
/// does): fewer instructions run per syscall on long allow-lists.
const OPTIMIZE_ABOVE_RULES: usize = 32;

/// Why a seccomp config could not be compiled or loaded.
#[derive(thiserror::Error, Debug)]
pub enum SeccompError {
    /// `SCMP_ACT_NOTIFY` needs a seccomp agent, which berth does not have yet.
    #[error("seccomp action SCMP_ACT_NOTIFY is not supported")]
    NotifyUnsupported,
    /// A filter flag berth cannot honour.
    #[error("seccomp flag {0} is not supported")]
    FlagUnsupported(&'static str),
    /// A rule compares an argument that syscalls do not have.
    #[error("seccomp rule for syscall {syscall}: argument index {index} is out of range (0-5)")]
    ArgIndex {
        /// The syscall the rule is for.
        syscall: String,
        /// The offending `args[].index`.
        index: usize,
    },
    /// An `errnoRet` (or `defaultErrnoRet`) that does not fit the filter's
    /// 16-bit return data.
    #[error("seccomp {field} {value} is out of range (0-65535)")]
    ErrnoRange {
        /// `defaultErrnoRet`, or `errnoRet of <syscall>`.
        field: String,
        /// The offending value.
        value: u32,
    },
    /// libseccomp refused an operation.
    #[error("seccomp: {what}")]
    Libseccomp {
        /// What was being done, naming the syscall or setting.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Reading the generated BPF program back failed.
    #[error("seccomp: exporting the BPF program")]
    Export(#[source] std::io::Error),
    /// The generated program is not a whole number of BPF instructions, or
    /// is longer than the kernel accepts.
    #[error("seccomp: BPF program of {0} bytes is not a valid filter (at most 4096 instructions)")]
    BadProgram(usize),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error("seccomp: loading the filter")]
    Load(#[source] std::io::Error),
    /// With `SECCOMP_FILTER_FLAG_TSYNC`, another thread could not be synchronized.
    #[error("seccomp: loading the filter: thread {0} could not be synchronized (TSYNC)")]
    Tsync(i64),
}

fn libseccomp_err(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Libseccomp { what, source }
}

/// A compiled seccomp filter: a BPF program and the flags to load it with.
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .finish()
    }
}

impl Filter {
    /// Number of BPF instructions in the program.
    pub fn instructions(&self) -> usize {
        self.program.len()
    }

    /// Loads the filter into the calling thread (with TSYNC: every thread of
    /// the process). The caller has already set `no_new_privs` or holds
    /// CAP_SYS_ADMIN.
    ///
    /// Meant for the container's child right before `execve`: it allocates
    /// nothing and makes one syscall.
    pub fn load(&self) -> Result<(), SeccompError> {
        let prog = libc::sock_fprog {
            // `compile` checked the length against BPF_MAXINSNS (4096).
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, a live, initialized array
        // of `len` instructions that outlives the call; the kernel only reads
        // it (and copies it) during the call. The flags are SECCOMP_FILTER_FLAG_*
        // bits chosen by `compile`. No Rust memory is changed by installing a
        // filter.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        match rc {
            0 => Ok(()),
            -1 => Err(SeccompError::Load(std::io::Error::last_os_error())),
            tid => Err(SeccompError::Tsync(tid)),
        }
    }
}

/// Compiles an OCI `LinuxSeccomp` (defaultAction, defaultErrnoRet,
/// architectures, flags, syscalls with names/action/errnoRet/args) into a
/// loadable [`Filter`].
///
/// Syscall names unknown to libseccomp are skipped, as runc does. Actions:
/// ALLOW, ERRNO, KILL, KILL_PROCESS, KILL_THREAD, TRAP, TRACE, LOG; NOTIFY is
/// an error for now. Flags: SECCOMP_FILTER_FLAG_LOG, _SPEC_ALLOW and _TSYNC
/// (also set as libseccomp attributes); _WAIT_KILLABLE_RECV is an error, as
/// it only applies to NOTIFY.
pub fn compile(cfg: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let default_action = action(
        cfg.default_action(),
        cfg.default_errno_ret(),
        "defaultErrnoRet",
    )?;
    let mut ctx = ScmpFilterContext::new(default_action)
        .map_err(libseccomp_err("creating the filter context"))?;

    for arch in cfg.architectures().as_deref().unwrap_or_default() {
        let arch = scmp_arch(*arch);
        let present = ctx
            .is_arch_present(arch)
            .map_err(libseccomp_err(format!("checking architecture {arch:?}")))?;
        if !present {
            ctx.add_arch(arch)
                .map_err(libseccomp_err(format!("adding architecture {arch:?}")))?;
        }
    }

    let flags = filter_flags(cfg)?;
    // Mirror the flags as context attributes (libseccomp's own load would
    // use them); `Filter::load` passes `flags` to the kernel itself.
    if flags & libc::SECCOMP_FILTER_FLAG_LOG != 0 {
        ctx.set_ctl_log(true)
            .map_err(libseccomp_err("setting SECCOMP_FILTER_FLAG_LOG"))?;
    }
    if flags & libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW != 0 {
        ctx.set_ctl_ssb(true)
            .map_err(libseccomp_err("setting SECCOMP_FILTER_FLAG_SPEC_ALLOW"))?;
    }
    if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
        ctx.set_ctl_tsync(true)
            .map_err(libseccomp_err("setting SECCOMP_FILTER_FLAG_TSYNC"))?;
    }

    let syscalls = cfg.syscalls().as_deref().unwrap_or_default();
    if syscalls.len() > OPTIMIZE_ABOVE_RULES {
        // Not fatal: an older libseccomp just builds a linear filter.
        let _ = ctx.set_ctl_optimize(2);
    }
    for rule in syscalls {
        add_rule(&mut ctx, rule, default_action)?;
    }

    export(&ctx, flags)
}

/// The `seccomp(2)` flags for the config's `flags`.
fn filter_flags(cfg: &LinuxSeccomp) -> Result<libc::c_ulong, SeccompError> {
    let mut flags = 0;
    for flag in cfg.flags().as_deref().unwrap_or_default() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::FlagUnsupported(
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                ))
            }
        };
    }
    Ok(flags)
}

/// Like [`compile`], but reuses the BPF program compiled earlier for an
/// identical config, kept as a file in `cache_dir`.
///
/// The key is a SHA-256 of the config, the libseccomp version and API level,
/// the kernel release and the architecture. `cache_dir` must be writable only
/// by berth (e.g. `<run-root>/seccomp`): a file planted there becomes the
/// filter of every container with that config. The cache is best effort:
/// when it cannot be read or written, the filter is compiled as usual.
pub fn compile_cached(cfg: &LinuxSeccomp, cache_dir: &Path) -> Result<Filter, SeccompError> {
    let flags = filter_flags(cfg)?;
    let Some(key) = cache_key(cfg) else {
        return compile(cfg);
    };
    let path = cache_dir.join(format!("{key}.bpf"));
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(program) = decode_program(&bytes) {
            return Ok(Filter { program, flags });
        }
    }
    let filter = compile(cfg)?;
    // Best effort: write a temporary file and rename it into place, so a
    // concurrent reader never sees half a program.
    let _ = std::fs::create_dir_all(cache_dir).and_then(|()| {
        let tmp = cache_dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut file| file.write_all(&filter.encode_program()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    });
    Ok(filter)
}

/// For a host preparing a guest kernel's cache (berth's microVMs): the file
/// name [`compile_cached`] looks for on a kernel whose release is
/// `kernel_release`, and the program it would find there. The program does
/// not depend on the kernel, only on libseccomp; `host_cache` keeps it.
pub fn cache_entry_for(
    cfg: &LinuxSeccomp,
    kernel_release: &str,
    host_cache: &Path,
) -> Result<Option<(String, Vec<u8>)>, SeccompError> {
    let Some(key) = cache_key_for(cfg, kernel_release) else {
        return Ok(None);
    };
    let name = format!("{key}.bpf");
    let path = host_cache.join(&name);
    if let Ok(bytes) = std::fs::read(&path) {
        if decode_program(&bytes).is_ok() {
            return Ok(Some((name, bytes)));
        }
    }
    let bytes = compile(cfg)?.encode_program();
    let tmp = host_cache.join(format!(".{key}.{}.tmp", std::process::id()));
    let _ = std::fs::create_dir_all(host_cache)
        .and_then(|()| std::fs::write(&tmp, &bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    Ok(Some((name, bytes)))
}

/// The cache file name for `cfg`, or `None` when the config cannot be
/// serialized (it always can; then there is simply no caching).
fn cache_key(cfg: &LinuxSeccomp) -> Option<String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    cache_key_for(cfg, &kernel)
}

fn cache_key_for(cfg: &LinuxSeccomp, kernel: &str) -> Option<String> {
    use sha2::{Digest as _, Sha256};

    let version = libseccomp::ScmpVersion::current().ok()?;
    let mut hasher = Sha256::new();
    hasher.update(b"berth-seccomp-bpf-v1\0");
    hasher.update(
        format!(
            "libseccomp {}.{}.{} api {}\0kernel {}\0arch {}\0",
            version.major,
            version.minor,
            version.micro,
            libseccomp::get_api(),
            kernel.trim(),
            std::env::consts::ARCH
        )
        .as_bytes(),
    );
    hasher.update(serde_json::to_vec(cfg).ok()?);
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Adds one OCI syscall rule (for each of its names) to the context.
fn add_rule(
    ctx: &mut ScmpFilterContext,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
) -> Result<(), SeccompError> {
    let names = rule.names();
    let first = names.first().map(String::as_str).unwrap_or("<no name>");
    let act = action(
        rule.action(),
        rule.errno_ret(),
        &format!("errnoRet of {first}"),
    )?;
    if act == default_action {
        // libseccomp rejects such rules; the default already covers them.
        return Ok(());
    }
    let args = rule.args().as_deref().unwrap_or_default();
    let conditions = args
        .iter()
        .map(|arg| condition(arg, first))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = [false; MAX_ARG_INDEX + 1];
    let same_arg_twice = args
        .iter()
        .any(|a| std::mem::replace(&mut seen[a.index()], true));

    for name in names {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            // Unknown to this libseccomp on every architecture: skip, as runc does.
            continue;
        };
        let failed = |source| SeccompError::Libseccomp {
            what: format!("adding a rule for syscall {name}"),
            source,
        };
        if conditions.is_empty() {
            ctx.add_rule(act, syscall).map_err(failed)?;
        } else if same_arg_twice {
            for cond in &conditions {
                ctx.add_rule_conditional(act, syscall, std::slice::from_ref(cond))
                    .map_err(failed)?;
            }
        } else {
            ctx.add_rule_conditional(act, syscall, &conditions)
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// Generates the BPF program and keeps it as instructions, ready to load.
fn export(ctx: &ScmpFilterContext, flags: libc::c_ulong) -> Result<Filter, SeccompError> {
    let memfd =
        nix::sys::memfd::memfd_create(c"berth-seccomp-bpf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SeccompError::Export(e.into()))?;
    let mut file = std::fs::File::from(memfd);
    ctx.export_bpf(&file)
        .map_err(libseccomp_err("generating the BPF program"))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(SeccompError::Export)?;

    let program = decode_program(&bytes)?;
    Ok(Filter { program, flags })
}

/// Size of one `struct sock_filter` as libseccomp exports it.
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

/// Splits an exported program (native-endian `struct sock_filter`s) into
/// instructions, checking it is a whole, loadable program.
fn decode_program(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let insns = bytes.chunks_exact(INSN);
    if bytes.is_empty()
        || !insns.remainder().is_empty()
        || insns.len() > libc::BPF_MAXINSNS as usize
    {
        return Err(SeccompError::BadProgram(bytes.len()));
    }
    Ok(insns
        .map(|insn| libc::sock_filter {
            code: u16::from_ne_bytes([insn[0], insn[1]]),
            jt: insn[2],
            jf: insn[3],
            k: u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]),
        })
        .collect())
}

impl Filter {
    /// The program in the layout `decode_program` reads.
    fn encode_program(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.program.len() * INSN);
        for insn in &self.program {
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
        }
        bytes
    }
}

/// The libseccomp action for an OCI action; `errno_field` names the errno
/// setting in errors.
fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    errno_field: &str,
) -> Result<ScmpAction, SeccompError> {
    let data = || -> Result<u16, SeccompError> {
        let value = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(value).map_err(|_| SeccompError::ErrnoRange {
            field: errno_field.to_string(),
            value,
        })
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(data()?)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(data()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::NotifyUnsupported),
    })
}

/// The libseccomp comparison for an OCI argument rule. For
/// `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the expected
/// masked value; other operators ignore `valueTwo` (as runc does).
fn condition(arg: &LinuxSeccompArg, syscall: &str) -> Result<ScmpArgCompare, SeccompError> {
    let index = arg.index();
    if index > MAX_ARG_INDEX {
        return Err(SeccompError::ArgIndex {
            syscall: syscall.to_string(),
            index,
        });
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // `index` is at most 5, so the cast is lossless.
    Ok(ScmpArgCompare::new(index as u32, op, datum))
}

/// The libseccomp architecture for an OCI one.
fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Docker-like profile: EPERM by default, an allow-list, clone without
    /// namespace flags, clone3 answered with ENOSYS, a custom errno, argument
    /// rules, names for other architectures and a name no libseccomp knows.
    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["exit", "exit_group", "getpid", "getppid", "read", "write", "prctl",
                       "seccomp", "rt_sigreturn", "rt_sigprocmask", "brk", "mmap", "munmap",
                       "close", "chown32", "not_a_real_syscall", "arm_fadvise64_64"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}]},
            {"names": ["dup3"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 100, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 15, "op": "SCMP_CMP_EQ"}]},
            {"names": ["pipe2"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 1234, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 5678, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getuid"], "action": "SCMP_ACT_ERRNO"}
        ]
    }"#;

    fn profile() -> LinuxSeccomp {
        serde_json::from_str(PROFILE).expect("test profile parses")
    }

    /// Runs `probe` in a forked child after loading `filter` there, and
    /// returns the child's exit code: 0 for success, else the errno.
    ///
    /// The test harness is multi-threaded, so the child only makes raw
    /// syscalls (async-signal-safe) and leaves with `_exit`.
    fn in_child(filter: &Filter, probe: fn() -> libc::c_long) -> i32 {
        // SAFETY: the child runs only async-signal-safe code: prctl, the
        // allocation-free `Filter::load`, the raw syscall in `probe`, reading
        // errno and `_exit`. It never returns into the test harness.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain syscalls with integer arguments; `_exit` ends
                // the child without running destructors or atexit handlers.
                unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        libc::_exit(200);
                    }
                    if filter.load().is_err() {
                        libc::_exit(201);
                    }
                    let code = if probe() == -1 {
                        *libc::__errno_location()
                    } else {
                        0
                    };
                    libc::_exit(code);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("child ended with {other:?}"),
                }
            }
        }
    }

    // Probes: raw syscalls, so that libc cannot substitute another syscall.
    fn getpid() -> libc::c_long {
        // SAFETY: getpid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getpid) }
    }
    fn getuid() -> libc::c_long {
        // SAFETY: getuid has no arguments.
        unsafe { libc::syscall(libc::SYS_getuid) }
    }
    fn mount_tmpfs() -> libc::c_long {
        // SAFETY: NUL-terminated static strings; the call is denied by the
        // filter (and the child's mount namespace is the test's own anyway).
        unsafe {
            libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                c"/nonexistent-berth".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                0,
            )
        }
    }
    fn unshare_mount_ns() -> libc::c_long {
        // SAFETY: integer flags only.
        unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) }
    }
    fn clone3() -> libc::c_long {
        // SAFETY: a NULL args pointer; the filter answers before the kernel
        // would read it (and the kernel would fail it with EFAULT/EINVAL).
        unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) }
    }
    fn clone_newns() -> libc::c_long {
        // SAFETY: denied by the filter before a process is created.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWNS | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        }
    }
    fn mkdirat() -> libc::c_long {
        // SAFETY: a NUL-terminated static path.
        unsafe {
            libc::syscall(
                libc::SYS_mkdirat,
                libc::AT_FDCWD,
                c"/nonexistent-berth/x".as_ptr(),
                0o755,
            )
        }
    }
    fn personality_query() -> libc::c_long {
        // SAFETY: 0xffffffff only queries the persona.
        unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) }
    }
    fn personality_bsd() -> libc::c_long {
        // SAFETY: denied by the filter (PER_BSD = 6).
        unsafe { libc::syscall(libc::SYS_personality, 6) }
    }
    fn socket_unix() -> libc::c_long {
        // SAFETY: integer arguments; the descriptor dies with the child.
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) }
    }
    fn socket_alg() -> libc::c_long {
        // SAFETY: integer arguments; denied by the filter.
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_ALG, libc::SOCK_SEQPACKET, 0) }
    }
    fn dup3_100_15() -> libc::c_long {
        // SAFETY: integer arguments; flags 15 are invalid, so an allowed call
        // fails with EINVAL and duplicates nothing.
        unsafe { libc::syscall(libc::SYS_dup3, 0, 100, 15) }
    }
    fn dup3_100_5() -> libc::c_long {
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_dup3, 0, 100, 5) }
    }
    fn dup3_101_15() -> libc::c_long {
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_dup3, 0, 101, 15) }
    }
    fn pipe2_1234() -> libc::c_long {
        // SAFETY: invalid flags, so an allowed call fails with EINVAL before
        // the (NULL) array is written.
        unsafe { libc::syscall(libc::SYS_pipe2, std::ptr::null_mut::<libc::c_int>(), 1234) }
    }
    fn pipe2_5678() -> libc::c_long {
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_pipe2, std::ptr::null_mut::<libc::c_int>(), 5678) }
    }
    fn pipe2_42() -> libc::c_long {
        // SAFETY: as above; denied by the filter.
        unsafe { libc::syscall(libc::SYS_pipe2, std::ptr::null_mut::<libc::c_int>(), 42) }
    }

    #[test]
    fn filter_allows_denies_and_sets_errno() {
        let filter = compile(&profile()).unwrap();
        assert!(filter.instructions() > 10, "{filter:?}");
        assert_eq!(in_child(&filter, getpid), 0, "getpid is allowed");
        assert_eq!(in_child(&filter, mount_tmpfs), libc::EPERM, "mount");
        assert_eq!(in_child(&filter, unshare_mount_ns), libc::EPERM, "unshare");
        assert_eq!(in_child(&filter, clone3), libc::ENOSYS, "clone3");
        assert_eq!(
            in_child(&filter, clone_newns),
            libc::EPERM,
            "clone(CLONE_NEWNS)"
        );
        assert_eq!(in_child(&filter, mkdirat), libc::EACCES, "errnoRet 13");
        assert_eq!(
            in_child(&filter, getuid),
            libc::EPERM,
            "ERRNO without errnoRet"
        );
    }

    #[test]
    fn argument_conditions() {
        let filter = compile(&profile()).unwrap();
        assert_eq!(in_child(&filter, personality_query), 0);
        assert_eq!(in_child(&filter, personality_bsd), libc::EPERM);
        assert_eq!(in_child(&filter, socket_unix), 0);
        assert_eq!(in_child(&filter, socket_alg), libc::EPERM);
        // Conditions on different arguments are ANDed. Allowed calls reach
        // the kernel, which rejects their flags with EINVAL.
        assert_eq!(in_child(&filter, dup3_100_15), libc::EINVAL);
        assert_eq!(in_child(&filter, dup3_100_5), libc::EPERM);
        assert_eq!(in_child(&filter, dup3_101_15), libc::EPERM);
        // Two conditions on one argument become two rules (ORed), as in runc.
        assert_eq!(in_child(&filter, pipe2_1234), libc::EINVAL);
        assert_eq!(in_child(&filter, pipe2_5678), libc::EINVAL);
        assert_eq!(in_child(&filter, pipe2_42), libc::EPERM);
    }

    #[test]
    fn flags_are_kept_and_loadable() {
        let mut cfg = profile();
        cfg.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        ]));
        let filter = compile(&cfg).unwrap();
        assert_eq!(
            filter.flags,
            libc::SECCOMP_FILTER_FLAG_LOG
                | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                | libc::SECCOMP_FILTER_FLAG_TSYNC
        );
        assert_eq!(in_child(&filter, getpid), 0);
        assert_eq!(in_child(&filter, mount_tmpfs), libc::EPERM);
    }

    #[test]
    fn unknown_action_string_is_rejected_naming_it() {
        let json = PROFILE.replacen("SCMP_ACT_ALLOW", "SCMP_ACT_BOGUS", 1);
        let err = serde_json::from_str::<LinuxSeccomp>(&json).unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_BOGUS"), "{err}");
        let json = PROFILE.replacen("SCMP_CMP_MASKED_EQ", "SCMP_CMP_SORTA_EQ", 1);
        let err = serde_json::from_str::<LinuxSeccomp>(&json).unwrap_err();
        assert!(err.to_string().contains("SCMP_CMP_SORTA_EQ"), "{err}");
    }

    #[test]
    fn notify_is_not_supported() {
        let json = PROFILE.replacen(
            r#""names": ["getuid"], "action": "SCMP_ACT_ERRNO""#,
            r#""names": ["getuid"], "action": "SCMP_ACT_NOTIFY""#,
            1,
        );
        let err = compile(&serde_json::from_str(&json).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seccomp action SCMP_ACT_NOTIFY is not supported"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let json = PROFILE.replacen(
            r#""index": 0, "value": 38"#,
            r#""index": 6, "value": 38"#,
            1,
        );
        let err = compile(&serde_json::from_str(&json).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seccomp rule for syscall socket: argument index 6 is out of range (0-5)"
        );
        let json = PROFILE.replacen(r#""errnoRet": 13"#, r#""errnoRet": 70000"#, 1);
        let err = compile(&serde_json::from_str(&json).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seccomp errnoRet of mkdirat 70000 is out of range (0-65535)"
        );
        let mut cfg = profile();
        cfg.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
        ]));
        let err = compile(&cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seccomp flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is not supported"
        );
    }

    #[test]
    fn cached_compile_reuses_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let cfg = profile();
        let fresh = compile(&cfg).unwrap();

        let first = compile_cached(&cfg, &cache).unwrap();
        assert_eq!(first.encode_program(), fresh.encode_program());
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(files.len(), 1, "one program, no temporary files left");
        let path = files[0].as_ref().unwrap().path();
        assert_eq!(std::fs::read(&path).unwrap(), fresh.encode_program());

        let start = std::time::Instant::now();
        let again = compile_cached(&cfg, &cache).unwrap();
        eprintln!("compile_cached (hit): {:?}", start.elapsed());
        assert_eq!(again.encode_program(), fresh.encode_program());
        assert_eq!(in_child(&again, mount_tmpfs), libc::EPERM);
        assert_eq!(in_child(&again, getpid), 0);

        // Flags come from the config, not the cache; a different config is a
        // different entry.
        let mut logged = cfg.clone();
        logged.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog]));
        let logged = compile_cached(&logged, &cache).unwrap();
        assert_eq!(logged.flags, libc::SECCOMP_FILTER_FLAG_LOG);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);

        // A damaged entry is recompiled and replaced.
        std::fs::write(&path, b"garbage").unwrap();
        let repaired = compile_cached(&cfg, &cache).unwrap();
        assert_eq!(repaired.encode_program(), fresh.encode_program());
        assert_eq!(std::fs::read(&path).unwrap(), fresh.encode_program());

        // An unusable cache directory only costs the cache.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let uncached = compile_cached(&cfg, &blocked.join("seccomp")).unwrap();
        assert_eq!(uncached.encode_program(), fresh.encode_program());
    }

    #[test]
    fn default_allow_with_kill_rule() {
        let cfg: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getuid"], "action": "SCMP_ACT_KILL_PROCESS"},
                             {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let filter = compile(&cfg).unwrap();
        assert_eq!(in_child(&filter, getpid), 0);
        // SAFETY: as in `in_child`; the child is killed by the filter.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // SAFETY: raw syscalls only, then `_exit`.
                unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    if filter.load().is_err() {
                        libc::_exit(201);
                    }
                    libc::syscall(libc::SYS_getuid);
                    libc::_exit(0);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert!(
                    matches!(
                        status,
                        nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::SIGSYS, _)
                    ),
                    "expected death by SIGSYS, got {status:?}"
                );
            }
        }
    }
}
