//! kombu's message compression: the serialized body compressed, its method named by MIME type
//! in the `compression` header. kombu registers zlib (named `application/x-gzip`, though the
//! bytes are zlib's format), bzip2 and lzma (xz) by default; brotli and zstd only when their
//! Python packages are installed, so fastq refuses those by name instead of guessing.

use std::io::{Read, Write};

use crate::error::{CodecError, Result};
use crate::value::Value;

/// The header naming the compression of a task body.
pub const HEADER: &str = "compression";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Bzip2,
    Lzma,
}

/// kombu's names for each method (aliases first, the MIME type last), as its `register` calls.
const NAMES: [(Compression, &[&str]); 3] = [
    (Compression::Zlib, &["zlib", "gzip", "application/x-gzip"]),
    (Compression::Bzip2, &["bzip2", "bzip", "application/x-bz2"]),
    (Compression::Lzma, &["lzma", "xz", "application/x-lzma"]),
];

impl Compression {
    /// The method `name` (an alias such as `zlib`, or its MIME type) stands for.
    pub fn from_name(name: &str) -> Result<Self> {
        NAMES
            .iter()
            .find(|(_, names)| names.contains(&name))
            .map(|(method, _)| *method)
            .ok_or_else(|| {
                CodecError::invalid(format!(
                    "unknown compression {name:?}: fastq compresses and decompresses zlib \
                     (also called gzip, application/x-gzip), bzip2 (application/x-bz2) and \
                     lzma (xz, application/x-lzma), the methods kombu registers by default"
                ))
            })
    }

    /// The MIME type written in the `compression` header.
    pub fn content_type(self) -> &'static str {
        let (_, names) = NAMES
            .iter()
            .find(|(m, _)| *m == self)
            .expect("every method");
        names[names.len() - 1]
    }

    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: std::io::Error| {
            CodecError::encode(self.content_type(), format!("cannot compress: {e}"))
        };
        match self {
            Compression::Zlib => {
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
                z.write_all(data).map_err(failed)?;
                z.finish().map_err(failed)
            }
            Compression::Bzip2 => {
                let mut z = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                z.write_all(data).map_err(failed)?;
                z.finish().map_err(failed)
            }
            Compression::Lzma => {
                let mut out = Vec::new();
                // Python's lzma.compress default: the xz container with a CRC64 check.
                let options = lzma_rust2::XzOptions::with_preset(6);
                let mut z = lzma_rust2::XzWriter::new(&mut out, options).map_err(failed)?;
                z.write_all(data).map_err(failed)?;
                z.finish().map_err(failed)?;
                Ok(out)
            }
        }
    }

    pub fn decompress(self, data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let read = match self {
            Compression::Zlib => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
            Compression::Bzip2 => bzip2::read::BzDecoder::new(data).read_to_end(&mut out),
            Compression::Lzma => lzma_rust2::XzReader::new(data, true).read_to_end(&mut out),
        };
        read.map_err(|e| {
            CodecError::decode(
                self.content_type(),
                format!("the body is not valid compressed data: {e}"),
            )
        })?;
        Ok(out)
    }
}

/// The method a `compression` header names; None when there is none (or it is null).
pub fn named_by(header: Option<&Value>) -> Result<Option<Compression>> {
    match header {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(name)) => Compression::from_name(name).map(Some),
        Some(other) => Err(CodecError::invalid(format!(
            "the compression header must be a string, got {other:?}"
        ))),
    }
}

/// `body` as the serializer wrote it: decompressed when the headers name a compression.
pub fn decompressed<'a>(headers: &Value, body: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
    Ok(match named_by(headers.get(HEADER))? {
        Some(method) => std::borrow::Cow::Owned(method.decompress(body)?),
        None => std::borrow::Cow::Borrowed(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_round_trips_under_each_of_its_names() {
        let data = br#"[[2, 3], {}, {"callbacks": null}]"#.repeat(20);
        for (method, names) in NAMES {
            for name in names {
                assert_eq!(Compression::from_name(name).unwrap(), method);
            }
            let packed = method.compress(&data).unwrap();
            assert!(packed.len() < data.len(), "{method:?} did not compress");
            assert_eq!(method.decompress(&packed).unwrap(), data);
        }
    }

    #[test]
    fn zlib_is_python_zlib_format() {
        // zlib.compress(b"hello") in Python: kombu's `application/x-gzip`.
        let python = b"x\x9c\xcbH\xcd\xc9\xc9\x07\x00\x06,\x02\x15";
        assert_eq!(Compression::Zlib.decompress(python).unwrap(), b"hello");
    }

    #[test]
    fn unknown_and_corrupt_are_named() {
        let err = Compression::from_name("application/zstd").unwrap_err();
        assert!(err.to_string().contains("application/zstd"), "{err}");
        let err = Compression::Bzip2.decompress(b"not bzip2").unwrap_err();
        assert!(err.to_string().contains("application/x-bz2"), "{err}");
    }

    #[test]
    fn headers_without_compression_leave_the_body() {
        let headers = Value::map_from([("task", Value::from("t"))]);
        assert!(matches!(
            decompressed(&headers, b"{}").unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
