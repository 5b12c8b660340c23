//! One report: its fields read from JSON, normalized by connector/codec/report.py's rules, written
//! as the Avro binary body of connector/codec/avro.py's schema.
//!
//! Only the cases that normalize to a record are handled here; every report Python would
//! reject (and every value the rules leave to Python: floats, booleans, very long integers,
//! times before the zone's last offset change) comes back as `None`, "slow": the Python
//! normalizer then judges that report, so rejects and their messages are Python's own.

use crate::json::{Bail, Parser, Res, Scalar};

/// Field order of the schema (and of connector.codec.report.FIELDS); `field_index` spells it out.
#[cfg_attr(not(test), allow(dead_code))]
pub const FIELDS: [&str; 14] = [
    "msgid",
    "custid",
    "pknum",
    "pktotal",
    "mobile",
    "countrycode",
    "spno",
    "exno",
    "stime",
    "rtime",
    "status",
    "errcode",
    "errdesc",
    "exdata",
];
const MSGID_MAX_DIGITS: usize = 64;
/// Integer literals longer than this anywhere in a report send it to Python.
const LONG_LITERAL: usize = 64;

/// The position of `key` in FIELDS (a match: the compiler dispatches on length, then bytes).
pub fn field_index(key: &str) -> Option<usize> {
    match key {
        "msgid" => Some(0),
        "custid" => Some(1),
        "pknum" => Some(2),
        "pktotal" => Some(3),
        "mobile" => Some(4),
        "countrycode" => Some(5),
        "spno" => Some(6),
        "exno" => Some(7),
        "stime" => Some(8),
        "rtime" => Some(9),
        "status" => Some(10),
        "errcode" => Some(11),
        "errdesc" => Some(12),
        "exdata" => Some(13),
        _ => None,
    }
}

/// A report's known fields as read, plus what the batch observes.
pub struct RawReport<'a> {
    pub values: [Option<Scalar<'a>>; 14],
    pub unknown: usize,
    /// A float, a boolean or a very long integer somewhere: Python normalizes this one.
    pub odd: bool,
}

/// A flat JSON object at the cursor; a nested container or a repeated key is a Bail.
pub fn read_report<'a>(p: &mut Parser<'a>) -> Res<RawReport<'a>> {
    let mut values: [Option<Scalar<'a>>; 14] = Default::default();
    let mut seen = [false; 14];
    let mut unknown_keys: Vec<std::borrow::Cow<'a, str>> = Vec::new();
    let mut odd = false;
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
        return Ok(RawReport {
            values,
            unknown: 0,
            odd,
        });
    }
    loop {
        let key = p.string()?;
        p.expect(b':')?;
        let value = p.scalar()?;
        match &value {
            Some(Scalar::Other) => odd = true,
            Some(Scalar::Int(text)) if text.len() > LONG_LITERAL => odd = true,
            _ => {}
        }
        match field_index(&key) {
            Some(i) => {
                if seen[i] {
                    return Err(Bail);
                }
                seen[i] = true;
                values[i] = value;
            }
            None => {
                if unknown_keys.contains(&key) {
                    return Err(Bail);
                }
                unknown_keys.push(key);
            }
        }
        if !p.next_or_end(b'}')? {
            break;
        }
    }
    Ok(RawReport {
        values,
        unknown: unknown_keys.len(),
        odd,
    })
}

/// Python's str.isspace(), exactly (str.strip() removes these at both ends).
fn py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r' | '\x1c'..='\x20' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
            | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Python's str(int(literal)) for a JSON integer literal: only "-0" differs.
fn int_literal_text(text: &str) -> &str {
    if text == "-0" {
        "0"
    } else {
        text
    }
}

/// sign + ASCII digits (Python's _is_integer_text): (negative, digits) or None.
fn integer_text(text: &str) -> Option<(bool, &str)> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((negative, digits))
}

/// A normalized field value, or "slow" (None).
type Slow<T> = Option<T>;

fn msgid(value: &Option<Scalar>) -> Slow<String> {
    match value {
        Some(Scalar::Int(text)) => {
            let digits = text.trim_start_matches('-').len();
            (digits <= MSGID_MAX_DIGITS).then(|| int_literal_text(text).to_string())
        }
        Some(Scalar::Str(s)) => {
            let (negative, digits) = integer_text(py_strip(s))?;
            if digits.len() > MSGID_MAX_DIGITS {
                return None;
            }
            let significant = digits.trim_start_matches('0');
            Some(match (significant.is_empty(), negative) {
                (true, _) => "0".to_string(),
                (false, true) => format!("-{significant}"),
                (false, false) => significant.to_string(),
            })
        }
        _ => None,
    }
}

fn opt_str<'v>(value: &'v Option<Scalar>) -> Slow<Option<&'v str>> {
    match value {
        None => Some(None),
        Some(Scalar::Str(s)) => {
            let text = py_strip(s);
            Some((!text.is_empty()).then_some(text))
        }
        Some(Scalar::Int(text)) => Some(Some(int_literal_text(text))),
        Some(Scalar::Other) => None,
    }
}

fn in_int_range(text: &str) -> Slow<i32> {
    text.parse::<i64>().ok().and_then(|n| i32::try_from(n).ok())
}

fn opt_int(value: &Option<Scalar>) -> Slow<Option<i32>> {
    match value {
        None => Some(None),
        Some(Scalar::Int(text)) => in_int_range(text).map(Some),
        Some(Scalar::Str(s)) => {
            let text = py_strip(s);
            if text.is_empty() {
                return Some(None);
            }
            if text.len() > 12 {
                return None;
            }
            let (negative, digits) = integer_text(text)?;
            let n: i64 = digits.parse().ok()?;
            let n = if negative { -n } else { n };
            i32::try_from(n).ok().map(Some)
        }
        Some(Scalar::Other) => None,
    }
}

/// The configured zone where the native path may convert: one fixed UTC offset for every
/// local time from `from_local` on (epoch seconds of the local wall clock).
#[derive(Clone, Copy)]
pub struct Zone {
    pub offset: i64,
    pub from_local: i64,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// 'YYYY-MM-DD HH:MM:SS' (or 'T') → epoch millis in `zone`; None = slow.
fn local_time(text: &str, zone: Zone) -> Slow<i64> {
    let b = text.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &b[r];
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y < 1 || !(1..=12).contains(&mo) || d < 1 || d > month_days(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let local = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    (local >= zone.from_local).then(|| (local - zone.offset) * 1000)
}

fn time(value: &Option<Scalar>, zone: Zone) -> Slow<Option<i64>> {
    match value {
        None => Some(None),
        Some(Scalar::Str(s)) => {
            let text = py_strip(s);
            if text.is_empty() {
                return Some(None);
            }
            local_time(text, zone).map(Some)
        }
        _ => None,
    }
}

/// A normalized report, borrowing its strings from the parsed body.
pub struct Record<'v> {
    pub msgid: String,
    pub strs: [Option<&'v str>; 7], // custid mobile spno exno errcode errdesc exdata
    pub ints: [Option<i32>; 3],     // pknum pktotal countrycode
    pub stime: Option<i64>,
    pub rtime: Option<i64>,
    pub status: i32,
}

pub fn normalize<'v>(r: &'v RawReport, zone: Zone) -> Slow<Record<'v>> {
    if r.odd {
        return None;
    }
    let v = &r.values;
    let status = opt_int(&v[10])??; // slow, or missing (Python rejects it)
    Some(Record {
        msgid: msgid(&v[0])?,
        strs: [
            opt_str(&v[1])?,
            opt_str(&v[4])?,
            opt_str(&v[6])?,
            opt_str(&v[7])?,
            opt_str(&v[11])?,
            opt_str(&v[12])?,
            opt_str(&v[13])?,
        ],
        ints: [opt_int(&v[2])?, opt_int(&v[3])?, opt_int(&v[5])?],
        stime: time(&v[8], zone)?,
        rtime: time(&v[9], zone)?,
        status,
    })
}

// --- Avro binary --------------------------------------------------------------------------
pub fn varint(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(2);
            string(out, s);
        }
    }
}

fn opt_long(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => out.push(0),
        Some(n) => {
            out.push(2);
            varint(out, n);
        }
    }
}

/// The record's Avro body, schema order; `tail` is account + fetched_at, already encoded.
pub fn write(out: &mut Vec<u8>, r: &Record, tail: &[u8]) {
    let [custid, mobile, spno, exno, errcode, errdesc, exdata] = r.strs;
    let [pknum, pktotal, countrycode] = r.ints.map(|n| n.map(i64::from));
    string(out, &r.msgid);
    opt_string(out, custid);
    opt_long(out, pknum);
    opt_long(out, pktotal);
    opt_string(out, mobile);
    opt_long(out, countrycode);
    opt_string(out, spno);
    opt_string(out, exno);
    opt_long(out, r.stime);
    opt_long(out, r.rtime);
    varint(out, i64::from(r.status));
    opt_string(out, errcode);
    opt_string(out, errdesc);
    opt_string(out, exdata);
    out.extend_from_slice(tail);
}

/// The tail every record of one answer shares: account (string), fetched_at (long).
pub fn tail(account: &str, fetched_at_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(account.len() + 12);
    string(&mut out, account);
    varint(&mut out, fetched_at_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_index_is_the_position_in_fields() {
        for (i, name) in FIELDS.iter().enumerate() {
            assert_eq!(field_index(name), Some(i));
        }
        assert_eq!(field_index("msgid "), None);
        assert_eq!(field_index(""), None);
    }
}
