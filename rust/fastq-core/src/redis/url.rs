//! Broker URLs: as Celery users write them (kombu's schemes, redis-py's `ssl_*` options) turned
//! into what the `redis` crate reads, and as they may appear in messages: never with the password.

const HIDDEN: &str = "***";

/// TLS settings given as redis-py/Celery query options (`rediss://host?ssl_cert_reqs=required`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ssl_ca_certs`: a PEM file of CAs to trust instead of the system's.
    pub ca_certs: Option<String>,
    /// `ssl_certfile` and `ssl_keyfile`: a client certificate, for mutual TLS.
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    /// `ssl_cert_reqs=none` (or `CERT_NONE`): do not verify the server. Never the default.
    pub insecure: bool,
}

/// Rewrites a kombu-style URL for the `redis` crate: `socket://` and `redis+socket://` become
/// `redis+unix://`, an empty host becomes `localhost` (kombu's default), and the `ssl_*` query
/// options move into [`TlsOptions`] (`ssl_cert_reqs=none` becomes the crate's `#insecure`).
pub fn client_url(url: &str) -> (String, TlsOptions) {
    let url = match url.split_once("://") {
        Some(("socket" | "redis+socket", rest)) => format!("redis+unix://{rest}"),
        _ => url.to_owned(),
    };
    let (url, fragment) = match url.split_once('#') {
        Some((u, f)) => (u.to_owned(), Some(f.to_owned())),
        None => (url, None),
    };
    let authority_start = url
        .rfind('@')
        .map_or_else(|| url.find("://").map_or(0, |i| i + 3), |i| i + 1);
    let (base, query) = match url[authority_start..].find('?') {
        Some(q) => url.split_at(authority_start + q),
        None => (url.as_str(), ""),
    };
    let mut tls = TlsOptions::default();
    let mut kept = Vec::new();
    for param in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        match name {
            "ssl_ca_certs" => tls.ca_certs = Some(value.to_owned()),
            "ssl_certfile" => tls.certfile = Some(value.to_owned()),
            "ssl_keyfile" => tls.keyfile = Some(value.to_owned()),
            "ssl_cert_reqs" => {
                tls.insecure = value.eq_ignore_ascii_case("none") || value == "CERT_NONE"
            }
            _ => kept.push(param),
        }
    }
    let mut out = base.to_owned();
    let is_tcp = out.starts_with("redis://") || out.starts_with("rediss://");
    let host_empty = out[authority_start..].starts_with('/') || out.len() == authority_start;
    if is_tcp && host_empty {
        out.insert_str(authority_start, "localhost");
    }
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    match fragment {
        Some(f) => out.push_str(&format!("#{f}")),
        None if tls.insecure && out.starts_with("rediss://") => out.push_str("#insecure"),
        None => {}
    }
    (out, tls)
}

/// `redis://:secret@host:6379/0` → `redis://:***@host:6379/0`.
///
/// The user part ends at the *last* `@`, because passwords are often written unencoded and may
/// contain `/`, `?` or `@`; a user part without `:` is hidden whole, since some clients read a
/// lone user as the password. A `password=` query parameter is hidden too.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return redact_query(url);
    };
    let (head, rest) = url.split_at(scheme_end);
    let Some(at) = rest.rfind('@') else {
        return format!("{head}{}", redact_query(rest));
    };
    let (userinfo, host_and_path) = rest.split_at(at);
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{HIDDEN}"),
        None if userinfo.is_empty() => String::new(),
        None => HIDDEN.to_owned(),
    };
    format!("{head}{user}{}", redact_query(host_and_path))
}

fn redact_query(text: &str) -> String {
    let Some(q) = text.find('?') else {
        return text.to_owned();
    };
    let (path, query) = text.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                format!("{name}={HIDDEN}")
            }
            _ => param.to_owned(),
        })
        .collect();
    format!("{path}{}", params.join("&"))
}

/// Removes `password` from a message (an error text from the client library may quote it).
/// Very short passwords are left alone: replacing every `a` in a message would hide nothing
/// and garble the rest.
pub fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if p.len() >= 4 => text.replace(p, HIDDEN),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_urls_become_client_urls() {
        let plain = |u: &str| client_url(u).0;
        assert_eq!(plain("redis://"), "redis://localhost");
        assert_eq!(plain("redis:///15"), "redis://localhost/15");
        assert_eq!(plain("redis://:pw@/2"), "redis://:pw@localhost/2");
        assert_eq!(plain("redis://h:1/3"), "redis://h:1/3");
        assert_eq!(
            plain("socket:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(
            plain("redis+socket:///r.sock?db=2"),
            "redis+unix:///r.sock?db=2"
        );
    }

    #[test]
    fn ssl_options_are_taken_out_of_the_query() {
        let (url, tls) =
            client_url("rediss://:p?w@h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem&x=1");
        assert_eq!(url, "rediss://:p?w@h:6380/0?x=1");
        assert_eq!(tls.ca_certs.as_deref(), Some("/ca.pem"));
        assert!(!tls.insecure);
        let (url, tls) = client_url("rediss://h/0?ssl_cert_reqs=CERT_NONE");
        assert_eq!(url, "rediss://h/0#insecure");
        assert!(tls.insecure);
        let (_, tls) = client_url("rediss://h?ssl_certfile=/c.pem&ssl_keyfile=/k.pem");
        assert_eq!(
            (tls.certfile.as_deref(), tls.keyfile.as_deref()),
            (Some("/c.pem"), Some("/k.pem"))
        );
    }

    #[test]
    fn password_is_hidden() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/15"),
            "redis://:***@host:6379/15"
        );
        assert_eq!(
            redact_url("rediss://user:pw@example.com/0"),
            "rediss://user:***@example.com/0"
        );
        assert_eq!(redact_url("redis://lonely@host"), "redis://***@host");
    }

    #[test]
    fn passwords_with_separators_are_hidden_whole() {
        assert_eq!(
            redact_url("redis://:pa/ss@w?rd@host/1"),
            "redis://:***@host/1"
        );
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "redis://127.0.0.1:6379/15",
            "redis://",
            "unix:///tmp/redis.sock",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn password_query_parameter_is_hidden() {
        assert_eq!(
            redact_url("redis+unix:///run/r.sock?db=2&password=hunter2"),
            "redis+unix:///run/r.sock?db=2&password=***"
        );
    }

    #[test]
    fn scrub_removes_the_password_from_messages() {
        assert_eq!(
            scrub("auth failed for hunter2", Some("hunter2")),
            "auth failed for ***"
        );
        assert_eq!(scrub("a b a", Some("a")), "a b a");
        assert_eq!(scrub("x", None), "x");
    }
}
