//! rpt-connector's native hot path: one call per get-rpt body, raw bytes in, Kafka keys and
//! Avro values out (connector/codec/native.py wraps it; connector/codec/report.py and avro_codec.py stay
//! the reference: the tests compare byte for byte and judge every report this code leaves),
//! and one call per batch of records to produce them through librdkafka (produce.rs).

mod json;
mod produce;
mod report;

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use json::{Bail, Parser, Res};
use report::{RawReport, Zone};

const BOM: &[u8] = b"\xef\xbb\xbf";

type Observed = HashMap<(Option<i64>, Option<i64>, i32), u64>;

/// What one body became, before any Python object exists (built without the GIL).
struct Encoded {
    buf: Vec<u8>,                        // every value, back to back
    values: Vec<Option<(usize, usize)>>, // per report: its value's span in buf, None = slow
    keys: Vec<Option<(usize, usize)>>,   // per report: its key's span in key_buf
    key_buf: Vec<u8>,
    slow: Vec<(usize, usize, usize)>, // (report index, body start, body end)
    observed: Observed,
    unknown: usize,
    rtimes: Vec<Option<i64>>, // per report (None: slow or no rtime); filled only when asked
}

/// The envelope: `result` exactly 0, `rpts` an array of flat objects, other members scalars.
fn reports<'a>(p: &mut Parser<'a>) -> Res<Vec<(usize, usize, RawReport<'a>)>> {
    let mut out = Vec::new();
    let rpts = |p: &mut Parser<'a>| {
        p.expect(b'[')?;
        p.ws();
        if p.peek() == Some(b']') {
            p.i += 1;
            return Ok(());
        }
        loop {
            p.ws();
            let start = p.i;
            let raw = report::read_report(p)?;
            out.push((start, p.i, raw));
            if !p.next_or_end(b']')? {
                return Ok(());
            }
        }
    };
    // msgspec refuses some floats (1e400) and very long integers: Python decides.
    let other = |p: &mut Parser<'a>| match p.scalar()? {
        Some(json::Scalar::Other) => Err(Bail),
        Some(json::Scalar::Int(text)) if text.len() > 64 => Err(Bail),
        _ => Ok(()),
    };
    if !json::envelope(p, rpts, other)? {
        return Err(Bail);
    }
    Ok(out)
}

#[pyclass(frozen, module = "rpt_native")]
struct BodyEncoder {
    account: String,
    prefix: Vec<u8>,
    key_msgid: bool,
    zone: Zone,
    rtimes: bool,
}

impl BodyEncoder {
    fn encode(&self, body: &[u8], fetched_at_ms: i64) -> Res<Encoded> {
        let text = body.strip_prefix(BOM).unwrap_or(body);
        let offset = body.len() - text.len();
        let mut p = Parser::new(text)?;
        let raws = reports(&mut p)?;
        let tail = report::tail(&self.account, fetched_at_ms);
        let mut e = Encoded {
            buf: Vec::with_capacity(raws.len() * (self.prefix.len() + 160)),
            values: Vec::with_capacity(raws.len()),
            keys: Vec::with_capacity(raws.len()),
            key_buf: Vec::with_capacity(raws.len() * 16),
            slow: Vec::new(),
            observed: HashMap::with_capacity(raws.len()),
            unknown: 0,
            rtimes: Vec::with_capacity(if self.rtimes { raws.len() } else { 0 }),
        };
        for (index, (start, end, raw)) in raws.iter().enumerate() {
            e.unknown += raw.unknown;
            let Some(record) = report::normalize(raw, self.zone) else {
                e.values.push(None);
                e.keys.push(None);
                e.slow.push((index, start + offset, end + offset));
                if self.rtimes {
                    e.rtimes.push(None);
                }
                continue;
            };
            if self.rtimes {
                e.rtimes.push(record.rtime);
            }
            let at = e.buf.len();
            e.buf.extend_from_slice(&self.prefix);
            report::write(&mut e.buf, &record, &tail);
            e.values.push(Some((at, e.buf.len())));
            let key = match record.strs[0] {
                Some(custid) => Some(custid),
                None if self.key_msgid => Some(record.msgid.as_str()),
                None => None,
            };
            e.keys.push(key.map(|k| {
                let at = e.key_buf.len();
                e.key_buf.extend_from_slice(k.as_bytes());
                (at, e.key_buf.len())
            }));
            *e.observed
                .entry((record.rtime, record.stime, record.status))
                .or_default() += 1;
        }
        Ok(e)
    }
}

fn spans<'py>(
    py: Python<'py>,
    buf: &[u8],
    spans: &[Option<(usize, usize)>],
) -> PyResult<Bound<'py, PyList>> {
    let items = spans
        .iter()
        .map(|s| s.map(|(a, b)| PyBytes::new(py, &buf[a..b])));
    PyList::new(py, items)
}

#[pymethods]
impl BodyEncoder {
    /// account: the record's `account`; prefix: magic + fingerprint or schema id;
    /// key_msgid: a report without custid is keyed by its msgid (else no key);
    /// offset, from_local: the zone's fixed UTC offset (s) and the first local wall-clock
    /// second (epoch-based) from which it holds; rtimes: encode_body also returns every
    /// report's rtime (the record timestamps of kafka.record_timestamp = "rtime").
    #[new]
    #[pyo3(signature = (account, prefix, key_msgid, offset, from_local, rtimes = false))]
    fn new(
        account: String,
        prefix: Vec<u8>,
        key_msgid: bool,
        offset: i64,
        from_local: i64,
        rtimes: bool,
    ) -> Self {
        BodyEncoder {
            account,
            prefix,
            key_msgid,
            zone: Zone { offset, from_local },
            rtimes,
        }
    }

    /// None when the body is not for the native path; else (values, keys, slow, observed,
    /// unknown_fields): values/keys per report (None where the report is slow), slow as
    /// (index, start, end) byte spans of those reports in `body`, observed as
    /// {(rtime, stime, status): count} over the encoded reports. Built with rtimes=True, a
    /// sixth element: per report its rtime in epoch ms, None where it is slow or has none.
    fn encode_body<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
        fetched_at_ms: i64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Ok(e) = py.allow_threads(|| self.encode(body, fetched_at_ms)) else {
            return Ok(None);
        };
        let values = spans(py, &e.buf, &e.values)?;
        let keys = spans(py, &e.key_buf, &e.keys)?;
        let slow = PyList::new(py, e.slow.iter())?;
        let observed = PyDict::new(py);
        for (key, count) in e.observed {
            observed.set_item(key, count)?;
        }
        if self.rtimes {
            let rtimes = PyList::new(py, e.rtimes.iter())?;
            let out = (values, keys, slow, observed, e.unknown, rtimes);
            return out.into_pyobject(py).map(Some);
        }
        let out = (values, keys, slow, observed, e.unknown);
        out.into_pyobject(py).map(Some)
    }
}

/// The report count of a clean strict get-rpt body (one the Python path takes whole, every
/// entry of `rpts` a report), or None: then connector.codec.body judges the body in Python. The
/// fetch thread counts with it; no Python object is built per report.
#[pyfunction]
fn count_body(py: Python<'_>, body: &[u8]) -> Option<usize> {
    py.allow_threads(|| json::count_reports(body.strip_prefix(BOM).unwrap_or(body), report::field_index).ok())
}

#[pymodule]
fn rpt_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BodyEncoder>()?;
    m.add_function(wrap_pyfunction!(count_body, m)?)?;
    m.add_class::<produce::RecordSender>()?;
    m.add_function(wrap_pyfunction!(produce::bind_librdkafka, m)?)?;
    Ok(())
}
