//! Authentication: credentials, the `WWW-Authenticate` challenge a
//! registry answers with, and the token response of a bearer realm.

use base64::Engine as _;
use serde::Deserialize;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value of HTTP basic auth.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", self.encoded())
    }

    /// `base64(user:password)`, as Docker's config files store it.
    pub fn encoded(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }

    /// Decodes Docker's `auth` field.
    pub fn decode(auth: &str) -> Option<Credentials> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some(Credentials {
            username: user.to_owned(),
            password: pass.to_owned(),
        })
    }
}

/// What a registry asks for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` header value. Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `key=value, key="quoted \"value\""` pairs.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.push((key, value));
    }
}

/// The answer of a bearer token realm.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// The bearer token in a token server's answer (`token`, else
/// `access_token`, as Docker's distribution spec allows).
pub fn parse_token(what: &str, body: &[u8]) -> Result<String, crate::RegistryError> {
    let answer: TokenResponse =
        serde_json::from_slice(body).map_err(|error| crate::RegistryError::InvalidJson {
            what: what.to_string(),
            error,
        })?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or(crate::RegistryError::Protocol {
            what: what.to_string(),
            detail: "the answer holds no token".into(),
        })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://x/t, error="insufficient_scope""#),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn credentials_round_trip() {
        let c = Credentials {
            username: "alice".into(),
            password: "p:ss".into(),
        };
        assert_eq!(Credentials::decode(&c.encoded()), Some(c.clone()));
        assert_eq!(c.basic_header(), "Basic YWxpY2U6cDpzcw==");
        assert!(!format!("{c:?}").contains("p:ss"));
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
