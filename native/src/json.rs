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
    /// A parser over a body that is valid UTF-8 as a whole, else a Bail (Python decides, as
    /// it would for invalid UTF-8 anywhere). One check for the whole body: every string
    /// between two quotes is then valid UTF-8 too and is not checked again.
    pub fn new(b: &'a [u8]) -> Res<Self> {
        std::str::from_utf8(b).map_err(|_| Bail)?;
        Ok(Parser { b, i: 0 })
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
        self.skip_plain();
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    // SAFETY: `b` is valid UTF-8 (Parser::new) and both ends of the slice are
                    // next to ASCII quotes, so they are character boundaries.
                    let text = unsafe { std::str::from_utf8_unchecked(&self.b[start..self.i]) };
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

    /// Skip string bytes that need no attention (not `"`, `\\`, or a control character),
    /// eight at a time: most of a body is such bytes.
    fn skip_plain(&mut self) {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let (quote, backslash) = (w ^ (LO * 0x22), w ^ (LO * 0x5c));
            // The classic "has a zero byte" / "has a byte below n" tests; the lowest flagged
            // byte is exact, which is the one this needs.
            let hit = ((quote.wrapping_sub(LO) & !quote)
                | (backslash.wrapping_sub(LO) & !backslash)
                | (w.wrapping_sub(LO * 0x20) & !w))
                & HI;
            if hit != 0 {
                self.i += (hit.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
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

/// The envelope of a get-rpt answer: an object with distinct member names whose `result` is
/// the integer 0, and nothing after it. `rpts` reads the value of `rpts`, `other` the value
/// of any other member. Ok(whether there was an `rpts`).
pub fn envelope<'a>(
    p: &mut Parser<'a>,
    mut rpts: impl FnMut(&mut Parser<'a>) -> Res<()>,
    mut other: impl FnMut(&mut Parser<'a>) -> Res<()>,
) -> Res<bool> {
    let mut names: Vec<Cow<'a, str>> = Vec::new();
    let (mut result, mut has_rpts) = (false, false);
    p.expect(b'{')?;
    loop {
        let name = p.string()?;
        if names.contains(&name) {
            return Err(Bail);
        }
        p.expect(b':')?;
        match name.as_ref() {
            "rpts" => {
                has_rpts = true;
                rpts(p)?;
            }
            "result" => {
                if !matches!(p.scalar()?, Some(Scalar::Int("0"))) {
                    return Err(Bail);
                }
                result = true;
            }
            _ => other(p)?,
        }
        names.push(name);
        if !p.next_or_end(b'}')? {
            break;
        }
    }
    p.ws();
    if p.i != p.b.len() || !result {
        return Err(Bail);
    }
    Ok(has_rpts)
}

/// The number of reports in a clean strict get-rpt answer, their values left unread: the
/// envelope above, with `rpts` an array of flat objects (or null, or absent: no reports),
/// every member a scalar, no key repeated in any object. A float or an integer literal longer
/// than 64 characters anywhere is a `Bail` too (msgspec refuses some: Python decides). For
/// such a body the Python path takes every entry of `rpts` as a report, so the count is
/// exactly its count.
///
/// `known` numbers the field names a report usually has (below 32): those are checked for
/// repeats with a bit each, the others with a list.
pub fn count_reports(b: &[u8], known: fn(&str) -> Option<usize>) -> Res<usize> {
    let mut p = Parser::new(b)?;
    let mut count = 0;
    let rpts = |p: &mut Parser<'_>| p.flat_objects(known).map(|n| count = n);
    envelope(&mut p, rpts, |p| p.plain_scalar())?;
    Ok(count)
}

impl<'a> Parser<'a> {
    /// `null` (0) or an array of flat objects: how many.
    fn flat_objects(&mut self, known: fn(&str) -> Option<usize>) -> Res<usize> {
        self.ws();
        if self.peek() == Some(b'n') {
            return self.literal(b"null").map(|_| 0);
        }
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(0);
        }
        let mut count = 0;
        let mut keys: Vec<Cow<'a, str>> = Vec::with_capacity(16);
        loop {
            self.flat_object(&mut keys, known)?;
            count += 1;
            if !self.next_or_end(b']')? {
                return Ok(count);
            }
        }
    }

    /// One object of scalars with distinct keys; `keys` is scratch space (the unknown ones).
    fn flat_object(
        &mut self,
        keys: &mut Vec<Cow<'a, str>>,
        known: fn(&str) -> Option<usize>,
    ) -> Res<()> {
        keys.clear();
        let mut seen: u32 = 0;
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            match known(&key) {
                Some(bit) => {
                    if seen & (1 << bit) != 0 {
                        return Err(Bail);
                    }
                    seen |= 1 << bit;
                }
                None if keys.contains(&key) => return Err(Bail),
                None => keys.push(key),
            }
            self.expect(b':')?;
            self.plain_scalar()?;
            if !self.next_or_end(b'}')? {
                return Ok(());
            }
        }
    }

    /// A scalar that msgspec surely decodes as Python would: no float, no very long integer.
    fn plain_scalar(&mut self) -> Res<()> {
        self.ws();
        let first = self.peek();
        match self.scalar()? {
            Some(Scalar::Other) if !matches!(first, Some(b't' | b'f')) => Err(Bail), // a float
            Some(Scalar::Int(text)) if text.len() > 64 => Err(Bail),
            _ => Ok(()),
        }
    }
}
