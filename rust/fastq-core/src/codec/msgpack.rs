//! msgpack as kombu writes it (`use_bin_type=True`, `raw=False`): str and bin are distinct.
//!
//! Read and written directly between bytes and `Value`: the format is small, and owning it lets
//! the decoder refuse what msgpack-python refuses (the reserved marker 0xc1, extension types,
//! unhashable keys) and bound nesting to the JSON codec's `MAX_DEPTH`.

use super::MAX_DEPTH;
use crate::error::{CodecError, Result};
use crate::value::Value;

pub fn decode(data: &[u8]) -> Result<Value> {
    let mut reader = Reader { data, pos: 0 };
    let value = reader.value(0)?;
    let rest = data.len() - reader.pos;
    if rest != 0 {
        return Err(error(format!("{rest} bytes after the end of the value")));
    }
    Ok(value)
}

pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value, 0)?;
    Ok(out)
}

/// Encodes the protocol 2 body `[args, kwargs, embed]` without building it as one `Value`.
pub fn encode_task_body(
    args: &[Value],
    kwargs: &[(Value, Value)],
    embed: &[(Value, Value)],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(0x93);
    write_list(&mut out, args, 1)?;
    write_map(&mut out, kwargs, 1)?;
    write_map(&mut out, embed, 1)?;
    Ok(out)
}

fn error(reason: impl ToString) -> CodecError {
    CodecError::decode(super::MSGPACK, reason)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                error(format!(
                    "truncated: {n} more bytes needed at offset {}, {} left",
                    self.pos,
                    self.data.len() - self.pos
                ))
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian length of 1, 2 or 4 bytes (`width` 0, 1 or 2, as the markers count them).
    fn len(&mut self, width: u8) -> Result<usize> {
        Ok(match width {
            0 => usize::from(self.byte()?),
            1 => usize::from(u16::from_be_bytes(self.array()?)),
            _ => usize::try_from(u32::from_be_bytes(self.array()?)).map_err(error)?,
        })
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Value::Int(i64::from(marker)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.list(usize::from(marker & 0x0f), depth)?,
            0xa0..=0xbf => self.text(usize::from(marker & 0x1f))?,
            0xc0 => Value::Null,
            0xc1 => return Err(error("0xc1 is a reserved marker, not a msgpack value")),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = self.len(marker - 0xc4)?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            0xc7..=0xc9 => {
                let len = self.len(marker - 0xc7)?;
                return Err(self.extension(len)?);
            }
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.array()?)),
            0xcc => Value::Int(i64::from(self.byte()?)),
            0xcd => Value::Int(i64::from(u16::from_be_bytes(self.array()?))),
            0xce => Value::Int(i64::from(u32::from_be_bytes(self.array()?))),
            0xcf => {
                let u = u64::from_be_bytes(self.array()?);
                i64::try_from(u).map_or(Value::UInt(u), Value::Int)
            }
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
            0xd4..=0xd8 => return Err(self.extension(1 << (marker - 0xd4))?),
            0xd9..=0xdb => {
                let len = self.len(marker - 0xd9)?;
                self.text(len)?
            }
            0xdc | 0xdd => {
                let len = self.len(marker - 0xdc + 1)?;
                self.list(len, depth)?
            }
            0xde | 0xdf => {
                let len = self.len(marker - 0xde + 1)?;
                self.map(len, depth)?
            }
            0xe0..=0xff => Value::Int(i64::from(marker as i8)),
        })
    }

    fn text(&mut self, len: usize) -> Result<Value> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Value::Str(text.to_owned())),
            Err(e) => Err(error(format!("str field is not valid UTF-8: {e}"))),
        }
    }

    /// The error for an extension value (msgpack-python's Timestamp, custom types).
    fn extension(&mut self, len: usize) -> Result<CodecError> {
        let code = self.byte()? as i8;
        self.take(len)?;
        Ok(error(format!(
            "msgpack extension type {code} is not supported"
        )))
    }

    fn list(&mut self, len: usize, depth: usize) -> Result<Value> {
        let depth = self.enter(depth)?;
        // Every item takes at least one byte: a huge declared length cannot reserve memory.
        let mut items = Vec::with_capacity(len.min(self.data.len() - self.pos));
        for _ in 0..len {
            items.push(self.value(depth)?);
        }
        Ok(Value::List(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value> {
        let depth = self.enter(depth)?;
        let mut entries = Vec::with_capacity(len.min((self.data.len() - self.pos) / 2));
        for _ in 0..len {
            let key = self.value(depth)?;
            if matches!(key, Value::List(_) | Value::Map(_)) {
                // Python needs hashable keys.
                return Err(error(format!(
                    "a map key must be a string, number, bool, nil or bytes, got a {}",
                    key.type_name()
                )));
            }
            entries.push((key, self.value(depth)?));
        }
        Ok(Value::Map(entries))
    }

    fn enter(&self, depth: usize) -> Result<usize> {
        if depth >= MAX_DEPTH {
            return Err(error(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(depth + 1)
    }
}

/// The depth inside one more container, or an error past what `decode` reads back.
fn enter(depth: usize) -> Result<usize> {
    if depth >= MAX_DEPTH {
        return Err(CodecError::encode(
            "msgpack",
            format!(
                "value nested deeper than {MAX_DEPTH} levels (the message body counts); \
                 fastq's decoder stops there, so flatten it"
            ),
        ));
    }
    Ok(depth + 1)
}

fn write(out: &mut Vec<u8>, v: &Value, depth: usize) -> Result<()> {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => {
            write_len(out, s.len(), &STR)?;
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            write_len(out, b.len(), &BIN)?;
            out.extend_from_slice(b);
        }
        Value::List(items) => write_list(out, items, depth)?,
        Value::Map(entries) => write_map(out, entries, depth)?,
        other => {
            return Err(CodecError::encode(
                "msgpack",
                format!(
                    "a {} has no msgpack form (kombu's msgpack cannot carry it either); \
                     send it as a string or use the json serializer",
                    other.type_name()
                ),
            ))
        }
    }
    Ok(())
}

fn write_list(out: &mut Vec<u8>, items: &[Value], depth: usize) -> Result<()> {
    let depth = enter(depth)?;
    write_len(out, items.len(), &ARRAY)?;
    for item in items {
        write(out, item, depth)?;
    }
    Ok(())
}

fn write_map(out: &mut Vec<u8>, entries: &[(Value, Value)], depth: usize) -> Result<()> {
    let depth = enter(depth)?;
    write_len(out, entries.len(), &MAP)?;
    for (k, v) in entries {
        write(out, k, depth)?;
        write(out, v, depth)?;
    }
    Ok(())
}

/// A length header's markers: the fix form (`marker | len`, up to its maximum), 8, 16 and 32 bits.
struct LenMarkers {
    fix: Option<(u8, usize)>,
    m8: Option<u8>,
    m16: u8,
    m32: u8,
}

const STR: LenMarkers = LenMarkers {
    fix: Some((0xa0, 31)),
    m8: Some(0xd9),
    m16: 0xda,
    m32: 0xdb,
};
const BIN: LenMarkers = LenMarkers {
    fix: None,
    m8: Some(0xc4),
    m16: 0xc5,
    m32: 0xc6,
};
const ARRAY: LenMarkers = LenMarkers {
    fix: Some((0x90, 15)),
    m8: None,
    m16: 0xdc,
    m32: 0xdd,
};
const MAP: LenMarkers = LenMarkers {
    fix: Some((0x80, 15)),
    m8: None,
    m16: 0xde,
    m32: 0xdf,
};

fn write_len(out: &mut Vec<u8>, len: usize, markers: &LenMarkers) -> Result<()> {
    match (markers.fix, markers.m8) {
        (Some((fix, max)), _) if len <= max => out.push(fix | len as u8),
        (_, Some(m8)) if len <= 0xff => out.extend_from_slice(&[m8, len as u8]),
        _ if len <= 0xffff => {
            out.push(markers.m16);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            let len = u32::try_from(len).map_err(|_| {
                CodecError::encode("msgpack", "a value longer than 4 GiB has no msgpack form")
            })?;
            out.push(markers.m32);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}

/// The smallest encoding, as msgpack-python writes it.
fn write_int(out: &mut Vec<u8>, i: i64) {
    match i {
        0..=0x7f => out.push(i as u8),
        -32..=-1 => out.push(i as i8 as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, i as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(i as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(i as u32).to_be_bytes());
        }
        0x1_0000_0000.. => {
            out.push(0xcf);
            out.extend_from_slice(&(i as u64).to_be_bytes());
        }
        -0x80..=-33 => out.extend_from_slice(&[0xd0, i as i8 as u8]),
        -0x8000..=-0x81 => {
            out.push(0xd1);
            out.extend_from_slice(&(i as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            out.push(0xd2);
            out.extend_from_slice(&(i as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_bytes_and_int_keys() {
        let v = Value::List(vec![
            Value::Bytes(vec![0, 255]),
            Value::Str("s".into()),
            Value::Map(vec![(Value::Int(1), Value::Float(2.5))]),
            Value::UInt(u64::MAX),
            Value::Int(i64::MIN),
        ]);
        assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn every_length_form_roundtrips_with_its_marker() {
        for (len, str_marker, bin_marker, list_marker) in [
            (0, 0xa0, 0xc4, 0x90),
            (15, 0xaf, 0xc4, 0x9f),
            (16, 0xb0, 0xc4, 0xdc),
            (31, 0xbf, 0xc4, 0xdc),
            (32, 0xd9, 0xc4, 0xdc),
            (255, 0xd9, 0xc4, 0xdc),
            (256, 0xda, 0xc5, 0xdc),
            (65_535, 0xda, 0xc5, 0xdc),
            (65_536, 0xdb, 0xc6, 0xdd),
        ] {
            let text = Value::Str("x".repeat(len));
            let bytes = Value::Bytes(vec![7; len]);
            let list = Value::List(vec![Value::Null; len]);
            let map = Value::Map(
                (0..len as i64)
                    .map(|i| (Value::Int(i), Value::Null))
                    .collect(),
            );
            for (v, marker) in [(text, str_marker), (bytes, bin_marker), (list, list_marker)] {
                let encoded = encode(&v).unwrap();
                assert_eq!(encoded[0], marker, "{len} {}", v.type_name());
                assert_eq!(decode(&encoded).unwrap(), v);
            }
            assert_eq!(decode(&encode(&map).unwrap()).unwrap(), map);
        }
    }

    #[test]
    fn integers_use_the_smallest_form_and_roundtrip() {
        for (i, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (255, 2),
            (256, 3),
            (65_535, 3),
            (65_536, 5),
            (u32::MAX as i64, 5),
            (u32::MAX as i64 + 1, 9),
            (i64::MAX, 9),
            (-1, 1),
            (-32, 1),
            (-33, 2),
            (-128, 2),
            (-129, 3),
            (-32_768, 3),
            (-32_769, 5),
            (i32::MIN as i64, 5),
            (i32::MIN as i64 - 1, 9),
            (i64::MIN, 9),
        ] {
            let encoded = encode(&Value::Int(i)).unwrap();
            assert_eq!(encoded.len(), len, "{i}");
            assert_eq!(decode(&encoded).unwrap(), Value::Int(i));
        }
        assert_eq!(
            decode(&encode(&Value::UInt(u64::MAX)).unwrap()).unwrap(),
            Value::UInt(u64::MAX)
        );
        // float 32 from other encoders
        assert_eq!(
            decode(&[0xca, 0x3f, 0xc0, 0, 0]).unwrap(),
            Value::Float(1.5)
        );
    }

    #[test]
    fn reserved_marker_and_extensions_are_refused() {
        assert!(decode(&[0xc1]).unwrap_err().to_string().contains("0xc1"));
        assert!(decode(&[0x91, 0xc1]).is_err());
        // fixext 1 of type 5, ext 8 of type -1 (msgpack-python's Timestamp)
        for data in [&[0xd4, 5, 0][..], &[0xc7, 4, 0xff, 0, 0, 0, 0]] {
            assert!(decode(data)
                .unwrap_err()
                .to_string()
                .contains("extension type"));
        }
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        for data in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0xc6, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode(data).unwrap_err().to_string().contains("truncated"));
        }
    }

    #[test]
    fn truncated_and_trailing_input_are_errors() {
        let bytes = encode(&Value::List(vec![Value::Int(1), Value::Int(2)])).unwrap();
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0xc0);
        assert!(decode(&extra).is_err());
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = vec![0x91u8; 100_000];
        assert!(decode(&deep).is_err());
    }

    fn nested(depth: usize, leaf: Value) -> Value {
        (0..depth).fold(leaf, |v, _| Value::List(vec![v]))
    }

    #[test]
    fn everything_encode_writes_decode_reads_back() {
        for leaf in [
            Value::Int(1),
            Value::Str("leaf".into()),
            Value::Bytes(vec![1]),
        ] {
            let deepest = nested(MAX_DEPTH, leaf);
            assert_eq!(decode(&encode(&deepest).unwrap()).unwrap(), deepest);
            let err = encode(&Value::List(vec![deepest])).unwrap_err();
            assert!(err.to_string().contains("nested deeper than 127"), "{err}");
        }
        let err = decode(&[0x91; 200]).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 127 levels"), "{err}");
    }

    #[test]
    fn unhashable_map_keys_are_refused() {
        // {[1]: 2} and {{}: 2}
        for data in [&[0x81, 0x91, 0x01, 0x02][..], &[0x81, 0x80, 0x02]] {
            let err = decode(data).unwrap_err().to_string();
            assert!(err.contains("map key"), "{err}");
        }
        let ok = decode(&[0x81, 0xc4, 0x01, b'k', 0x02]).unwrap();
        assert_eq!(
            ok,
            Value::Map(vec![(Value::Bytes(vec![b'k']), Value::Int(2))])
        );
    }

    #[test]
    fn task_body_is_the_three_item_list() {
        let body = encode_task_body(&[Value::Int(1)], &[], &[]).unwrap();
        assert_eq!(
            decode(&body).unwrap(),
            Value::List(vec![
                Value::List(vec![Value::Int(1)]),
                Value::Map(vec![]),
                Value::Map(vec![])
            ])
        );
    }

    #[test]
    fn datetimes_are_refused_with_a_reason() {
        let err = encode(&Value::DateTime("2024-01-01T00:00:00".into())).unwrap_err();
        assert!(err.to_string().contains("datetime"));
    }
}
