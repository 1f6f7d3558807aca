//! Transport policy: which schemes and certificates reach a registry.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Agent;

use crate::authfile::normalize_registry;

/// How to reach registries; see [`ClientOptions::from_env`].
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// `Some(true)`: verified HTTPS only, even for loopback. `Some(false)`:
    /// HTTPS without certificate checks, then plain HTTP. `None`: verified
    /// HTTPS, except loopback and [`insecure`](Self::insecure) registries,
    /// which are treated as `Some(false)`.
    pub tls_verify: Option<bool>,
    /// Registries (`host[:port]`) reached as with `tls_verify = Some(false)`.
    pub insecure: Vec<String>,
    /// Directories holding `<host[:port]>/*.crt` CA certificates to trust
    /// for that registry (Docker's `certs.d` layout).
    pub certs_dirs: Vec<PathBuf>,
    /// Retries of an idempotent request after a transient failure.
    pub retries: u32,
}

impl ClientOptions {
    /// Defaults plus the environment: `BERTH_INSECURE_REGISTRIES`
    /// (comma-separated), `BERTH_CERTS_DIR` (else `/etc/berth/certs.d`,
    /// `/etc/containers/certs.d`, `/etc/docker/certs.d`),
    /// `BERTH_REGISTRY_RETRIES` (default 4).
    pub fn from_env() -> ClientOptions {
        let insecure = std::env::var("BERTH_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(normalize_registry)
            .collect();
        let certs_dirs = match std::env::var_os("BERTH_CERTS_DIR") {
            Some(d) if !d.is_empty() => vec![PathBuf::from(d)],
            _ => [
                "/etc/berth/certs.d",
                "/etc/containers/certs.d",
                "/etc/docker/certs.d",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        };
        ClientOptions {
            tls_verify: None,
            insecure,
            certs_dirs,
            retries: std::env::var("BERTH_REGISTRY_RETRIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4),
        }
    }
}

/// Whether `registry` (`host[:port]`) is on the loopback interface.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut files: Vec<PathBuf> = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        files.extend(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/ca-bundle.pem",
                "/etc/pki/tls/cacert.pem",
                "/etc/ssl/cert.pem",
            ]
            .iter()
            .map(PathBuf::from),
        );
        files
            .iter()
            .find_map(|f| {
                let pem = std::fs::read(f).ok()?;
                let certs = pem_certs(&pem);
                (!certs.is_empty()).then_some(certs)
            })
            .unwrap_or_default()
    })
}

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// An HTTP agent for `registry`, verifying certificates or not.
pub(crate) fn agent(registry: &str, verify: bool, options: &ClientOptions) -> Agent {
    let mut roots: Vec<Certificate<'static>> = system_roots().to_vec();
    for dir in &options.certs_dirs {
        let Ok(rd) = std::fs::read_dir(dir.join(registry)) else {
            continue;
        };
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().is_some_and(|e| e == "crt" || e == "pem") {
                roots.extend(std::fs::read(&p).map(|b| pem_certs(&b)).unwrap_or_default());
            }
        }
    }
    let roots = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&roots)
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .disable_verification(!verify)
        .build();
    let mut config = Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .max_redirects(5)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(16);
    if is_loopback(registry) {
        config = config.proxy(None);
    }
    config.build().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
