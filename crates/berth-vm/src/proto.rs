//! The host↔agent protocol, spoken over the VM's virtio-serial port, and
//! between `berth exec`/`berth stats` and the VM's host process over a unix
//! socket in the container's run directory.
//!
//! A frame is `len: u32 LE` (of what follows), `kind: u8`, `chan: u32 LE`,
//! then the payload. Channel 0 is the container's main process; every exec
//! session gets its own. Stream payloads (stdin, stdout, stderr) are raw
//! bytes, control payloads JSON. The agent opens with [`Hello`] carrying
//! [`VERSION`]; the host refuses any other version.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to frames or messages.
pub const VERSION: u32 = 1;
/// Largest frame accepted (a whole OCI spec fits many times over).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest stream chunk put in one frame.
pub const CHUNK: usize = 32 * 1024;
const HEADER: usize = 4 + 1 + 4;

/// Why bytes could not be understood.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum ProtoError {
    #[error("protocol: frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("protocol: frame shorter than its header")]
    Short,
    #[error("protocol: unknown message kind {0}")]
    UnknownKind(u8),
    #[error("protocol: bad {kind:?} message: {msg}")]
    Payload { kind: Kind, msg: String },
    #[error("protocol: the agent speaks version {0}, this berth speaks {VERSION}")]
    Version(u32),
}

macro_rules! kinds {
    ($($name:ident = $n:literal),* $(,)?) => {
        /// What a frame carries.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Kind { $($name = $n),* }

        impl Kind {
            fn from_u8(b: u8) -> Option<Kind> {
                match b { $($n => Some(Kind::$name),)* _ => None }
            }
        }
    };
}

kinds! {
    // agent → host
    Hello = 1,
    Started = 2,
    Stdout = 3,
    Stderr = 4,
    Exited = 5,
    Failed = 6,
    Stats = 7,
    Top = 8,
    // host → agent
    Start = 20,
    Stdin = 21,
    StdinEof = 22,
    Signal = 23,
    Resize = 24,
    Exec = 25,
    StatsRequest = 26,
    Shutdown = 27,
    TopRequest = 28,
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub chan: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, chan: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            chan,
            payload,
        }
    }

    /// A control message with a JSON payload.
    pub fn json<T: Serialize>(kind: Kind, chan: u32, msg: &T) -> Frame {
        // Our message types always serialise.
        let payload = serde_json::to_vec(msg).unwrap_or_default();
        Frame::new(kind, chan, payload)
    }

    /// Decodes the JSON payload.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        serde_json::from_slice(&self.payload).map_err(|e| ProtoError::Payload {
            kind: self.kind,
            msg: e.to_string(),
        })
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = (1 + 4 + self.payload.len()) as u32;
        out.extend_from_slice(&len.to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.chan.to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        self.encode_into(&mut out);
        out
    }
}

/// Collects bytes as they arrive and yields whole frames.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `None` when more bytes are needed. An error
    /// means the peer is broken: drop the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError::TooLarge(len));
        }
        if len < 5 {
            return Err(ProtoError::Short);
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let body = &avail[4..4 + len];
        let kind = Kind::from_u8(body[0]).ok_or(ProtoError::UnknownKind(body[0]))?;
        let chan = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
        let payload = body[5..].to_vec();
        self.start += 4 + len;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(Frame {
            kind,
            chan,
            payload,
        }))
    }
}

/// The agent is up and ready for [`Start`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub version: u32,
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
    /// Milliseconds since the guest kernel started.
    pub uptime_ms: u64,
}

/// A file the agent writes into the guest before starting the container
/// (the container's /etc/hosts, hostname and resolv.conf).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestFile {
    pub path: String,
    pub contents: String,
}

/// Run the container. The spec's root is the guest's merged image.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub spec: oci_spec::runtime::Spec,
    pub files: Vec<GuestFile>,
    /// Keep the container's stdin open (`-i`).
    pub interactive: bool,
    /// Filesystem of the image disk (`erofs` or `ext4`).
    pub image_fs: String,
    /// The spec's seccomp program compiled by the host, as the sandbox's
    /// cache file (name, bytes): libseccomp under emulation is slow.
    pub seccomp_cache: Option<(String, Vec<u8>)>,
    /// The host's time (ns since the epoch): a guest restored from a
    /// snapshot has the snapshot's.
    pub realtime_ns: u64,
    /// Fresh randomness for the guest's RNG, which a restored guest shares
    /// with every other guest restored from the same snapshot.
    pub seed: Vec<u8>,
    /// The guest's network interfaces, configured before the container
    /// starts (none: loopback only).
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Host directories the agent mounts (virtiofs) before the container
    /// starts; the spec bind-mounts them from there.
    #[serde(default)]
    pub volumes: Vec<GuestVolume>,
    /// The container's root is this virtiofs tag (a host directory, as
    /// `berth-runtime` gets it in a bundle) instead of the image disk plus
    /// the writable disk.
    #[serde(default)]
    pub root_share: Option<String>,
    /// Print the agent's phase times on the guest's console
    /// (`BERTH_VM_TRACE`; a restored guest did not boot with `berth.trace`).
    #[serde(default)]
    pub trace: bool,
}

/// A virtiofs tag and where the agent mounts it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GuestVolume {
    pub tag: String,
    pub path: String,
    pub read_only: bool,
}

/// One network interface of the guest: the card QEMU has as the
/// `card`-th (found by [`crate::nic_placeholder_mac`]), renamed and
/// given the container's MAC and address.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub card: usize,
    pub name: String,
    pub mac: [u8; 6],
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    /// The default route, on the first network.
    pub gateway: Option<std::net::Ipv4Addr>,
}

/// Run another process in the container (`berth exec`).
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    pub process: oci_spec::runtime::Process,
    pub interactive: bool,
    /// Discard its output and do not report its exit (`exec -d`).
    pub detach: bool,
}

/// A process of the container runs (its PID inside the guest).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Started {
    pub pid: i32,
}

/// A process ended; `code` as a shell reports it (128+N for signal N).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Exited {
    pub code: i32,
}

/// A process could not be started; `code` as Docker's (127 not found, 126
/// not executable, 125 otherwise).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    pub code: i32,
    pub message: String,
}

/// A signal for the channel's process.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub signal: i32,
}

/// The channel's terminal size.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    pub rows: u16,
    pub cols: u16,
}

/// Usage of the container inside the guest.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub cpu_ns: u64,
    pub memory: u64,
    /// The container's memory limit, else the guest's RAM.
    pub memory_limit: u64,
    pub pids: u64,
}

/// The container's processes inside the guest (`berth top`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Top {
    pub processes: Vec<berth_sandbox::procfs::ProcInfo>,
}

/// Checks the agent's greeting.
pub fn check_hello(frame: &Frame) -> Result<Hello, ProtoError> {
    let hello: Hello = frame.parse()?;
    if hello.version != VERSION {
        return Err(ProtoError::Version(hello.version));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let frames = vec![
            Frame::new(Kind::Stdout, 0, b"hello".to_vec()),
            Frame::json(Kind::Exited, 3, &Exited { code: 127 }),
            Frame::new(Kind::StdinEof, 7, Vec::new()),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in wire.chunks(3) {
            d.push(b);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert_eq!(got[1].parse::<Exited>().unwrap(), Exited { code: 127 });
    }

    #[test]
    fn broken_input_is_an_error_not_a_panic() {
        let mut d = Decoder::default();
        d.push(&u32::MAX.to_le_bytes());
        assert_eq!(d.next_frame(), Err(ProtoError::TooLarge(u32::MAX as usize)));
        let mut d = Decoder::default();
        d.push(&[2, 0, 0, 0, 1, 0]);
        assert_eq!(d.next_frame(), Err(ProtoError::Short));
        let mut d = Decoder::default();
        d.push(&[5, 0, 0, 0, 99, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(ProtoError::UnknownKind(99)));
        let f = Frame::new(Kind::Exited, 0, b"{nope".to_vec());
        assert!(f.parse::<Exited>().is_err());
        // Arbitrary bytes never panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut d = Decoder::default();
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 0xff) as u8
                })
                .collect();
            d.push(&bytes);
            while let Ok(Some(f)) = d.next_frame() {
                let _ = f.parse::<Start>();
                let _ = f.parse::<Hello>();
            }
        }
    }

    #[test]
    fn version_is_checked() {
        let ok = Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: VERSION,
                kernel: "6.1".into(),
                uptime_ms: 1,
            },
        );
        assert!(check_hello(&ok).is_ok());
        let old = Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: VERSION + 1,
                kernel: "6.1".into(),
                uptime_ms: 1,
            },
        );
        assert_eq!(check_hello(&old), Err(ProtoError::Version(VERSION + 1)));
    }
}
