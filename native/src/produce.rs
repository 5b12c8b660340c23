//! Producing one batch of data records with one call: the records go to librdkafka through the
//! handle of the connector's own confluent-kafka `Producer`, so its transaction, its
//! partitioner and its settings are the ones that apply, and the Python `produce()` call
//! (argument parsing, the header list turned into C headers, a callback state) is not paid
//! per record. connector/kafka/native_produce.py decides when this is used and checks the handle.
//!
//! No delivery callback is attached (librdkafka's opaque stays NULL, which confluent-kafka's
//! delivery-report callback skips): used for exactly_once only, where a failed delivery
//! fails the transaction's commit.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

const RTLD_NOW: c_int = 2;
const RTLD_NOLOAD: c_int = 4; // bind to the copy confluent-kafka loaded, never a second one
const RD_KAFKA_PRODUCER: c_int = 0;
const MSG_F_COPY: usize = 0x2;

// rd_kafka_vtype_t
const VTYPE_RKT: i32 = 2;
const VTYPE_PARTITION: i32 = 3;
const VTYPE_VALUE: i32 = 4;
const VTYPE_KEY: i32 = 5;
const VTYPE_MSGFLAGS: i32 = 7;
const VTYPE_TIMESTAMP: i32 = 8;
const VTYPE_HEADER: i32 = 9;
const MAX_HEADERS: usize = 8;

/// rd_kafka_vu_t: a tag, then a union librdkafka pads to 64 bytes (72 bytes in all).
#[repr(C)]
#[derive(Clone, Copy)]
struct Vu {
    vtype: i32,
    u: [usize; 8],
}

impl Vu {
    const fn new(vtype: i32, a: usize, b: usize, c: usize) -> Vu {
        Vu { vtype, u: [a, b, c, 0, 0, 0, 0, 0] }
    }
}

type Handle = *mut c_void;
type Error = *mut c_void;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}

/// The librdkafka functions used, from the library confluent-kafka already loaded.
struct Api {
    produceva: unsafe extern "C" fn(Handle, *const Vu, usize) -> Error,
    topic_new: unsafe extern "C" fn(Handle, *const c_char, *mut c_void) -> *mut c_void,
    topic_destroy: unsafe extern "C" fn(*mut c_void),
    name: unsafe extern "C" fn(Handle) -> *const c_char,
    kind: unsafe extern "C" fn(Handle) -> c_int,
    version: unsafe extern "C" fn() -> c_int,
    error_code: unsafe extern "C" fn(Error) -> c_int,
    error_string: unsafe extern "C" fn(Error) -> *const c_char,
    error_is_fatal: unsafe extern "C" fn(Error) -> c_int,
    error_is_retriable: unsafe extern "C" fn(Error) -> c_int,
    error_txn_requires_abort: unsafe extern "C" fn(Error) -> c_int,
    error_destroy: unsafe extern "C" fn(Error),
}

// Plain function pointers into a library that stays loaded for the life of the process.
unsafe impl Sync for Api {}
unsafe impl Send for Api {}

static API: OnceLock<(String, Api)> = OnceLock::new();

fn dl_error() -> String {
    let text = unsafe { dlerror() };
    if text.is_null() {
        return "unknown dlopen error".into();
    }
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

unsafe fn symbol<T: Copy>(lib: *mut c_void, name: &str) -> PyResult<T> {
    let cname = CString::new(name).expect("symbol names have no NUL");
    let address = dlsym(lib, cname.as_ptr());
    if address.is_null() {
        return Err(PyRuntimeError::new_err(format!("librdkafka has no {name}: {}", dl_error())));
    }
    Ok(std::mem::transmute_copy(&address))
}

unsafe fn load(path: &str) -> PyResult<Api> {
    let cpath = CString::new(path).map_err(|_| PyValueError::new_err("path has a NUL byte"))?;
    let lib = dlopen(cpath.as_ptr(), RTLD_NOW | RTLD_NOLOAD);
    if lib.is_null() {
        let why = dl_error();
        return Err(PyRuntimeError::new_err(format!("{path} is not loaded in this process: {why}")));
    }
    Ok(Api {
        produceva: symbol(lib, "rd_kafka_produceva")?,
        topic_new: symbol(lib, "rd_kafka_topic_new")?,
        topic_destroy: symbol(lib, "rd_kafka_topic_destroy")?,
        name: symbol(lib, "rd_kafka_name")?,
        kind: symbol(lib, "rd_kafka_type")?,
        version: symbol(lib, "rd_kafka_version")?,
        error_code: symbol(lib, "rd_kafka_error_code")?,
        error_string: symbol(lib, "rd_kafka_error_string")?,
        error_is_fatal: symbol(lib, "rd_kafka_error_is_fatal")?,
        error_is_retriable: symbol(lib, "rd_kafka_error_is_retriable")?,
        error_txn_requires_abort: symbol(lib, "rd_kafka_error_txn_requires_abort")?,
        error_destroy: symbol(lib, "rd_kafka_error_destroy")?,
    })
}

/// Bind to the librdkafka at `path` (already loaded by confluent-kafka); its version number
/// (rd_kafka_version()), for the caller to compare with confluent_kafka.libversion().
#[pyfunction]
pub fn bind_librdkafka(path: &str) -> PyResult<i64> {
    if API.get().is_none() {
        let api = unsafe { load(path) }?;
        let _ = API.set((path.to_owned(), api)); // or a concurrent first call bound one
    }
    let (bound, api) = API.get().expect("set above");
    if bound != path {
        return Err(PyRuntimeError::new_err(format!("rpt_native is bound to {bound}, not {path}")));
    }
    Ok(unsafe { (api.version)() } as i64)
}

/// A produce failure: (code, reason, fatal, retriable, txn_requires_abort), for KafkaError.
type Failure = (i32, String, bool, bool, bool);

/// The data topic's records of one producer. Keeps the Producer object alive (so its
/// librdkafka handle is), and a topic handle, released when this goes.
#[pyclass(frozen, module = "rpt_native")]
pub struct RecordSender {
    _producer: Py<PyAny>,
    rk: usize,
    rkt: usize,
}

impl Drop for RecordSender {
    fn drop(&mut self) {
        if let Some((_, api)) = API.get() {
            unsafe { (api.topic_destroy)(self.rkt as *mut c_void) };
        }
    }
}

fn api() -> PyResult<&'static Api> {
    API.get()
        .map(|(_, api)| api)
        .ok_or_else(|| PyRuntimeError::new_err("bind_librdkafka() was not called"))
}

/// The librdkafka handle of a confluent_kafka.Producer: its C object starts with the Python
/// object header, then `rd_kafka_t *rk`, then the error callback it was configured with.
/// That callback being `error_cb` is how the layout is confirmed before `rk` is used.
unsafe fn handle_of(producer: &Bound<'_, PyAny>, error_cb: &Bound<'_, PyAny>) -> Option<usize> {
    let words = producer.as_ptr() as *const usize;
    let rk = *words.add(2);
    let configured_error_cb = *words.add(3);
    (rk != 0 && configured_error_cb == error_cb.as_ptr() as usize).then_some(rk)
}

fn bytes_span(item: &Bound<'_, PyAny>, what: &str) -> PyResult<(usize, usize)> {
    let bytes = item
        .downcast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be bytes")))?;
    let data = bytes.as_bytes();
    Ok((data.as_ptr() as usize, data.len()))
}

#[pymethods]
impl RecordSender {
    /// producer: a confluent_kafka.Producer (exactly that type), error_cb: the very object
    /// its configuration's "error_cb" held, client_id: its "client.id", topic: where send()
    /// produces. Raises ValueError when the handle does not check out.
    #[new]
    fn new(
        producer: &Bound<'_, PyAny>,
        error_cb: &Bound<'_, PyAny>,
        client_id: &str,
        topic: &str,
    ) -> PyResult<Self> {
        let api = api()?;
        let Some(rk) = (unsafe { handle_of(producer, error_cb) }) else {
            return Err(PyValueError::new_err("not the Producer layout this build knows"));
        };
        let handle = rk as Handle;
        let name = unsafe { CStr::from_ptr((api.name)(handle)) }.to_string_lossy().into_owned();
        let kind = unsafe { (api.kind)(handle) };
        if kind != RD_KAFKA_PRODUCER || !name.starts_with(&format!("{client_id}#producer-")) {
            return Err(PyValueError::new_err(format!("handle {name:?} is not this producer")));
        }
        let ctopic = CString::new(topic).map_err(|_| PyValueError::new_err("topic has a NUL"))?;
        let rkt = unsafe { (api.topic_new)(handle, ctopic.as_ptr(), std::ptr::null_mut()) };
        if rkt.is_null() {
            return Err(PyValueError::new_err(format!("librdkafka refused topic {topic:?}")));
        }
        Ok(RecordSender { _producer: producer.clone().unbind(), rk, rkt: rkt as usize })
    }

    /// Produce records `start..` of values/keys (with headers, at timestamps if given, epoch
    /// ms, 0: the produce time) to `partition` (-1: the partitioner's choice). Returns (next,
    /// None) when all were queued, or (the index that was not, the failure): code -184 is a
    /// full local queue (poll, then send again from that index).
    #[pyo3(signature = (values, keys, headers, partition, timestamps, start = 0))]
    fn send(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyList>,
        keys: &Bound<'_, PyList>,
        headers: Option<&Bound<'_, PyList>>,
        partition: i32,
        timestamps: Option<&Bound<'_, PyList>>,
        start: usize,
    ) -> PyResult<(usize, Option<Failure>)> {
        let api = api()?;
        let n = values.len();
        if keys.len() != n || timestamps.is_some_and(|t| t.len() != n) {
            return Err(PyValueError::new_err("values, keys and timestamps differ in length"));
        }
        // Every pointer below is into a bytes object the caller's lists hold for this call.
        let mut records = Vec::with_capacity(n.saturating_sub(start));
        for i in start..n {
            let value = bytes_span(&values.get_item(i)?, "a value")?;
            let key = keys.get_item(i)?;
            let key = if key.is_none() { (0, 0) } else { bytes_span(&key, "a key")? };
            let stamp = match timestamps {
                Some(t) => t.get_item(i)?.extract::<i64>()?,
                None => 0,
            };
            records.push((value, key, stamp));
        }
        let mut names = Vec::new();
        let mut header_vus = Vec::new();
        for header in headers.map(|h| h.iter()).into_iter().flatten() {
            let pair = header.downcast::<PyTuple>()?;
            let name = CString::new(pair.get_item(0)?.extract::<String>()?)
                .map_err(|_| PyValueError::new_err("a header name has a NUL"))?;
            let (ptr, len) = bytes_span(&pair.get_item(1)?, "a header value")?;
            header_vus.push(Vu::new(VTYPE_HEADER, name.as_ptr() as usize, ptr, len));
            names.push(name);
        }
        if header_vus.len() > MAX_HEADERS {
            return Err(PyValueError::new_err(format!("more than {MAX_HEADERS} headers")));
        }
        let (rk, rkt) = (self.rk, self.rkt);
        let stamped = timestamps.is_some();
        let (sent, failure) = py.allow_threads(|| unsafe {
            produce_all(api, rk, rkt, partition, stamped, &records, &header_vus)
        });
        drop(names);
        Ok((start + sent, failure))
    }
}

type Record = ((usize, usize), (usize, usize), i64);

/// One rd_kafka_produceva per record; stops at the first it does not take.
unsafe fn produce_all(
    api: &Api,
    rk: usize,
    rkt: usize,
    partition: i32,
    stamped: bool,
    records: &[Record],
    headers: &[Vu],
) -> (usize, Option<Failure>) {
    let mut vus = [Vu::new(0, 0, 0, 0); 6 + MAX_HEADERS];
    vus[0] = Vu::new(VTYPE_RKT, rkt, 0, 0);
    vus[1] = Vu::new(VTYPE_PARTITION, partition as u32 as usize, 0, 0);
    vus[2] = Vu::new(VTYPE_MSGFLAGS, MSG_F_COPY, 0, 0);
    let mut count = 5;
    if stamped {
        count += 1;
    }
    vus[count..count + headers.len()].copy_from_slice(headers);
    count += headers.len();
    for (i, &((value, value_len), (key, key_len), stamp)) in records.iter().enumerate() {
        vus[3] = Vu::new(VTYPE_VALUE, value, value_len, 0);
        vus[4] = Vu::new(VTYPE_KEY, key, key_len, 0);
        if stamped {
            vus[5] = Vu::new(VTYPE_TIMESTAMP, stamp as usize, 0, 0);
        }
        let error = (api.produceva)(rk as Handle, vus.as_ptr(), count);
        if !error.is_null() {
            return (i, Some(failure(api, error)));
        }
    }
    (records.len(), None)
}

unsafe fn failure(api: &Api, error: Error) -> Failure {
    let text = (api.error_string)(error);
    let reason = if text.is_null() {
        String::new()
    } else {
        CStr::from_ptr(text).to_string_lossy().into_owned()
    };
    let out = (
        (api.error_code)(error),
        reason,
        (api.error_is_fatal)(error) != 0,
        (api.error_is_retriable)(error) != 0,
        (api.error_txn_requires_abort)(error) != 0,
    );
    (api.error_destroy)(error);
    out
}
