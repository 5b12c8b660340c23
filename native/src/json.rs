//! A strict, narrow JSON reader for get-rpt bodies.
//!
//! It reads only what the fast path handles: an envelope object whose `result` is the
//! integer 0 and whose `rpts` is an array of flat objects (scalar values only). Anything
//! else — a BOM-less oddity, nested containers in a report, a non-object entry, a duplicated
//! key at any level, invalid UTF-8, a lone surrogate, a control character in a string — is a
//! `Bail`: the caller hands the whole body to the Python path, which stays the authority.

use std::borrow::Cow;

/// The body is not for the native path; Python decides what it is.
#[derive(Debug)]
pub struct Bail;

pub type Res<T> = Result<T, Bail>;

/// A JSON scalar other than null.
#[derive(Debug, Clone)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    /// An integer literal, exactly as written (`-?(0|[1-9][0-9]*)`).
    Int(&'a str),
    /// A float literal or a boolean: never normalized natively.
    Other,
}

pub struct Parser<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Parser<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Parser { b, i: 0 }
    }

    pub fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub fn expect(&mut self, c: u8) -> Res<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// After a member or an item: true for `,`, false for the closing `end`.
    pub fn next_or_end(&mut self, end: u8) -> Res<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == end => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Bail),
        }
    }

    /// A string at the cursor (after blanks), decoded.
    pub fn string(&mut self) -> Res<Cow<'a, str>> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(Bail);
        }
        self.i += 1;
        let start = self.i;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| Bail)?;
                    self.i += 1;
                    return Ok(Cow::Borrowed(text));
                }
                b'\\' => return self.escaped_string(start),
                0..=0x1f => return Err(Bail),
                _ => self.i += 1,
            }
        }
        Err(Bail)
    }

    fn escaped_string(&mut self, start: usize) -> Res<Cow<'a, str>> {
        let mut out: Vec<u8> = self.b[start..self.i].to_vec();
        loop {
            let c = *self.b.get(self.i).ok_or(Bail)?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map(Cow::Owned).map_err(|_| Bail),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or(Bail)?;
                    self.i += 1;
                    let simple = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut tmp = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                            continue;
                        }
                        _ => return Err(Bail),
                    };
                    out.push(simple);
                }
                0..=0x1f => return Err(Bail),
                _ => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Res<u32> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(Bail)?;
        let text = std::str::from_utf8(digits).map_err(|_| Bail)?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Bail);
        }
        self.i += 4;
        u32::from_str_radix(text, 16).map_err(|_| Bail)
    }

    /// After `\u`: one code point; a surrogate must come as a proper pair.
    fn unicode_escape(&mut self) -> Res<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                    return Err(Bail);
                }
                self.i += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Bail);
                }
                0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(Bail),
            _ => first,
        };
        char::from_u32(code).ok_or(Bail)
    }

    /// A number literal; Int for integers, Other for floats.
    fn number(&mut self) -> Res<Scalar<'a>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Bail),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            self.require_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            float = true;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.require_digits()?;
        }
        if float {
            return Ok(Scalar::Other);
        }
        // Literals are ASCII by construction.
        Ok(Scalar::Int(
            std::str::from_utf8(&self.b[start..self.i]).map_err(|_| Bail)?,
        ))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn require_digits(&mut self) -> Res<()> {
        let start = self.i;
        self.digits();
        if self.i == start {
            Err(Bail)
        } else {
            Ok(())
        }
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// A scalar value (None for null); a container is a Bail.
    pub fn scalar(&mut self) -> Res<Option<Scalar<'a>>> {
        self.ws();
        match self.peek().ok_or(Bail)? {
            b'"' => Ok(Some(Scalar::Str(self.string()?))),
            b'n' => self.literal(b"null").map(|_| None),
            b't' => self.literal(b"true").map(|_| Some(Scalar::Other)),
            b'f' => self.literal(b"false").map(|_| Some(Scalar::Other)),
            b'-' | b'0'..=b'9' => self.number().map(Some),
            _ => Err(Bail),
        }
    }
}
