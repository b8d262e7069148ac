//! Celery's events over Redis as kombu sends them: a transient kombu envelope (the JSON body in
//! base64, header `hostname`) `PUBLISH`ed on the fanout channel `<prefix>/<db>.<exchange>/<routing
//! key>`. Built here as the whole RESP command, so a batch of task events (a few hundred kB of
//! JSON) is written to the socket as it is: no per-event work, no copy in a client library.

use std::io::Write as _;

use crate::codec::json;

/// The RESP `PUBLISH channel <envelope>` of an event message whose `body` is JSON, with kombu's
/// envelope fields in kombu's order and a fresh `delivery_tag`. Written into one buffer, the
/// body's base64 in place: a batch's body is megabytes at a high task rate.
pub fn publish_command(
    channel: &str,
    body: &[u8],
    hostname: &str,
    exchange: &str,
    routing_key: &str,
) -> Vec<u8> {
    let tail = envelope_tail(hostname, exchange, routing_key);
    let encoded = body.len().div_ceil(3) * 4;
    let length = BODY_START.len() + encoded + tail.len();
    let mut out = Vec::with_capacity(length + channel.len() + 48);
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    bulk(&mut out, channel.as_bytes());
    let _ = write!(out, "${length}\r\n");
    write_envelope(&mut out, body, &tail);
    out.extend_from_slice(b"\r\n");
    out
}

/// kombu's Redis message around a JSON `body`: `{"body": "<base64>", "content-encoding":
/// "utf-8", "content-type": "application/json", "headers": {"hostname": …}, "properties": {…}}`.
pub fn envelope(body: &[u8], hostname: &str, exchange: &str, routing_key: &str) -> Vec<u8> {
    let tail = envelope_tail(hostname, exchange, routing_key);
    let mut out = Vec::with_capacity(BODY_START.len() + body.len() * 4 / 3 + 4 + tail.len());
    write_envelope(&mut out, body, &tail);
    out
}

const BODY_START: &[u8] = b"{\"body\": \"";

fn write_envelope(out: &mut Vec<u8>, body: &[u8], tail: &[u8]) {
    out.extend_from_slice(BODY_START);
    // SIMD where the CPU has it (AVX2, NEON…), chosen at run time.
    base64_simd::STANDARD.encode_append(body, out);
    out.extend_from_slice(tail);
}

/// What follows the body's base64 in the envelope: its closing quote and the other fields.
fn envelope_tail(hostname: &str, exchange: &str, routing_key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    out.extend_from_slice(b"\", \"content-encoding\": \"utf-8\", \"content-type\": ");
    out.extend_from_slice(b"\"application/json\", \"headers\": {\"hostname\": ");
    json_str(&mut out, hostname);
    out.extend_from_slice(b"}, \"properties\": {\"delivery_mode\": 1, \"delivery_info\": ");
    out.extend_from_slice(b"{\"exchange\": ");
    json_str(&mut out, exchange);
    out.extend_from_slice(b", \"routing_key\": ");
    json_str(&mut out, routing_key);
    out.extend_from_slice(b"}, \"priority\": 0, \"body_encoding\": \"base64\", ");
    let _ = write!(
        out,
        "\"delivery_tag\": \"{}\"}}}}",
        uuid::Uuid::new_v4().hyphenated()
    );
    out
}

fn json_str(out: &mut Vec<u8>, text: &str) {
    json::to_writer(out, text).expect("a str always serializes");
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "${}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    /// Another implementation reads what `envelope` writes.
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    #[test]
    fn the_envelope_is_kombus_with_the_body_in_base64() {
        let raw = envelope(
            br#"[{"type":"task-started"}]"#,
            "w\"1@h",
            "celeryev",
            "task.multi",
        );
        let env: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let body = B64.decode(env["body"].as_str().unwrap()).unwrap();
        assert_eq!(body, br#"[{"type":"task-started"}]"#);
        assert_eq!(env["content-type"], "application/json");
        assert_eq!(env["content-encoding"], "utf-8");
        assert_eq!(env["headers"]["hostname"], "w\"1@h");
        let props = &env["properties"];
        assert_eq!(props["body_encoding"], "base64");
        assert_eq!(props["delivery_mode"], 1);
        assert_eq!(props["priority"], 0);
        assert_eq!(props["delivery_info"]["exchange"], "celeryev");
        assert_eq!(props["delivery_info"]["routing_key"], "task.multi");
        let tag = props["delivery_tag"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(tag).unwrap().get_version_num(), 4);
    }

    #[test]
    fn every_body_length_encodes_whole() {
        for n in (0..7).chain([31, 32, 33, 95, 96, 97, 4097]) {
            let body: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let env: serde_json::Value =
                serde_json::from_slice(&envelope(&body, "h", "e", "r")).unwrap();
            assert_eq!(B64.decode(env["body"].as_str().unwrap()).unwrap(), body);
        }
    }

    #[test]
    fn the_command_is_a_resp_publish() {
        let cmd = publish_command(
            "/0.celeryev/task.multi",
            b"[]",
            "h",
            "celeryev",
            "task.multi",
        );
        let text = String::from_utf8(cmd).unwrap();
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("*3"));
        assert_eq!(lines.next(), Some("$7"));
        assert_eq!(lines.next(), Some("PUBLISH"));
        assert_eq!(lines.next(), Some("$22"));
        assert_eq!(lines.next(), Some("/0.celeryev/task.multi"));
        let len: usize = lines.next().unwrap()[1..].parse().unwrap();
        let envelope = lines.next().unwrap();
        assert_eq!(envelope.len(), len);
        assert!(envelope.starts_with("{\"body\": \"W10=\""));
        assert_eq!(lines.next(), Some(""));
        assert_eq!(lines.next(), None);
    }
}
