//! A player file's bytes: a one-line header naming the file's encoding,
//! `format_version`, length and checksum, then the state in that encoding.
//!
//! ```text
//! CITADEL-PLAYER msgpack+lz4 format_version=7 length=7249 crc32=1a2b3c4d
//! <7249 bytes>
//! ```
//!
//! - Encodings: `json` (what [`PlayerState::to_json`] writes) and `msgpack`
//!   (MessagePack with named fields: self-describing like JSON, so a file
//!   of an older `format_version` decodes into a JSON tree and goes through
//!   the same migration chain), each optionally compressed with LZ4 (`+lz4`).
//! - `length` and `crc32` cover the bytes after the header as stored: a
//!   truncated, extended or bit-flipped file is an error, never a state.
//! - A file that starts with `{` is a player file from before headers
//!   (plain JSON); it keeps loading, without the checksum's protection.
//!
//! Decoding never panics and never allocates more than
//! [`STATE_BYTES_MAX`] for a state, whatever the bytes.

use std::fmt;
use std::str::FromStr;

use crate::state::{PlayerState, StateError, STATE_FORMAT_VERSION};

/// How a header line starts.
pub const MAGIC: &str = "CITADEL-PLAYER ";

/// The longest header line: the magic, the longest encoding name and three
/// numbers fit in well under this; a longer one is not a header.
const HEADER_BYTES_MAX: usize = 160;

/// The largest state a file may hold, decoded or decompressed: 200 times
/// the 50 KB of a big base. It bounds what a corrupted or hostile length
/// makes the decoder allocate.
pub const STATE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How the state is written after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Msgpack,
}

/// How the encoded state is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Lz4,
}

/// A player file's encoding and compression, named in its header as
/// `json`, `json+lz4`, `msgpack` or `msgpack+lz4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileFormat {
    pub encoding: Encoding,
    pub compression: Compression,
}

impl FileFormat {
    pub const JSON: FileFormat = FileFormat { encoding: Encoding::Json, compression: Compression::None };
    pub const MSGPACK: FileFormat = FileFormat { encoding: Encoding::Msgpack, compression: Compression::None };
    pub const MSGPACK_LZ4: FileFormat = FileFormat { encoding: Encoding::Msgpack, compression: Compression::Lz4 };

    /// Every format, for tests and documentation.
    pub const ALL: [FileFormat; 4] = [
        FileFormat::JSON,
        FileFormat { encoding: Encoding::Json, compression: Compression::Lz4 },
        FileFormat::MSGPACK,
        FileFormat::MSGPACK_LZ4,
    ];

    /// The names [`FromStr`] takes.
    pub const NAMES: [&'static str; 4] = ["json", "json+lz4", "msgpack", "msgpack+lz4"];
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.encoding {
            Encoding::Json => "json",
            Encoding::Msgpack => "msgpack",
        })?;
        match self.compression {
            Compression::None => Ok(()),
            Compression::Lz4 => f.write_str("+lz4"),
        }
    }
}

impl FromStr for FileFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<FileFormat, String> {
        FileFormat::NAMES.iter().position(|n| *n == s).map(|i| FileFormat::ALL[i]).ok_or_else(|| {
            format!("unknown player file format {s:?}: expected one of {}", FileFormat::NAMES.join(", "))
        })
    }
}

impl serde::Serialize for FileFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FileFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileFormat, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a file's header says, or that it has none (plain JSON from before
/// headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `None` for a file from before headers.
    pub format: Option<FileFormat>,
    /// The header's; for a file from before headers, the JSON's (0 when
    /// it has none).
    pub format_version: u64,
    /// Bytes after the header, as stored.
    pub length: usize,
}

impl PlayerState {
    /// The file's bytes in `format`.
    pub fn encode(&self, format: FileFormat) -> Vec<u8> {
        let encoded = match format.encoding {
            Encoding::Json => self.to_json().into_bytes(),
            // Serializing plain maps, vectors and integers cannot fail.
            Encoding::Msgpack => rmp_serde::to_vec_named(self).unwrap_or_default(),
        };
        let payload = match format.compression {
            Compression::None => encoded,
            Compression::Lz4 => lz4_flex::compress_prepend_size(&encoded),
        };
        let mut out = format!(
            "{MAGIC}{format} format_version={} length={} crc32={:08x}\n",
            self.format_version,
            payload.len(),
            crc32fast::hash(&payload)
        )
        .into_bytes();
        out.extend_from_slice(&payload);
        out
    }

    /// Reads a player file in any format and of any known version,
    /// migrating it to the current one; with the file's format (`None` for
    /// plain JSON from before headers).
    pub fn decode(bytes: &[u8]) -> Result<(PlayerState, Option<FileFormat>), StateError> {
        let (header, payload) = split(bytes)?;
        let Some(format) = header.format else {
            let text = std::str::from_utf8(bytes).map_err(|_| StateError::NotUtf8)?;
            return Ok((PlayerState::from_json(text)?, None));
        };
        if header.format_version > u64::from(STATE_FORMAT_VERSION) {
            return Err(StateError::TooNew(header.format_version));
        }
        let decompressed;
        let encoded = match format.compression {
            Compression::None => payload,
            Compression::Lz4 => {
                let size = payload.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                match size {
                    Some(n) if n > STATE_BYTES_MAX => return Err(StateError::TooBig(n)),
                    None => return Err(StateError::Decompress("shorter than its size prefix".into())),
                    Some(_) => {}
                }
                decompressed =
                    lz4_flex::decompress_size_prepended(payload).map_err(|e| StateError::Decompress(e.to_string()))?;
                &decompressed[..]
            }
        };
        // Each path checks that the state names the header's version: a
        // header bit-flipped into another version is not taken at its word.
        let mismatch = |content: u64| StateError::VersionMismatch { header: header.format_version, content };
        let state = match format.encoding {
            Encoding::Json => {
                let text = std::str::from_utf8(encoded).map_err(|_| StateError::NotUtf8)?;
                // The current version parses straight into the typed state
                // (one pass, as `from_json` does); anything else as a tree.
                let current = u64::from(STATE_FORMAT_VERSION);
                match serde_json::from_str::<PlayerState>(text) {
                    Ok(state) if u64::from(state.format_version) != header.format_version => {
                        return Err(mismatch(u64::from(state.format_version)))
                    }
                    Ok(state) if header.format_version == current => state,
                    _ => {
                        let value: serde_json::Value = serde_json::from_str(text)?;
                        let content = value.get("format_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
                        if content != header.format_version {
                            return Err(mismatch(content));
                        }
                        PlayerState::from_value(value)?
                    }
                }
            }
            Encoding::Msgpack if header.format_version == u64::from(STATE_FORMAT_VERSION) => {
                let state =
                    rmp_serde::from_slice::<PlayerState>(encoded).map_err(|e| StateError::Msgpack(e.to_string()))?;
                if u64::from(state.format_version) != header.format_version {
                    return Err(mismatch(u64::from(state.format_version)));
                }
                state
            }
            // An older version: a JSON tree, then the migration chain.
            Encoding::Msgpack => {
                let value: serde_json::Value =
                    rmp_serde::from_slice(encoded).map_err(|e| StateError::Msgpack(e.to_string()))?;
                let content = value.get("format_version").and_then(serde_json::Value::as_u64).unwrap_or(0);
                if content != header.format_version {
                    return Err(mismatch(content));
                }
                PlayerState::from_value(value)?
            }
        };
        Ok((state, Some(format)))
    }

    /// What a file's header says, checked against the bytes after it
    /// (length and checksum), without decoding the state.
    pub fn header(bytes: &[u8]) -> Result<Header, StateError> {
        let (mut header, _) = split(bytes)?;
        if header.format.is_none() {
            header.format_version = plain_json_version(bytes);
        }
        Ok(header)
    }
}

/// The header and the payload after it, checked.
fn split(bytes: &[u8]) -> Result<(Header, &[u8]), StateError> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    if start.is_some_and(|i| bytes[i] == b'{') {
        // Before headers: the version is inside (`from_json` reads it; not
        // parsed here, which would read the whole file twice).
        return Ok((Header { format: None, format_version: 0, length: bytes.len() }, bytes));
    }
    let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
        return Err(StateError::NotAPlayerFile);
    };
    let end = rest
        .iter()
        .take(HEADER_BYTES_MAX)
        .position(|&b| b == b'\n')
        .ok_or_else(|| StateError::Header("no end of line in its first 160 bytes".into()))?;
    let line = std::str::from_utf8(&rest[..end]).map_err(|_| StateError::Header("not text".into()))?;
    let payload = &rest[end + 1..];
    let mut words = line.split(' ');
    let format: FileFormat = words.next().unwrap_or_default().parse().map_err(StateError::Header)?;
    let mut field = |name: &str| -> Result<&str, StateError> {
        let word = words.next().unwrap_or_default();
        word.strip_prefix(name)
            .and_then(|w| w.strip_prefix('='))
            .ok_or_else(|| StateError::Header(format!("expected `{name}=...`, found {word:?}")))
    };
    let number = |name: &str, v: &str| {
        v.parse::<u64>().map_err(|_| StateError::Header(format!("`{name}` is not a number: {v:?}")))
    };
    let version = number("format_version", field("format_version")?)?;
    let length = number("length", field("length")?)?;
    let crc = field("crc32")?;
    let crc = u32::from_str_radix(crc, 16)
        .ok()
        .filter(|_| crc.len() == 8)
        .ok_or_else(|| StateError::Header(format!("`crc32` is not 8 hex digits: {crc:?}")))?;
    if let Some(extra) = words.next() {
        return Err(StateError::Header(format!("unexpected {extra:?} after `crc32`")));
    }
    if length != payload.len() as u64 {
        return Err(StateError::Length { header: length, actual: payload.len() as u64 });
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(StateError::Checksum { header: crc, actual });
    }
    Ok((Header { format: Some(format), format_version: version, length: payload.len() }, payload))
}

/// The `format_version` of a plain JSON file, or 0 when it has none (the
/// decoder then says so).
fn plain_json_version(bytes: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        format_version: u64,
    }
    serde_json::from_slice::<Version>(bytes).map_or(0, |v| v.format_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PlayerState {
        let mut s = PlayerState {
            format_version: STATE_FORMAT_VERSION,
            title: "fort".into(),
            content_version: "abc".into(),
            ..PlayerState::default()
        };
        s.resources.insert("gold".into(), 1234);
        s.flags.insert("tutorial_done".into());
        for i in 0..40 {
            s.buildings.push(crate::state::Building::completed(i, "hut", 1, i as i32, 0, 5));
        }
        s
    }

    /// A file with a well-formed header over `payload`.
    fn framed(format: &str, version: u32, payload: &[u8]) -> Vec<u8> {
        let header = format!(
            "{MAGIC}{format} format_version={version} length={} crc32={:08x}\n",
            payload.len(),
            crc32fast::hash(payload)
        );
        [header.as_bytes(), payload].concat()
    }

    #[test]
    fn every_format_round_trips_and_names_itself() {
        let s = sample();
        for format in FileFormat::ALL {
            let bytes = s.encode(format);
            let (back, found) = PlayerState::decode(&bytes).unwrap();
            assert_eq!(back, s, "{format}");
            assert_eq!(found, Some(format));
            let header = PlayerState::header(&bytes).unwrap();
            assert_eq!(header.format_version, u64::from(STATE_FORMAT_VERSION));
            assert!(bytes.starts_with(format!("{MAGIC}{format} format_version=").as_bytes()));
            assert_eq!(format.to_string().parse::<FileFormat>().unwrap(), format);
        }
        let (back, found) = PlayerState::decode(s.to_json().as_bytes()).unwrap();
        assert_eq!((back, found), (s, None), "plain JSON from before headers");
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_an_error() {
        let s = sample();
        for format in FileFormat::ALL {
            let bytes = s.encode(format);
            for cut in 0..bytes.len() {
                assert!(PlayerState::decode(&bytes[..cut]).is_err(), "{format} cut at {cut}");
            }
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut b = bytes.clone();
                    b[i] ^= 1 << bit;
                    // A flip may leave a header that still parses (the
                    // checksum's hex digits in another case, say): it must
                    // then decode to the very same state.
                    if let Ok((back, _)) = PlayerState::decode(&b) {
                        assert_eq!(back, s, "{format}: byte {i} bit {bit} decoded to another state");
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_headers_are_refused_without_allocating() {
        let cases: &[&[u8]] = &[
            b"",
            b"hello",
            b"CITADEL-PLAYER ",
            b"CITADEL-PLAYER bson format_version=7 length=0 crc32=00000000\n",
            b"CITADEL-PLAYER json format_version=x length=0 crc32=00000000\n",
            b"CITADEL-PLAYER json format_version=7 length=99999999999999999999 crc32=00000000\n",
            b"CITADEL-PLAYER json format_version=7 length=0 crc32=0000000\n",
            b"CITADEL-PLAYER json format_version=7 length=0 crc32=00000000 more\n",
            b"CITADEL-PLAYER json format_version=7 crc32=00000000\n",
        ];
        for bytes in cases {
            assert!(PlayerState::decode(bytes).is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
        // An LZ4 size prefix claiming 4 GB: refused before any allocation.
        let b = framed("msgpack+lz4", 7, &[0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert!(matches!(PlayerState::decode(&b), Err(StateError::TooBig(_))));
        // A newer version than this server knows, in a well-formed file.
        let mut newer = sample();
        newer.format_version = STATE_FORMAT_VERSION + 1;
        assert!(matches!(PlayerState::decode(&newer.encode(FileFormat::MSGPACK)), Err(StateError::TooNew(_))));
    }

    #[test]
    fn an_older_msgpack_file_goes_through_the_migrations() {
        // A version 6 file had no `gifts`.
        let s = sample();
        let mut v = serde_json::to_value(&s).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("gifts");
        obj.insert("format_version".into(), 6.into());
        let b = framed("msgpack", 6, &rmp_serde::to_vec_named(&v).unwrap());
        let (back, _) = PlayerState::decode(&b).unwrap();
        assert_eq!(back, s);
        // The same in JSON.
        let b = framed("json", 6, v.to_string().as_bytes());
        let (back, _) = PlayerState::decode(&b).unwrap();
        assert_eq!(back, s);
        assert!(PlayerState::decode(&framed("json", 7, v.to_string().as_bytes())).is_err());
        // The header must name the version inside: 7 over a version 6 state
        // (a flipped digit) is refused, not migrated.
        let b = framed("msgpack", 7, &rmp_serde::to_vec_named(&v).unwrap());
        assert!(PlayerState::decode(&b).is_err());
    }
}
