//! TLS failures as the clients report them. rustls's errors reach fastq only as text (inside
//! redis-rs's and lapin's I/O errors), so both brokers recognize a failed handshake here.

/// Whether a client's error text says the TLS handshake failed: a rustls alert, a certificate
/// refused, or a plain server's answer to the TLS hello, which rustls calls a corrupt message.
pub fn is_handshake_failure(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    [
        "tls",
        "certificate",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
    ]
    .iter()
    .any(|needle| detail.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::is_handshake_failure;

    #[test]
    fn rustls_failures_are_recognized_whatever_their_case() {
        for detail in [
            "received corrupt message of type InvalidContentType",
            "invalid peer certificate: UnknownIssuer",
            "received fatal alert: HandshakeFailure",
            "TLS error",
        ] {
            assert!(is_handshake_failure(detail), "{detail}");
        }
        assert!(!is_handshake_failure("Connection refused (os error 111)"));
    }
}
