//! One registry connection: the scheme chosen by the transport policy
//! ([`crate::transport`]), the authentication flow (anonymous, basic,
//! bearer tokens per scope) and the mapping of HTTP answers to
//! [`RegistryError`]s. Shared by reference between the worker threads of a
//! pull or push.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{Response, StatusCode};
use ureq::{Agent, SendBody};

use crate::auth::{parse_challenge, query_escape, Challenge, Credentials};
use crate::authfile::{normalize_registry, DOCKER_HUB};
use crate::transport::{agent, is_loopback, ClientOptions};
use crate::RegistryError;

/// The request body of [`Client::request`].
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A reader of exactly this many bytes (sent once: never retried).
    Reader(&'a mut dyn Read, u64),
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    header: Option<String>,
    /// Scopes of the current bearer token.
    scopes: BTreeSet<String>,
}

/// A connection to one registry, authenticated lazily.
pub struct Client {
    registry: String,
    base: String,
    agent: Agent,
    credentials: Option<Credentials>,
    retries: u32,
    auth: Mutex<AuthState>,
}

fn transport(what: &str, e: ureq::Error) -> RegistryError {
    let detail = match e {
        ureq::Error::Io(e) => e.to_string(),
        e => e.to_string(),
    };
    RegistryError::Transport {
        what: what.to_owned(),
        detail,
    }
}

impl Client {
    /// Connects to `registry` (as in a reference: `docker.io`,
    /// `127.0.0.1:5000`): tries the schemes the options allow and reads the
    /// authentication challenge of `/v2/`.
    pub fn connect(
        registry: &str,
        credentials: Option<Credentials>,
        options: &ClientOptions,
    ) -> Result<Client, RegistryError> {
        let registry = normalize_registry(registry);
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io".to_owned()
        } else {
            registry.clone()
        };
        let insecure = options.tls_verify == Some(false)
            || (options.tls_verify.is_none()
                && (is_loopback(&registry) || options.insecure.contains(&registry)));
        let modes: &[(&str, bool)] = if insecure {
            &[("https", false), ("http", false)]
        } else {
            &[("https", true)]
        };
        let mut failures = Vec::new();
        for (scheme, verify) in modes {
            let client = Client {
                registry: registry.clone(),
                base: format!("{scheme}://{host}"),
                agent: agent(&registry, *verify, options),
                credentials: credentials.clone(),
                retries: options.retries,
                auth: Mutex::new(AuthState::default()),
            };
            match client.ping() {
                Ok(()) => return Ok(client),
                Err(RegistryError::Transport { detail, .. }) => {
                    failures.push(format!("{scheme}: {detail}"))
                }
                Err(e) => return Err(e),
            }
        }
        let mut detail = failures.join("; ");
        if !insecure && detail.contains("certificate") {
            detail
                .push_str(" (for a registry without a trusted certificate use --tls-verify=false)");
        }
        Err(RegistryError::Unreachable { registry, detail })
    }

    /// The registry's name as in references (`docker.io`, `host:port`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Retries of a transient failure before giving up.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// The scheme and host requests go to, e.g. `http://127.0.0.1:5000`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /v2/`: reachability and the authentication challenge.
    fn ping(&self) -> Result<(), RegistryError> {
        let what = format!("registry {}", self.registry);
        let url = format!("{}/v2/", self.base);
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| transport(&what, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = challenge_of(&resp);
            let mut st = self.lock();
            if let (Some(Challenge::Basic), Some(c)) = (&challenge, &self.credentials) {
                st.header = Some(c.basic_header());
            }
            st.challenge = challenge;
            return Ok(());
        }
        check(resp, &what).map(|_| ())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Verifies the credentials: basic auth on `/v2/`, or a token from the
    /// bearer realm. A registry that needs no authentication accepts any.
    pub fn login(&self) -> Result<(), RegistryError> {
        let challenge = self.lock().challenge.clone();
        match challenge {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let url = format!("{}/v2/", self.base);
                let resp = self.request("GET", &url, &[], Body::Empty, "login")?;
                check(resp, &format!("registry {}", self.registry)).map(|_| ())
            }
            Some(Challenge::Bearer { realm, service, .. }) => self
                .fetch_token(&realm, service.as_deref(), &BTreeSet::new())
                .map(|_| ()),
        }
    }

    /// Sends one request with the current authorization; on a 401 it
    /// authenticates as the challenge asks (once) and sends it again if the
    /// body can be sent again. The answer is returned whatever its status.
    pub(crate) fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        mut body: Body<'_>,
        what: &str,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        self.ensure_token()?;
        let mut reauthed = false;
        loop {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(h) = self.lock().header.clone() {
                req = req.header("Authorization", h);
            }
            let bad = |e: ureq::http::Error| RegistryError::Protocol {
                what: what.to_owned(),
                detail: format!("bad request: {e}"),
            };
            let sent = match &mut body {
                Body::Empty => {
                    if matches!(method, "PUT" | "POST" | "PATCH") {
                        req = req.header("Content-Length", "0");
                    }
                    self.agent.run(req.body(SendBody::none()).map_err(bad)?)
                }
                Body::Bytes(b) => {
                    req = req.header("Content-Length", b.len().to_string());
                    self.agent.run(req.body(*b).map_err(bad)?)
                }
                Body::Reader(r, len) => {
                    req = req.header("Content-Length", len.to_string());
                    self.agent
                        .run(req.body(SendBody::from_reader(&mut **r)).map_err(bad)?)
                }
            };
            let resp = sent.map_err(|e| transport(what, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || reauthed || !replayable(&body) {
                return Ok(resp);
            }
            reauthed = true;
            let challenge = challenge_of(&resp).or_else(|| self.lock().challenge.clone());
            self.authenticate(challenge, what)?;
        }
    }

    /// [`request`](Self::request) for GET and HEAD, retried with back-off
    /// on transient failures; error statuses become errors.
    pub(crate) fn get(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut attempt = 0;
        loop {
            let result = self
                .request(method, url, headers, Body::Empty, what)
                .and_then(|r| check(r, what));
            match result {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                other => return other,
            }
        }
    }

    /// Adds a scope (`repository:NAME:pull,push`) to the bearer token
    /// requested from now on.
    pub fn add_scope(&self, scope: &str) {
        let mut st = self.lock();
        if st.scopes.insert(scope.to_owned())
            && matches!(st.challenge, Some(Challenge::Bearer { .. }))
        {
            st.header = None;
        }
    }

    /// Fetches a bearer token before the first request when the ping
    /// asked for one, so that requests with bodies are not answered 401.
    fn ensure_token(&self) -> Result<(), RegistryError> {
        let (challenge, scopes) = {
            let st = self.lock();
            if st.header.is_some() || st.scopes.is_empty() {
                return Ok(());
            }
            (st.challenge.clone(), st.scopes.clone())
        };
        if let Some(Challenge::Bearer { realm, service, .. }) = challenge {
            let token = self.fetch_token(&realm, service.as_deref(), &scopes)?;
            self.lock().header = Some(format!("Bearer {token}"));
        }
        Ok(())
    }

    fn authenticate(&self, challenge: Option<Challenge>, what: &str) -> Result<(), RegistryError> {
        let unauthorized = || RegistryError::Unauthorized {
            detail: match &self.credentials {
                Some(c) => format!(
                    "{what}: {} rejected the credentials of user {:?}",
                    self.registry, c.username
                ),
                None => format!(
                    "{what}: authentication required (log in with: berth login {})",
                    self.registry
                ),
            },
        };
        match challenge {
            Some(Challenge::Basic) => {
                let c = self.credentials.as_ref().ok_or_else(unauthorized)?;
                let mut st = self.lock();
                let header = c.basic_header();
                if st.header.as_deref() == Some(header.as_str()) {
                    return Err(unauthorized());
                }
                st.header = Some(header);
                st.challenge = Some(Challenge::Basic);
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scopes = {
                    let mut st = self.lock();
                    st.scopes.extend(scope);
                    st.challenge = Some(Challenge::Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                        scope: None,
                    });
                    st.scopes.clone()
                };
                let token = self.fetch_token(&realm, service.as_deref(), &scopes)?;
                let header = format!("Bearer {token}");
                let mut st = self.lock();
                if st.header.as_deref() == Some(header.as_str()) {
                    return Err(unauthorized());
                }
                st.header = Some(header);
                Ok(())
            }
            None => Err(unauthorized()),
        }
    }

    /// `GET realm?service=..&scope=..` with the credentials, if any.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<String>,
    ) -> Result<String, RegistryError> {
        let what = format!("token from {realm}");
        let mut query: Vec<String> = service
            .map(|s| format!("service={}", query_escape(s)))
            .into_iter()
            .collect();
        query.extend(scopes.iter().map(|s| format!("scope={}", query_escape(s))));
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{}", query.join("&"));
        let mut req = self.agent.get(&url);
        if let Some(c) = &self.credentials {
            req = req.header("Authorization", c.basic_header());
        }
        let mut resp = req.call().map_err(|e| transport(&what, e))?;
        if matches!(resp.status().as_u16(), 401 | 403) {
            return Err(RegistryError::Unauthorized {
                detail: match &self.credentials {
                    Some(c) => format!(
                        "{} rejected the credentials of user {:?} (incorrect username or password)",
                        self.registry, c.username
                    ),
                    None => format!(
                        "{} requires authentication (log in with: berth login {})",
                        self.registry, self.registry
                    ),
                },
            });
        }
        resp = check(resp, &what)?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| transport(&what, e))?;
        crate::auth::parse_token(&what, &body)
    }
}

/// Whether a request body can be sent a second time.
fn replayable(body: &Body<'_>) -> bool {
    !matches!(body, Body::Reader(..))
}

/// The preferred challenge of a 401 answer (Bearer over Basic).
fn challenge_of(resp: &Response<ureq::Body>) -> Option<Challenge> {
    let all: Vec<Challenge> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        .collect();
    all.iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or(all.first())
        .cloned()
}

/// Back-off before retry `attempt` (1-based): 250 ms doubling, at most 4 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.saturating_sub(1).min(4))
}

/// A header as text.
pub(crate) fn header<'r>(resp: &'r Response<ureq::Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Turns an error status into the error it means, with the registry's own
/// message (`{"errors":[{"message":..}]}`) where it gives one.
pub(crate) fn check(
    mut resp: Response<ureq::Body>,
    what: &str,
) -> Result<Response<ureq::Body>, RegistryError> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(resp);
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    let message = error_message(&body);
    let what = what.to_owned();
    Err(match status {
        401 => RegistryError::Unauthorized {
            detail: format!("{what}: authentication required{message}"),
        },
        403 => RegistryError::Denied { what, message },
        404 => RegistryError::NotFound { what, message },
        429 => RegistryError::RateLimited { what, message },
        status => RegistryError::Status {
            what,
            status,
            message,
        },
    })
}

/// `": <message>"` from a registry error body, or from a short text body.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = e.errors.first() {
            let m = if first.message.is_empty() {
                &first.code
            } else {
                &first.message
            };
            return format!(": {}", m.to_lowercase());
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(l) if l.len() <= 200 && !l.starts_with('<') => format!(": {l}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            error_message(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            ": manifest unknown"
        );
        assert_eq!(error_message(b"<html>x</html>"), "");
        assert_eq!(error_message(b"slow down\n"), ": slow down");
    }
}
