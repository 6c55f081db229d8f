//! Small allocation-free text helpers of the hot path: case folding, formatting into a stack buffer,
//! percent-encoding.

use std::fmt;

/// Case folding for case-insensitive fields: Unicode lowercase (`str::to_lowercase`). Used once at snapshot
/// build for operands; [`with_folded`] applies the same folding to request values.
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// Calls `f` with `text` folded as [`fold`] does, without allocating for ASCII text of up to 64 bytes.
pub fn with_folded<R>(text: &str, f: impl FnOnce(&str) -> R) -> R {
    if text.is_ascii() {
        if !text.bytes().any(|b| b.is_ascii_uppercase()) {
            return f(text);
        }
        let mut buf = [0u8; 64];
        if let Some(out) = buf.get_mut(..text.len()) {
            out.copy_from_slice(text.as_bytes());
            out.make_ascii_lowercase();
            if let Ok(lower) = std::str::from_utf8(out) {
                return f(lower);
            }
        }
        return f(&text.to_ascii_lowercase());
    }
    f(&text.to_lowercase())
}

/// A 64-byte stack buffer that `write!` can fill: IP addresses, numbers and decimals fit.
pub struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl StackStr {
    /// An empty buffer.
    pub fn new() -> Self {
        Self { buf: [0; 64], len: 0 }
    }

    /// `value` written with `Display`, or `None` when it needs more than 64 bytes.
    pub fn display(value: impl fmt::Display) -> Option<Self> {
        let mut s = Self::new();
        fmt::write(&mut s, format_args!("{value}")).ok()?;
        Some(s)
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        // Only whole `str`s are ever copied in, so this never fails.
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl Default for StackStr {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        self.buf.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `value` percent-encoded: RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) stay, every
/// other byte of its UTF-8 becomes `%XX`. Nothing encoded this way can end a path, start a query or
/// fragment, or carry a `:`, `@` or `/`.
pub fn percent_encode_into(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            continue;
        }
        // `start..i` holds only ASCII unreserved bytes, so it is a `str` boundary.
        out.push_str(value.get(start..i).unwrap_or_default());
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
        start = i + 1;
    }
    out.push_str(value.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_to_lowercase() {
        for text in ["DE", "de", "MiXeD", "ÄÖÜ", "Straße", "İstanbul", &"A".repeat(100), ""] {
            with_folded(text, |f| assert_eq!(f, fold(text), "{text}"));
        }
    }

    #[test]
    fn stack_str_formats_and_refuses_overflow() {
        let ip: std::net::IpAddr = "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(StackStr::display(ip).map(|s| s.as_str().to_string()), Some("2001:db8::1".into()));
        assert_eq!(StackStr::display(12.5).map(|s| s.as_str().to_string()), Some("12.5".into()));
        assert!(StackStr::display("x".repeat(65)).is_none());
        assert_eq!(StackStr::default().as_str(), "");
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        let mut out = String::new();
        percent_encode_into(&mut out, "a-Z_0.~ /?#@:%&=+ü");
        assert_eq!(out, "a-Z_0.~%20%2F%3F%23%40%3A%25%26%3D%2B%C3%BC");
        let mut out = String::from("x=");
        percent_encode_into(&mut out, "");
        assert_eq!(out, "x=");
    }
}
