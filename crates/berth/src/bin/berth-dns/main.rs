//! berth-dns: the name responder of one user network (see
//! berth_net::dns). Started by berth when the network's first container
//! starts; prints "ready" once it listens; exits when berth removes its
//! hosts file or stops it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

fn start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 2..].split(' ').nth(19))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let mut listen: Option<Ipv4Addr> = None;
    let mut hosts: Option<PathBuf> = None;
    let mut pid_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--listen", Some(v)) => listen = v.parse().ok(),
            ("--hosts", Some(v)) => hosts = Some(v.into()),
            ("--pid-file", Some(v)) => pid_file = Some(v.into()),
            _ => {
                eprintln!("berth-dns: usage: berth-dns --listen IP --hosts FILE --pid-file FILE");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(listen), Some(hosts), Some(pid_file)) = (listen, hosts, pid_file) else {
        eprintln!("berth-dns: --listen, --hosts and --pid-file are required");
        return ExitCode::from(2);
    };
    let sock = match berth_net::dns::bind(listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth-dns: {e}");
            return ExitCode::FAILURE;
        }
    };
    let me = format!("{} {}\n", std::process::id(), start_time());
    if let Err(e) = std::fs::write(&pid_file, &me) {
        eprintln!("berth-dns: writing {}: {e}", pid_file.display());
        return ExitCode::FAILURE;
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams: Vec<_> = berth_net::dns::upstreams(&resolv)
        .into_iter()
        .filter(|a| a.ip() != std::net::IpAddr::V4(listen))
        .collect();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let res = berth_net::dns::serve(sock, hosts, upstreams);
    if std::fs::read_to_string(&pid_file).is_ok_and(|p| p == me) {
        let _ = std::fs::remove_file(&pid_file);
    }
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-dns: {e}");
            ExitCode::FAILURE
        }
    }
}
