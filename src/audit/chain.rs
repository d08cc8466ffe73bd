//! The hash chain that makes the trail tamper-evident (issue 13).
//!
//! A chained line is the event's JSON object with three members in front and one at the end:
//!
//! ```text
//! {"seq":42,"writer":"gw-1","prev":"<hash of seq 41>", ...the event's fields... ,"hash":"<hex>"}
//! ```
//!
//! `hash` is the lowercase hex SHA-256 of the line's *body*: the exact bytes of the line with the
//! final `,"hash":"…"` member removed (so the body ends in `}`). The body contains `prev`, so each
//! hash covers the event and, through `prev`, every event of the same writer before it. The first
//! event of a writer's chain has `seq` 1 and `prev` [`GENESIS`]. Hashing the bytes as written
//! (not a re-serialisation) means a verifier needs no canonical JSON: any flipped byte shows.
//!
//! What the chain proves and what it does not: without a key, someone who can rewrite the file can
//! also recompute every hash after an edit. Edits, deletions, insertions and reorders are caught
//! when any later hash is known from elsewhere: the next rotated file (it starts with the previous
//! file's last hash), a head the writer logged on rotation or reopen, or an `--anchor` the auditor
//! recorded (see docs/operations.md, "Audit trail verification").

use sha2::{Digest, Sha256};

/// `prev` of the first event in a writer's chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that ends every chained line; `rfind` is safe because quotes inside JSON strings
/// are escaped, so these bytes cannot occur inside a value.
const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// Where a writer's chain stands: the last event it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    /// Hex SHA-256 of the last event (or [`GENESIS`] before the first).
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// Links events into one writer's chain.
#[derive(Debug)]
pub struct Chain {
    /// The writer id as a JSON string (quoted and escaped once).
    writer_json: String,
    head: ChainHead,
}

impl Chain {
    pub fn new(writer_id: &str, head: ChainHead) -> Self {
        Chain {
            writer_json: serde_json::Value::String(writer_id.to_owned()).to_string(),
            head,
        }
    }

    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    pub fn writer_id(&self) -> &str {
        // The JSON string without its quotes; ids are plain ASCII (config validation).
        self.writer_json.trim_matches('"')
    }

    /// Appends the chained line for `event_json` (one serialised event object, `{...}`) to `out`,
    /// newline included, and advances the head.
    pub fn seal(&mut self, event_json: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let seq = self.head.seq + 1;
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(seq.to_string().as_bytes());
        out.extend_from_slice(b",\"writer\":");
        out.extend_from_slice(self.writer_json.as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.head.hash.as_bytes());
        out.push(b'"');
        match event_json.strip_prefix(b"{") {
            // An event always has fields (`time` first), so a comma is needed before them.
            Some(rest) if rest != b"}" => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
            _ => out.push(b'}'),
        }
        let hash = hex_sha256(&out[start..]);
        // Replace the body's closing brace by the hash member and close again.
        out.pop();
        out.extend_from_slice(HASH_MEMBER);
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.head = ChainHead { seq, hash };
    }
}

/// A chained line taken apart: the fields the chain needs, and whether its hash matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub writer: String,
    pub prev: String,
    /// The hash the line carries.
    pub hash: String,
    /// The hash of the line's body as it is now.
    pub computed: String,
}

impl Link {
    pub fn intact(&self) -> bool {
        self.hash == self.computed
    }
}

/// What a line of an audit file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Chained(Link),
    /// A JSON event without chain fields (`chain = false`, or written before chaining).
    Unchained,
    /// Not an audit event at all; the text says what is wrong.
    Broken(String),
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Line {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Line::Broken("not a JSON object (edited, or cut short)".into());
    };
    let Some(obj) = value.as_object() else {
        return Line::Broken("not a JSON object".into());
    };
    let has_chain = ["seq", "writer", "prev", "hash"]
        .iter()
        .any(|k| obj.contains_key(*k));
    if !has_chain {
        return if obj.contains_key("event") && obj.contains_key("time") {
            Line::Unchained
        } else {
            Line::Broken("not an audit event (no `time` and `event`)".into())
        };
    }
    let (Some(seq), Some(writer), Some(prev), Some(hash)) = (
        obj.get("seq").and_then(|v| v.as_u64()),
        obj.get("writer").and_then(|v| v.as_str()),
        obj.get("prev").and_then(|v| v.as_str()),
        obj.get("hash").and_then(|v| v.as_str()),
    ) else {
        return Line::Broken(
            "chain fields `seq`, `writer`, `prev` or `hash` are missing or of the wrong type"
                .into(),
        );
    };
    let Some(at) = line
        .windows(HASH_MEMBER.len())
        .rposition(|w| w == HASH_MEMBER)
    else {
        return Line::Broken("`hash` is not the last member of the line".into());
    };
    let tail = &line[at + HASH_MEMBER.len()..];
    if tail.len() != 64 + 2 || !tail.ends_with(b"\"}") || !is_hex(&tail[..64]) {
        return Line::Broken("`hash` is not the last member, or not 64 hex digits".into());
    }
    let mut body = Vec::with_capacity(at + 1);
    body.extend_from_slice(&line[..at]);
    body.push(b'}');
    Line::Chained(Link {
        seq,
        writer: writer.to_owned(),
        prev: prev.to_owned(),
        hash: hash.to_owned(),
        computed: hex_sha256(&body),
    })
}

fn is_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(chain: &mut Chain, event: &str) -> Vec<u8> {
        let mut out = Vec::new();
        chain.seal(event.as_bytes(), &mut out);
        out
    }

    #[test]
    fn a_sealed_line_is_json_with_the_chain_fields_and_a_matching_hash() {
        let mut chain = Chain::new("gw-1", ChainHead::genesis());
        let line = sealed(&mut chain, r#"{"time":"t","event":"launch"}"#);
        assert!(line.ends_with(b"\"}\n"));
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["writer"], "gw-1");
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["event"], "launch");
        // The documented recipe: hash = sha256(line without its `,"hash":"…"` member).
        let body = format!("{}}}", &text[..text.rfind(r#","hash":""#).unwrap()]);
        assert_eq!(v["hash"], hex_sha256(body.as_bytes()));
        match parse_line(text.as_bytes()) {
            Line::Chained(link) => {
                assert!(link.intact());
                assert_eq!(link.hash, chain.head().hash);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_event_links_to_the_one_before() {
        let mut chain = Chain::new("gw-1", ChainHead::genesis());
        let first = sealed(&mut chain, r#"{"time":"a"}"#);
        let first_hash = chain.head().hash.clone();
        let second = sealed(&mut chain, r#"{"time":"b"}"#);
        let (Line::Chained(a), Line::Chained(b)) = (
            parse_line(first.trim_ascii_end()),
            parse_line(second.trim_ascii_end()),
        ) else {
            panic!("not chained");
        };
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.prev, first_hash);
        assert_eq!(a.hash, first_hash);
    }

    #[test]
    fn any_flipped_byte_breaks_the_hash_or_the_line() {
        let mut chain = Chain::new("gw-1", ChainHead::genesis());
        let line = sealed(
            &mut chain,
            r#"{"time":"2026-12-02T07:00:00Z","request_id":"r1","event":"launch","outcome":"allow","store":"nw-us"}"#,
        );
        let line = line.trim_ascii_end();
        for i in 0..line.len() {
            let mut edited = line.to_vec();
            edited[i] ^= 0x01;
            match parse_line(&edited) {
                Line::Chained(link) => assert!(!link.intact(), "byte {i} flipped unnoticed"),
                Line::Broken(_) | Line::Unchained => {}
            }
        }
    }

    #[test]
    fn escaped_hash_text_inside_a_value_does_not_confuse_the_parser() {
        let mut chain = Chain::new("gw-1", ChainHead::genesis());
        let line = sealed(&mut chain, r#"{"time":"t","detail":",\"hash\":\"x"}"#);
        assert!(matches!(parse_line(line.trim_ascii_end()), Line::Chained(l) if l.intact()));
    }

    #[test]
    fn lines_without_chain_fields_are_unchained() {
        assert_eq!(
            parse_line(br#"{"time":"t","event":"launch","outcome":"allow"}"#),
            Line::Unchained
        );
        assert!(matches!(parse_line(b"{\"time\":"), Line::Broken(_)));
    }
}
