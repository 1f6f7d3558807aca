//! A small HTTP proxy in front of a real registry that misbehaves on
//! purpose: wrong blob content, connections dropped mid-blob, error
//! statuses, bad manifests, bearer-token authentication. One request per
//! connection; it listens on 127.0.0.1 only and stops on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the proxy does wrong.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Flips a byte in the middle of every GET of blob `digest`.
    CorruptBlob(String),
    /// For the first `times` GETs of blob `digest`: sends the headers and
    /// `after` bytes of the body, then closes the connection.
    DropBlob {
        digest: String,
        after: usize,
        times: usize,
    },
    /// Answers GETs of manifests with this status, content type and body.
    Manifest {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// Answers the first `times` manifest or blob requests with `status`.
    Status { status: u16, times: usize },
    /// Requires a bearer token from `/token`, given for these credentials.
    Bearer { user: String, pass: String },
}

const TOKEN: &str = "berth-test-token";

struct Shared {
    upstream: u16,
    port: u16,
    fault: Fault,
    log: Mutex<Vec<String>>,
    counts: Mutex<HashMap<String, usize>>,
}

pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            port,
            fault,
            log: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
        });
        let (stop2, shared2) = (stop.clone(), shared.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared2.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &shared);
                });
            }
        });
        Proxy {
            port,
            stop,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:<port>/<path>`.
    pub fn name(&self, path: &str) -> String {
        format!("127.0.0.1:{}/{path}", self.port)
    }

    /// "METHOD PATH [range]" of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(conn: &TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(mut conn: &TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!(
        "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.write_all(body);
}

fn base64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The repository a `/v2/<name>/(manifests|blobs)/...` path is about.
fn repo_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/"]
        .iter()
        .find_map(|m| rest.find(m).map(|i| &rest[..i]))
}

fn count(shared: &Shared, key: &str) -> usize {
    let mut c = shared.counts.lock().unwrap();
    let n = c.entry(key.to_owned()).or_insert(0);
    *n += 1;
    *n
}

fn handle(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = read_request(&conn)?;
    let range = req
        .header("range")
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    shared
        .log
        .lock()
        .unwrap()
        .push(format!("{} {}{range}", req.method, req.path));
    let is_blob_get = |d: &str| req.method == "GET" && req.path.ends_with(&format!("/blobs/{d}"));
    let mut corrupt = false;
    let mut cut = None;
    match &shared.fault {
        Fault::Bearer { user, pass } => {
            if req.path.starts_with("/token") {
                let want = format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()));
                if req.header("authorization") == Some(want.as_str()) {
                    respond(
                        &conn,
                        200,
                        &[],
                        format!(r#"{{"token":"{TOKEN}"}}"#).as_bytes(),
                    );
                } else {
                    respond(
                        &conn,
                        401,
                        &[],
                        br#"{"details":"incorrect username or password"}"#,
                    );
                }
                return Ok(());
            }
            if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
                let scope = repo_of(&req.path)
                    .map(|r| format!(",scope=\"repository:{r}:pull\""))
                    .unwrap_or_default();
                let challenge = format!(
                    "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"berth-test\"{scope}",
                    shared.port
                );
                let body =
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
                respond(&conn, 401, &[("WWW-Authenticate", challenge)], body);
                return Ok(());
            }
        }
        Fault::Manifest {
            status,
            content_type,
            body,
        } if req.method == "GET" && req.path.contains("/manifests/") => {
            respond(
                &conn,
                *status,
                &[("Content-Type", content_type.clone())],
                body,
            );
            return Ok(());
        }
        Fault::Status { status, times }
            if repo_of(&req.path).is_some() && count(shared, "status") <= *times =>
        {
            let body =
                format!(r#"{{"errors":[{{"code":"TEST","message":"injected status {status}"}}]}}"#);
            let retry = [("Retry-After", "0".to_owned())];
            respond(&conn, *status, &retry, body.as_bytes());
            return Ok(());
        }
        Fault::CorruptBlob(d) if is_blob_get(d) => corrupt = true,
        Fault::DropBlob {
            digest,
            after,
            times,
        } if is_blob_get(digest) && count(shared, digest) <= *times => cut = Some(*after),
        _ => {}
    }
    let mut up = TcpStream::connect(("127.0.0.1", shared.upstream))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        let skip = ["connection", "keep-alive", "authorization"];
        if !skip.contains(&k.to_lowercase().as_str()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    let (resp_head, body) = raw.split_at_mut(split);
    let mut conn = conn;
    if corrupt && !body.is_empty() {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    conn.write_all(resp_head)?;
    match cut {
        Some(n) => {
            conn.write_all(&body[..n.min(body.len())])?;
            conn.flush()?;
            conn.shutdown(Shutdown::Both)?;
        }
        None => conn.write_all(body)?,
    }
    Ok(())
}
