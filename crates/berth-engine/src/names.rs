//! Container IDs and Docker-style generated names.

use std::io::Read;

const LEFT: &[&str] = &[
    "admiring",
    "brave",
    "clever",
    "dazzling",
    "eager",
    "focused",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "laughing",
    "modest",
    "nifty",
    "optimistic",
    "practical",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];
const RIGHT: &[&str] = &[
    "albattani",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "feynman",
    "galileo",
    "hopper",
    "johnson",
    "kepler",
    "lovelace",
    "meitner",
    "noether",
    "pasteur",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "varahamihira",
    "wozniak",
    "yonath",
    "zhukovsky",
];

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// A new 64-hex-digit container ID.
pub fn new_id() -> String {
    hex::encode(random_bytes::<32>())
}

/// A generated name like `brave_turing`.
pub fn new_name() -> String {
    let r = random_bytes::<4>();
    let l = LEFT[usize::from(r[0]) % LEFT.len()];
    let rr = RIGHT[usize::from(r[1]) % RIGHT.len()];
    format!("{l}_{rr}_{:02x}{:02x}", r[2], r[3])
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
