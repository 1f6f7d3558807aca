//! Networking: the time container networking adds to `run` (berth's
//! bridge vs `--network none`, next to podman's netavark: default network
//! vs `--network none`), and TCP throughput and connection rate through a
//! published port vs the same server on the host's loopback. Runs in a
//! private network namespace: the host's network is not touched.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{berth, podman, timed};
use anyhow::{bail, Context, Result};

fn median_ms(t: &mut [Duration]) -> f64 {
    t.sort();
    t[t.len() / 2].as_secs_f64() * 1000.0
}

/// Downloads `path` once: bytes per second.
fn throughput(port: u16, path: &str) -> Result<f64> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

/// Connections per second: connect, GET a small page, read it, close.
fn connection_rate(port: u16, for_how_long: Duration) -> Result<f64> {
    let t = Instant::now();
    let mut n = 0u32;
    let mut buf = [0u8; 4096];
    while t.elapsed() < for_how_long {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        while s.read(&mut buf)? > 0 {}
        n += 1;
    }
    Ok(f64::from(n) / t.elapsed().as_secs_f64())
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while throughput(port, "/index.html").is_err() {
        if Instant::now() > deadline {
            bail!("nothing answers on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn bench(exe: &Path, w: &Path, iterations: usize, have_podman: bool) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !st.success() {
        bail!("ip link set lo up failed");
    }
    println!();
    println!("networking (a private network namespace; {iterations} runs each, interleaved)");
    type Make = Box<dyn Fn() -> Command>;
    let mut contenders: Vec<(&str, Make, Vec<Duration>)> = Vec::new();
    let (e, ww) = (exe.to_path_buf(), w.to_path_buf());
    contenders.push((
        "berth run --rm --network none IMG /bin/true",
        Box::new(move || {
            let mut c = berth(&e, &ww);
            c.args(["run", "--rm", "--network", "none", "busybox", "/bin/true"]);
            c
        }),
        Vec::new(),
    ));
    let (e, ww) = (exe.to_path_buf(), w.to_path_buf());
    let timing = w.join("net-timing");
    let _ = std::fs::remove_file(&timing);
    let tfile = timing.clone();
    contenders.push((
        "berth run --rm IMG /bin/true (bridge)",
        Box::new(move || {
            let mut c = berth(&e, &ww);
            c.env("BERTH_NET_TIMING", &tfile);
            c.args(["run", "--rm", "--network", "bridge", "busybox", "/bin/true"]);
            c
        }),
        Vec::new(),
    ));
    if have_podman {
        for (name, net) in [
            ("podman run --rm --network none IMG /bin/true", "none"),
            ("podman run --rm IMG /bin/true (netavark bridge)", "bridge"),
        ] {
            let ww = w.to_path_buf();
            contenders.push((
                name,
                Box::new(move || {
                    let mut c = podman(&ww);
                    c.args([
                        "run",
                        "--rm",
                        "--network",
                        net,
                        "--ulimit",
                        "nofile=20000:20000",
                    ])
                    .args([
                        "--ulimit",
                        "nproc=32768:32768",
                        "busybox:latest",
                        "/bin/true",
                    ]);
                    c
                }),
                Vec::new(),
            ));
        }
    }
    // Warm-up (the bridge and nft table are made here); a contender that
    // cannot run here is dropped with the reason.
    contenders.retain(|(name, make, _)| match timed(make(), name) {
        Ok(_) => true,
        Err(e) => {
            println!("({name} skipped: {e})");
            false
        }
    });
    for _ in 0..iterations {
        for (name, make, times) in contenders.iter_mut() {
            times.push(timed(make(), name)?);
        }
    }
    println!("{:<50} {:>10}", "contender", "median ms");
    let mut medians = Vec::new();
    for (name, _, times) in contenders.iter_mut() {
        let m = median_ms(times);
        println!("{name:<50} {m:>10.2}");
        medians.push((*name, m));
    }
    let get = |prefix: &str, net: &str| {
        medians
            .iter()
            .find(|(n, _)| n.starts_with(prefix) && n.contains(net))
            .map(|(_, m)| *m)
    };
    if let (Some(none), Some(bridge)) = (get("berth", "none"), get("berth", "bridge")) {
        println!("berth network setup+teardown added to run: {:.2} ms (median, bridge minus none; target < 5 ms)", bridge - none);
    }
    // berth's own account of the setup (namespace, veth, address, route)
    // and the teardown, inside those runs.
    let recorded = std::fs::read_to_string(&timing).unwrap_or_default();
    for what in ["up", "down"] {
        let mut us: Vec<u64> = recorded
            .lines()
            .filter_map(|l| l.strip_prefix(what)?.trim().parse().ok())
            .collect();
        us.sort_unstable();
        if !us.is_empty() {
            println!(
                "berth network {:<8} inside run: median {:.2} ms, min {:.2} ms ({} runs)",
                if what == "up" { "setup" } else { "teardown" },
                us[us.len() / 2] as f64 / 1000.0,
                us[0] as f64 / 1000.0,
                us.len()
            );
        }
    }
    if let (Some(none), Some(bridge)) = (get("podman", "none"), get("podman", "netavark")) {
        println!("podman netavark added to run:               {:.2} ms (median, default network minus none)", bridge - none);
    }
    published_port(exe, w)
}

/// The same busybox httpd, in a container behind `-p` and on the host.
fn published_port(exe: &Path, w: &Path) -> Result<()> {
    let www = w.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello\n")?;
    let big = std::fs::File::create(www.join("big"))?;
    big.set_len(256 << 20)?;
    let (cport, hport) = (18080u16, 18081u16);
    let mut c = berth(exe, w);
    c.args([
        "run",
        "-d",
        "--name",
        "bench-web",
        "--network",
        "bridge",
        "-p",
        &format!("{cport}:80"),
        "-v",
    ])
    .arg(format!("{}:/www:ro", www.display()))
    .args(["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
    timed(c, "berth run -d -p (httpd)")?;
    let mut host = Command::new("busybox")
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{hport}"), "-h"])
        .arg(&www)
        .stdin(Stdio::null())
        .spawn()
        .context("starting busybox httpd on the host")?;
    let result = (|| -> Result<()> {
        wait_port(cport)?;
        wait_port(hport)?;
        let best = |port: u16| -> Result<f64> {
            let mut b: f64 = 0.0;
            for _ in 0..3 {
                b = b.max(throughput(port, "/big")?);
            }
            Ok(b)
        };
        let (tp_c, tp_h) = (best(cport)?, best(hport)?);
        let (cr_c, cr_h) = (
            connection_rate(cport, Duration::from_secs(2))?,
            connection_rate(hport, Duration::from_secs(2))?,
        );
        println!();
        println!(
            "TCP through a published port (busybox httpd, 256 MiB GET; 2 s of connect+GET+close)"
        );
        println!("{:<44} {:>12} {:>14}", "path", "MiB/s", "connections/s");
        println!(
            "{:<44} {:>12.0} {:>14.0}",
            "127.0.0.1:PORT -> DNAT -> container",
            tp_c / 1048576.0,
            cr_c
        );
        println!(
            "{:<44} {:>12.0} {:>14.0}",
            "127.0.0.1:PORT -> same httpd on the host",
            tp_h / 1048576.0,
            cr_h
        );
        println!(
            "ratio published/host: throughput {:.2}x, connection rate {:.2}x",
            tp_c / tp_h,
            cr_c / cr_h
        );
        Ok(())
    })();
    let _ = host.kill();
    let _ = host.wait();
    let mut rm = berth(exe, w);
    rm.args(["rm", "-f", "bench-web"]);
    let _ = timed(rm, "berth rm");
    result
}
