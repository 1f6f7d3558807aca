//! Built-in security defaults for containers: Docker's default capability set
//! and berth's default seccomp profile.
//!
//! The seccomp profile is reviewed data (`seccomp_default.json`, in Moby's
//! profile format) with the same policy as Docker's default profile. Its rules
//! can depend on the container's capabilities, the CPU architecture and the
//! host kernel; [`default_seccomp`] evaluates those conditions, the way Moby's
//! `seccomp.GetDefaultProfile` does, and returns a plain OCI `LinuxSeccomp`
//! for the bundle's `config.json`.

use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::{Deserialize, Deserializer};

/// The default profile, embedded at build time.
const SECCOMP_DEFAULT_JSON: &str = include_str!("seccomp_default.json");

/// Docker's default capability set (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID,
/// CAP_FOWNER, CAP_MKNOD, CAP_NET_RAW, CAP_SETGID, CAP_SETUID, CAP_SETFCAP,
/// CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL,
/// CAP_AUDIT_WRITE).
pub fn default_capabilities() -> Vec<Capability> {
    vec![
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
}

/// The default profile resolved for the given capability set (the container's
/// bounding set) on this host's architecture (x86_64: native plus the x86 and
/// x32 sub-architectures) and kernel, as an OCI `LinuxSeccomp`.
///
/// Rule conditions are evaluated here, as Moby's `seccomp.GetDefaultProfile`
/// does: `includes` must all hold and no `excludes` may hold. A `minKernel`
/// condition is compared with the running kernel's `major.minor` (read once
/// from /proc); when the version cannot be read it counts as not reached,
/// which in the default profile only withholds the ptrace allow rule.
pub fn default_seccomp(caps: &[Capability]) -> LinuxSeccomp {
    resolve(default_profile(), &Host::current(), caps)
}

/// The embedded profile, parsed on first use. The file is part of the build
/// and the unit tests parse it, so a parse failure is a build defect.
fn default_profile() -> &'static Profile {
    static PROFILE: OnceLock<Profile> = OnceLock::new();
    PROFILE.get_or_init(|| {
        serde_json::from_str(SECCOMP_DEFAULT_JSON)
            .expect("embedded seccomp_default.json is valid (checked by unit tests)")
    })
}

/// A seccomp profile in Moby's format: OCI's `LinuxSeccomp` plus an
/// architecture map and conditional rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    syscalls: Vec<Rule>,
}

/// A native architecture and the sub-architectures its kernel also runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default, deserialize_with = "null_as_empty")]
    sub_architectures: Vec<Arch>,
}

/// One rule: what happens to the named syscalls, possibly only for some
/// argument values, and under which conditions the rule exists at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<ArgRule>,
    #[serde(default)]
    #[allow(dead_code)] // Documentation for reviewers of the data file.
    comment: Option<String>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

/// A comparison of one syscall argument (OCI's `LinuxSeccompArg`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArgRule {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

/// The conditions of a rule's `includes` or `excludes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<Capability>,
    /// Architecture names as Moby spells them (Go's: amd64, x86, x32, arm64...).
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default, deserialize_with = "kernel_version")]
    min_kernel: Option<KernelVersion>,
}

/// A kernel `major.minor` version; patch levels and suffixes are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KernelVersion(u32, u32);

impl KernelVersion {
    /// Parses the leading `major.minor` of a version such as `6.18.0-1-amd64`.
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Self(major, minor.parse().ok()?))
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Arch>, D::Error> {
    Ok(Option::<Vec<Arch>>::deserialize(de)?.unwrap_or_default())
}

fn kernel_version<'de, D: Deserializer<'de>>(de: D) -> Result<Option<KernelVersion>, D::Error> {
    let text = String::deserialize(de)?;
    match KernelVersion::parse(&text) {
        Some(v) if text.split('.').count() == 2 && v != KernelVersion(0, 0) => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(format!(
            "invalid minKernel {text:?}, expected \"<major>.<minor>\""
        ))),
    }
}

/// What rule conditions are evaluated against, besides capabilities.
struct Host {
    /// The native architecture as Moby names it in `includes.arches`.
    arch: &'static str,
    /// The native architecture as libseccomp names it, to pick the `archMap` entry.
    seccomp_arch: Option<Arch>,
    kernel: Option<KernelVersion>,
}

impl Host {
    fn current() -> Self {
        let (arch, seccomp_arch) = native_arch();
        Self {
            arch,
            seccomp_arch,
            kernel: running_kernel(),
        }
    }
}

/// This build's architecture in Moby's (Go's) and libseccomp's spelling.
fn native_arch() -> (&'static str, Option<Arch>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", Some(Arch::ScmpArchX86_64)),
        "x86" => ("x86", Some(Arch::ScmpArchX86)),
        "aarch64" => ("arm64", Some(Arch::ScmpArchAarch64)),
        "arm" => ("arm", Some(Arch::ScmpArchArm)),
        "riscv64" => ("riscv64", Some(Arch::ScmpArchRiscv64)),
        "s390x" => ("s390x", Some(Arch::ScmpArchS390x)),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", Some(Arch::ScmpArchPpc64le)),
        "powerpc64" => ("ppc64", Some(Arch::ScmpArchPpc64)),
        "loongarch64" => ("loong64", Some(Arch::ScmpArchLoongarch64)),
        other => (other, None),
    }
}

/// The running kernel's version, read once.
fn running_kernel() -> Option<KernelVersion> {
    static KERNEL: OnceLock<Option<KernelVersion>> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| KernelVersion::parse(&release))
    })
}

impl Condition {
    /// `includes` semantics: every listed condition holds.
    fn all_hold(&self, host: &Host, caps: &[Capability]) -> bool {
        (self.arches.is_empty() || self.arches.iter().any(|a| a == host.arch))
            && self.caps.iter().all(|c| caps.contains(c))
            && !matches!(self.min_kernel, Some(min) if host.kernel < Some(min))
    }

    /// `excludes` semantics: any listed condition holds.
    fn any_holds(&self, host: &Host, caps: &[Capability]) -> bool {
        self.arches.iter().any(|a| a == host.arch)
            || self.caps.iter().any(|c| caps.contains(c))
            || self.min_kernel.is_some_and(|min| host.kernel >= Some(min))
    }
}

fn resolve(profile: &Profile, host: &Host, caps: &[Capability]) -> LinuxSeccomp {
    let architectures: Vec<Arch> = profile
        .arch_map
        .iter()
        .find(|entry| Some(entry.architecture) == host.seccomp_arch)
        .map(|entry| {
            std::iter::once(entry.architecture)
                .chain(entry.sub_architectures.iter().copied())
                .collect()
        })
        .unwrap_or_default();

    let syscalls: Vec<LinuxSyscall> = profile
        .syscalls
        .iter()
        .filter(|rule| !rule.excludes.any_holds(host, caps) && rule.includes.all_hold(host, caps))
        .map(Rule::to_oci)
        .collect();

    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(profile.default_action);
    seccomp.set_default_errno_ret(profile.default_errno_ret);
    if !architectures.is_empty() {
        seccomp.set_architectures(Some(architectures));
    }
    seccomp.set_syscalls(Some(syscalls));
    seccomp
}

impl Rule {
    fn to_oci(&self) -> LinuxSyscall {
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(self.names.clone());
        syscall.set_action(self.action);
        syscall.set_errno_ret(self.errno_ret);
        if !self.args.is_empty() {
            syscall.set_args(Some(self.args.iter().map(ArgRule::to_oci).collect()));
        }
        syscall
    }
}

impl ArgRule {
    fn to_oci(&self) -> LinuxSeccompArg {
        let mut arg = LinuxSeccompArgBuilder::default()
            .index(self.index)
            .value(self.value)
            .op(self.op);
        if let Some(value_two) = self.value_two {
            arg = arg.value_two(value_two);
        }
        // Every field of `LinuxSeccompArg` has a default, so building cannot fail.
        arg.build()
            .expect("LinuxSeccompArg fields all have defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The disposition of one syscall under a resolved profile, ignoring
    /// argument-conditional rules except where the test asks for them.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        /// An unconditional rule with this action (and errno).
        Always(LinuxSeccompAction, Option<u32>),
        /// Only argument-conditional rules mention it.
        Conditional,
        /// No rule: the default action applies.
        Default,
    }

    fn rules_for<'a>(seccomp: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        seccomp
            .syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn verdict(seccomp: &LinuxSeccomp, name: &str) -> Verdict {
        let rules = rules_for(seccomp, name);
        if let Some(r) = rules
            .iter()
            .find(|r| r.args().as_deref().unwrap_or_default().is_empty())
        {
            return Verdict::Always(r.action(), r.errno_ret());
        }
        if rules.is_empty() {
            Verdict::Default
        } else {
            Verdict::Conditional
        }
    }

    const ALLOW: Verdict = Verdict::Always(LinuxSeccompAction::ScmpActAllow, None);

    fn x86_64_host(kernel: Option<KernelVersion>) -> Host {
        Host {
            arch: "amd64",
            seccomp_arch: Some(Arch::ScmpArchX86_64),
            kernel,
        }
    }

    fn resolved(caps: &[Capability]) -> LinuxSeccomp {
        resolve(
            default_profile(),
            &x86_64_host(Some(KernelVersion(6, 18))),
            caps,
        )
    }

    #[test]
    fn embedded_profile_parses() {
        let profile: Profile = serde_json::from_str(SECCOMP_DEFAULT_JSON).unwrap();
        assert_eq!(profile.default_action, LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret, Some(1));
        assert!(profile.syscalls.len() > 40);
        let known = [
            "amd64", "x86", "x32", "arm", "arm64", "ppc64le", "s390", "s390x", "riscv64",
        ];
        for rule in &profile.syscalls {
            assert!(!rule.names.is_empty());
            for arch in rule.includes.arches.iter().chain(&rule.excludes.arches) {
                assert!(known.contains(&arch.as_str()), "unknown arch {arch}");
            }
        }
    }

    #[test]
    fn profile_format_rejects_unknown_fields() {
        let bad = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[],"bogus":1}"#;
        assert!(serde_json::from_str::<Profile>(bad).is_err());
        let bad = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}]}"#;
        assert!(serde_json::from_str::<Profile>(bad).is_err());
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(
            KernelVersion::parse("6.18.0-1-amd64\n"),
            Some(KernelVersion(6, 18))
        );
        assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8)));
        assert_eq!(KernelVersion::parse("3.12-rc5"), Some(KernelVersion(3, 12)));
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    #[test]
    fn default_capabilities_are_dockers_fourteen() {
        let caps = default_capabilities();
        assert_eq!(caps.len(), 14);
        assert!(!caps.contains(&Capability::SysAdmin));
        assert!(caps.contains(&Capability::NetBindService));
    }

    #[test]
    fn x86_64_gets_its_sub_architectures() {
        let seccomp = resolved(&default_capabilities());
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(seccomp.default_errno_ret(), Some(1));
        assert_eq!(
            seccomp.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        // x86-only rules are in, other architectures' are out.
        assert_eq!(verdict(&seccomp, "arch_prctl"), ALLOW);
        assert_eq!(verdict(&seccomp, "modify_ldt"), ALLOW);
        assert_eq!(verdict(&seccomp, "set_tls"), Verdict::Default);
        assert_eq!(verdict(&seccomp, "s390_runtime_instr"), Verdict::Default);
    }

    #[test]
    fn default_caps_policy() {
        let seccomp = resolved(&default_capabilities());
        for name in [
            "read",
            "write",
            "execve",
            "execveat",
            "exit_group",
            "openat",
            "futex",
        ] {
            assert_eq!(verdict(&seccomp, name), ALLOW, "{name}");
        }
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "open_by_handle_at",
            "syslog",
            "acct",
            "settimeofday",
            "iopl",
            "swapon",
            "pivot_root",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "io_uring_setup",
            "kcmp",
            "pidfd_getfd",
        ] {
            assert_eq!(verdict(&seccomp, name), Verdict::Default, "{name}");
        }
        // CAP_SYS_CHROOT is a default capability.
        assert_eq!(verdict(&seccomp, "chroot"), ALLOW);
        // Since 4.8, ptrace can no longer bypass seccomp, so Docker allows it.
        assert_eq!(verdict(&seccomp, "ptrace"), ALLOW);
        assert_eq!(verdict(&seccomp, "process_vm_readv"), ALLOW);
        // clone3: ENOSYS, so that libcs fall back to clone.
        assert_eq!(
            verdict(&seccomp, "clone3"),
            Verdict::Always(LinuxSeccompAction::ScmpActErrno, Some(38))
        );
        // clone: only without namespace flags.
        assert_eq!(verdict(&seccomp, "clone"), Verdict::Conditional);
        let clone = rules_for(&seccomp, "clone");
        assert_eq!(clone.len(), 1, "the s390 variant is not for x86_64");
        let args = clone[0].args().as_deref().unwrap();
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let ns_flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET;
        assert_eq!(args[0].value(), ns_flags as u64);
        assert_eq!(args[0].value_two().unwrap_or(0), 0);
        // socket: AF_ALG (38) and AF_VSOCK (40) match no allow rule.
        let socket = rules_for(&seccomp, "socket");
        let allowed = |family: u64| {
            socket.iter().any(|r| {
                r.args().as_deref().unwrap().iter().all(|a| match a.op() {
                    LinuxSeccompOperator::ScmpCmpEq => family == a.value(),
                    LinuxSeccompOperator::ScmpCmpLt => family < a.value(),
                    op => panic!("unexpected op {op:?}"),
                })
            })
        };
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_PACKET,
        ] {
            assert!(allowed(family as u64), "family {family}");
        }
        for family in [libc::AF_ALG, libc::AF_VSOCK] {
            assert!(!allowed(family as u64), "family {family}");
        }
    }

    #[test]
    fn sys_admin_unlocks_mount_clone_and_clone3() {
        let mut caps = default_capabilities();
        caps.push(Capability::SysAdmin);
        let seccomp = resolved(&caps);
        for name in [
            "mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf",
        ] {
            assert_eq!(verdict(&seccomp, name), ALLOW, "{name}");
        }
        // Only the unconditional clone rule remains; no ENOSYS rule for clone3.
        assert_eq!(rules_for(&seccomp, "clone").len(), 1);
        assert_eq!(rules_for(&seccomp, "clone3").len(), 1);
        // Other capabilities still gate their syscalls.
        assert_eq!(verdict(&seccomp, "reboot"), Verdict::Default);
        assert_eq!(verdict(&seccomp, "init_module"), Verdict::Default);
    }

    #[test]
    fn other_capabilities_unlock_their_syscalls() {
        for (cap, name) in [
            (Capability::SysBoot, "reboot"),
            (Capability::SysModule, "init_module"),
            (Capability::SysPtrace, "kcmp"),
            (Capability::SysTime, "settimeofday"),
            (Capability::DacReadSearch, "open_by_handle_at"),
        ] {
            assert_eq!(verdict(&resolved(&[cap]), name), ALLOW, "{name}");
            assert_eq!(verdict(&resolved(&[]), name), Verdict::Default, "{name}");
        }
    }

    #[test]
    fn min_kernel_is_checked() {
        let caps = default_capabilities();
        let old = resolve(
            default_profile(),
            &x86_64_host(Some(KernelVersion(4, 4))),
            &caps,
        );
        assert_eq!(verdict(&old, "ptrace"), Verdict::Default);
        let unknown = resolve(default_profile(), &x86_64_host(None), &caps);
        assert_eq!(verdict(&unknown, "ptrace"), Verdict::Default);
        let new = resolve(
            default_profile(),
            &x86_64_host(Some(KernelVersion(4, 8))),
            &caps,
        );
        assert_eq!(verdict(&new, "ptrace"), ALLOW);
    }

    #[test]
    fn running_host_resolves() {
        let seccomp = default_seccomp(&default_capabilities());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(seccomp.architectures().as_ref().map(Vec::len), Some(3));
        }
        assert!(running_kernel().is_some());
        assert_eq!(verdict(&seccomp, "read"), ALLOW);
    }

    /// Runs `probe` in a forked child under `filter` and returns 0 on success,
    /// else the errno. The harness is multi-threaded: the child only makes
    /// raw syscalls and leaves with `_exit`.
    fn in_child(filter: &berth_sandbox::seccomp::Filter, probe: fn() -> libc::c_long) -> i32 {
        // SAFETY: the child runs only async-signal-safe code (prctl, the
        // allocation-free `Filter::load`, one raw syscall, `_exit`).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain syscalls; `_exit` skips destructors and atexit.
                unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
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

    #[test]
    fn default_profile_compiles_and_enforces() {
        let seccomp = default_seccomp(&default_capabilities());
        let mut times = Vec::new();
        let mut filter = None;
        for _ in 0..20 {
            let start = std::time::Instant::now();
            filter = Some(berth_sandbox::seccomp::compile(&seccomp).unwrap());
            times.push(start.elapsed());
        }
        times.sort();
        let filter = filter.unwrap();
        eprintln!(
            "compile(default profile): min {:?}, median {:?}, {} BPF instructions",
            times[0],
            times[times.len() / 2],
            filter.instructions()
        );
        let cache = tempfile::tempdir().unwrap();
        berth_sandbox::seccomp::compile_cached(&seccomp, cache.path()).unwrap();
        let start = std::time::Instant::now();
        let cached = berth_sandbox::seccomp::compile_cached(&seccomp, cache.path()).unwrap();
        eprintln!(
            "compile_cached(default profile), hit: {:?}",
            start.elapsed()
        );
        assert_eq!(cached.instructions(), filter.instructions());

        fn getpid() -> libc::c_long {
            // SAFETY: no arguments.
            unsafe { libc::syscall(libc::SYS_getpid) }
        }
        fn mount() -> libc::c_long {
            // SAFETY: static NUL-terminated strings; denied by the filter.
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
        fn unshare() -> libc::c_long {
            // SAFETY: integer flags; denied by the filter.
            unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) }
        }
        fn clone3() -> libc::c_long {
            // SAFETY: NULL args; the filter answers before the kernel reads them.
            unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) }
        }
        fn clone_newnet() -> libc::c_long {
            // SAFETY: denied by the filter before any process is created.
            unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWNET | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0,
                )
            }
        }
        fn reboot() -> libc::c_long {
            // SAFETY: an invalid magic number, so even an allowed call does nothing.
            unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) }
        }
        fn ptrace_peek_pid1() -> libc::c_long {
            // SAFETY: PTRACE_PEEKUSER on a process we are not tracing fails with
            // ESRCH once the filter lets it through; nothing is modified.
            unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_PEEKUSER, 1, 0, 0) }
        }
        fn socket_vsock() -> libc::c_long {
            // SAFETY: integer arguments; denied by the filter.
            unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) }
        }
        fn socket_inet() -> libc::c_long {
            // SAFETY: integer arguments; the descriptor dies with the child.
            unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0) }
        }
        assert_eq!(in_child(&filter, getpid), 0);
        assert_eq!(in_child(&filter, socket_inet), 0);
        assert_eq!(in_child(&filter, mount), libc::EPERM);
        assert_eq!(in_child(&filter, unshare), libc::EPERM);
        assert_eq!(in_child(&filter, clone_newnet), libc::EPERM);
        assert_eq!(in_child(&filter, reboot), libc::EPERM);
        assert_eq!(in_child(&filter, socket_vsock), libc::EPERM);
        assert_eq!(in_child(&filter, clone3), libc::ENOSYS);
        assert_eq!(in_child(&filter, ptrace_peek_pid1), libc::ESRCH);
    }

    #[test]
    fn resolving_is_fast() {
        let caps = default_capabilities();
        default_seccomp(&caps);
        let start = std::time::Instant::now();
        for _ in 0..100 {
            std::hint::black_box(default_seccomp(&caps));
        }
        let per_call = start.elapsed() / 100;
        eprintln!("default_seccomp: {per_call:?} per call");
        assert!(
            per_call < std::time::Duration::from_millis(5),
            "{per_call:?}"
        );
    }
}
