//! The shipper's native fast path: a window of an NGINX access log into the bulk request
//! lines of its events, byte for byte as the Python path writes them
//! (`hubkeeper.shippers.sources`), for the lines that need nothing but the usual. A line
//! that is anything else (not in the format, not plain printable ASCII, holding something
//! for the redactor, a time that is no real instant, too long) ends the fast path's work:
//! the Python path reads on from it.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The fields of an access line (`combined` format), as `NginxAccessParser` reads them.
struct Access<'a> {
    line: &'a [u8],
    ip: &'a [u8],
    user: &'a [u8],
    when: &'a [u8],
    request: &'a [u8],
    status: u32,
    size: Option<u64>,
    referrer: &'a [u8],
    agent: &'a [u8],
}

fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, b| n * 10 + u64::from(b - b'0')))
}

fn find(line: &[u8], from: usize, byte: u8) -> Option<usize> {
    memchr::memchr(byte, line.get(from..)?).map(|k| from + k)
}

fn expect(line: &[u8], at: usize, literal: &[u8]) -> Option<usize> {
    (line.get(at..at + literal.len())? == literal).then_some(at + literal.len())
}

/// `dd/Mon/yyyy:HH:MM:SS [+-]zzzz`, as the pattern's `\d` and `\w` take it (ASCII).
fn time_shaped(when: &[u8]) -> bool {
    when.len() == 26
        && when.iter().enumerate().all(|(k, &b)| match k {
            2 | 6 => b == b'/',
            11 | 14 | 17 => b == b':',
            20 => b == b' ',
            21 => b == b'+' || b == b'-',
            3..=5 => b.is_ascii_alphanumeric() || b == b'_',
            _ => b.is_ascii_digit(),
        })
}

fn printable(line: &[u8]) -> bool {
    // (a fold, not `all`: without its early exit the check is vectorized)
    line.iter().fold(true, |printable, &b| {
        printable & (b.wrapping_sub(0x20) < 0x5f)
    })
}

/// Whether a printable ASCII line would continue the event before it, as Python's
/// `is_continuation` says of a line no parser takes: empty, indented, a closing bracket,
/// a traceback's own lines, or an exception's name (`[\w.]+(?:Error|...)\b`).
fn continues(line: &[u8]) -> bool {
    const PHRASES: [&[u8]; 3] = [
        b"Traceback (most recent call last)",
        b"During handling of the above exception",
        b"The above exception was the direct cause",
    ];
    const ENDINGS: [&[u8]; 4] = [b"Error", b"Exception", b"Exit", b"Interrupt"];
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let name = line.iter().take_while(|&&b| word(b) || b == b'.').count();
    line.first().is_none_or(|b| b" }])".contains(b))
        || PHRASES.iter().any(|phrase| line.starts_with(phrase))
        || (1..name).any(|at| {
            ENDINGS.iter().any(|ending| {
                let end = at + ending.len();
                line[at..].starts_with(ending) && line.get(end).is_none_or(|&b| !word(b))
            })
        })
}

/// The line's fields if Python's `_NGINX_ACCESS` matches it (only printable ASCII is
/// taken here, where `\S` is every byte but the space).
fn parse(line: &[u8]) -> Option<Access<'_>> {
    if !printable(line) {
        return None;
    }
    let ip_end = find(line, 0, b' ').filter(|&k| k > 0)?;
    let user_start = expect(line, ip_end, b" - ")?;
    let user_end = find(line, user_start, b' ').filter(|&k| k > user_start)?;
    let when_start = expect(line, user_end, b" [")?;
    let when = line.get(when_start..when_start + 26)?;
    if !time_shaped(when) {
        return None;
    }
    let request_start = expect(line, when_start + 26, b"] \"")?;
    let request_end = find(line, request_start, b'"')?;
    let status_start = expect(line, request_end, b"\" ")?;
    let status = line.get(status_start..status_start + 3)?;
    let size_start = expect(line, status_start + 3, b" ")?;
    let size_end = find(line, size_start, b' ')?;
    let size = &line[size_start..size_end];
    let size = if size == b"-" {
        None
    } else if size.len() <= 18 {
        Some(digits(size)?)
    } else {
        return None;
    };
    let referrer_start = expect(line, size_end, b" \"")?;
    let referrer_end = find(line, referrer_start, b'"')?;
    let agent_start = expect(line, referrer_end, b"\" \"")?;
    let agent_end = find(line, agent_start, b'"')?;
    Some(Access {
        line,
        ip: &line[..ip_end],
        user: &line[user_start..user_end],
        when,
        request: &line[request_start..request_end],
        status: digits(status)? as u32,
        size,
        referrer: &line[referrer_start..referrer_end],
        agent: &line[agent_start..agent_end],
    })
}

fn leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A UTC instant: year, month, day, hour, minute, second.
type Instant = (i64, i64, i64, i64, i64, i64);

/// The line's time in UTC as `_nginx_time` writes it, if `valid_timestamp` takes that (a
/// real instant, years 1-9999; 1000-9999 once moved by a zone, which the C library's
/// `%Y` would not pad).
fn utc_time(when: &[u8]) -> Option<Instant> {
    let number = |from: usize, to: usize| digits(&when[from..to]).map(|n| n as i64);
    let month = MONTHS.iter().position(|m| &when[3..6] == *m)? as i64 + 1;
    let (day, year) = (number(0, 2)?, number(7, 11)?);
    let (hour, minute, second) = (number(12, 14)?, number(15, 17)?, number(18, 20)?);
    let real = year >= 1
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !real {
        return None;
    }
    let (zone_hours, zone_minutes) = (number(22, 24)?, number(24, 26)?);
    if zone_hours == 0 && zone_minutes == 0 {
        return Some((year, month, day, hour, minute, second));
    }
    let sign = if when[21] == b'+' { 1 } else { -1 };
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let utc = local - sign * (zone_hours * 3600 + zone_minutes * 60);
    let (days, seconds) = (utc.div_euclid(86_400), utc.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    (1000..=9999).contains(&year).then_some((
        year,
        month,
        day,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
    ))
}

/// A JSON string of printable ASCII (what `parse` takes), as orjson writes it.
fn push_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let mut rest = text;
    while let Some(k) = memchr::memchr2(b'"', b'\\', rest) {
        out.extend_from_slice(&rest[..k]);
        out.extend_from_slice(&[b'\\', rest[k]]);
        rest = &rest[k + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// `value` in decimal, at least `width` digits.
fn push_decimal(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let (mut value, mut k) = (value, digits.len());
    while value > 0 || digits.len() - k < width.max(1) {
        k -= 1;
        digits[k] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[k..]);
}

/// `,"name":`, a field's key after the one before it.
fn push_key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    push_key(out, name);
    push_string(out, value);
}

fn push_number(out: &mut Vec<u8>, name: &str, value: u64) {
    push_key(out, name);
    push_decimal(out, value, 1);
}

/// The redaction screen's test (`Redactor.suspect`), for printable ASCII: a line may hold
/// a secret if, lowered, it holds one of the probes, or if it holds both `://` and `@` (a
/// password in a URL; more often than `Redactor.suspect` says so, which only sends such a
/// line to the Python path).
struct Screen {
    probes: Vec<memchr::memmem::Finder<'static>>,
    lowered: Vec<u8>,
}

impl Screen {
    fn new(probes: &[Vec<u8>]) -> Self {
        let probes = probes
            .iter()
            .map(|probe| memchr::memmem::Finder::new(probe).into_owned());
        Screen {
            probes: probes.collect(),
            lowered: Vec::new(),
        }
    }

    fn suspect(&mut self, line: &[u8]) -> bool {
        if memchr::memmem::find(line, b"://").is_some() && memchr::memchr(b'@', line).is_some() {
            return true;
        }
        self.lowered.clear();
        self.lowered.extend(line.iter().map(u8::to_ascii_lowercase));
        self.probes
            .iter()
            .any(|probe| probe.find(&self.lowered).is_some())
    }
}

/// What every event of the window shares: the file's key, its fields, where they go.
struct Target<'a> {
    id_prefix: &'a str,
    tail_json: &'a [u8],
    index_prefix: &'a str, // `{prefix}-{dataset}-`: the day follows
    dataset_json: &'a [u8],
}

/// The event's bulk request lines, as `Files._document` writes the usual event.
fn bulk_lines(
    access: &Access,
    time: Instant,
    index: &str,
    id: &str,
    start: u64,
    target: &Target,
) -> Vec<u8> {
    let (year, month, day, hour, minute, second) = time;
    let mut out = Vec::with_capacity(access.line.len() * 2 + target.tail_json.len() + 400);
    out.extend_from_slice(b"{\"create\":{\"_index\":\"");
    out.extend_from_slice(index.as_bytes());
    out.extend_from_slice(b"\",\"_id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\"}}\n{\"@timestamp\":\"");
    for (value, width, after) in [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (hour, 2, b':'),
        (minute, 2, b':'),
        (second, 2, b'.'),
    ] {
        push_decimal(&mut out, value as u64, width);
        out.push(after);
    }
    out.extend_from_slice(b"000Z\"");
    push_field(&mut out, "message", access.line);
    push_field(&mut out, "client.ip", access.ip);
    push_number(
        &mut out,
        "http.response.status_code",
        u64::from(access.status),
    );
    if access.user != b"-" {
        push_field(&mut out, "user.name", access.user);
    }
    let mut parts = access.request.split(|&b| b == b' ');
    let three = (parts.next(), parts.next(), parts.next(), parts.next());
    if let (Some(method), Some(uri), Some(version), None) = three {
        push_field(&mut out, "http.request.method", method);
        push_field(&mut out, "url.original", uri);
        match uri.iter().position(|&b| b == b'?') {
            Some(q) => {
                push_field(&mut out, "url.path", &uri[..q]);
                push_field(&mut out, "url.query", &uri[q + 1..]);
            }
            None => push_field(&mut out, "url.path", uri),
        }
        push_field(
            &mut out,
            "http.version",
            version.strip_prefix(b"HTTP/").unwrap_or(version),
        );
    } else if !access.request.is_empty() && access.request != b"-" {
        push_field(&mut out, "url.original", access.request);
    }
    if let Some(size) = access.size {
        push_number(&mut out, "http.response.body.bytes", size);
    }
    if access.referrer != b"-" {
        push_field(&mut out, "http.request.referrer", access.referrer);
    }
    if access.agent != b"-" {
        push_field(&mut out, "user_agent.original", access.agent);
    }
    push_key(&mut out, "event.dataset");
    out.extend_from_slice(target.dataset_json);
    out.extend_from_slice(target.tail_json);
    push_decimal(&mut out, start, 1);
    out.extend_from_slice(b"}\n");
    out
}

/// A line with its newline, without it; None for the partial last piece and a line longer
/// than `max_bytes` (which the Python path cuts and tags).
fn complete_line((at, piece): (usize, &[u8]), max_bytes: usize) -> Option<(usize, &[u8])> {
    piece
        .strip_suffix(b"\n")
        .filter(|line| line.len() <= max_bytes)
        .map(|line| (at, line))
}

/// An event ready to be written: its line's offsets in the file (start, end), its index
/// (a position in the window's list of them), its id and its bulk lines.
struct Ready {
    start: u64,
    end: u64,
    index: usize,
    id: String,
    lines: Vec<u8>,
}

/// The events of the complete lines of `data` (the file's bytes from `position`) that the
/// fast path can write, from the first line on; their indices; where to read on (the start
/// of the first line it left); and, if there is one, the end of the next line after that
/// one that it could read: the Python path reads up to there (its events but that line,
/// which it keeps pending) and the fast path goes on from that line. A line is written
/// only once the next one is known to start an event (one that does not may continue it);
/// the last line stays pending, as in the Python path, unless `flush` and `data` reaches
/// `size`, the file's end.
fn fast_events(
    data: &[u8],
    screen: &mut Screen,
    position: u64,
    size: u64,
    flush: bool,
    max_bytes: usize,
    target: &Target,
) -> (Vec<Ready>, Vec<String>, u64, Option<u64>) {
    let (mut ready, mut indices) = (Vec::new(), Vec::<String>::new());
    let mut day = (0, 0, 0);
    let mut lines = data
        .split_inclusive(|&b| b == b'\n')
        .scan(0usize, |start, piece| {
            let at = *start;
            *start += piece.len();
            Some((at, piece))
        });
    let parsed =
        |piece| complete_line(piece, max_bytes).and_then(|(at, line)| parse(line).map(|a| (at, a)));
    let ends = |(at, access): (usize, Access)| position + (at + access.line.len() + 1) as u64;
    let mut current = lines.next().and_then(parsed);
    let mut resume = position;
    let until = loop {
        let Some((at, access)) = current else {
            break lines.find_map(parsed).map(ends); // the first line: not the fast path's
        };
        resume = position + at as u64;
        let end = at + access.line.len() + 1;
        let next = lines.next();
        let following = next.and_then(parsed);
        let time = utc_time(access.when).filter(|_| !screen.suspect(access.line));
        let flushed = next.is_none() && flush && position + end as u64 == size;
        let ended = following.is_some()
            || flushed
            || next
                .and_then(|piece| complete_line(piece, max_bytes))
                .is_some_and(|(_, line)| printable(line) && !continues(line));
        let Some(time) = time.filter(|_| ended) else {
            break following.or_else(|| lines.find_map(parsed)).map(ends);
        };
        if (time.0, time.1, time.2) != day || indices.is_empty() {
            day = (time.0, time.1, time.2);
            let (year, month, date) = day;
            indices.push(format!(
                "{}{year:04}.{month:02}.{date:02}",
                target.index_prefix
            ));
        }
        let start = position + at as u64;
        let id = format!("{}{start:012x}", target.id_prefix);
        let bulk = bulk_lines(
            &access,
            time,
            &indices[indices.len() - 1],
            &id,
            start,
            target,
        );
        ready.push(Ready {
            start,
            end: position + end as u64,
            index: indices.len() - 1,
            id,
            lines: bulk,
        });
        resume = position + end as u64;
        if following.is_none() {
            break lines.find_map(parsed).map(ends); // (the next line, if any, is Python's)
        }
        current = following;
    };
    (ready, indices, resume, until)
}

/// A window's events for Python: `(start, end, index, id, lines)` each.
type Events<'py> = Vec<(
    u64,
    u64,
    Bound<'py, PyString>,
    Bound<'py, PyString>,
    Bound<'py, PyBytes>,
)>;

/// Python's face of `fast_events`: the events, the offset to read on from, and where the
/// Python path reads up to (None: a window's worth). A panic (a bug) leaves the whole
/// window to the Python path rather than stopping the shipper.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn access_events<'py>(
    py: Python<'py>,
    data: &[u8],
    probes: Vec<Vec<u8>>,
    position: u64,
    size: u64,
    flush: bool,
    max_bytes: usize,
    id_prefix: &str,
    tail_json: &[u8],
    index_prefix: &str,
    dataset_json: &[u8],
) -> (Events<'py>, u64, Option<u64>) {
    let target = Target {
        id_prefix,
        tail_json,
        index_prefix,
        dataset_json,
    };
    let found = std::panic::catch_unwind(|| {
        let screen = &mut Screen::new(&probes);
        fast_events(data, screen, position, size, flush, max_bytes, &target)
    });
    let (ready, indices, resume, until) = found.unwrap_or((Vec::new(), Vec::new(), position, None));
    let indices: Vec<_> = indices.iter().map(|name| PyString::new(py, name)).collect();
    let events = ready
        .into_iter()
        .map(|event| {
            let id = PyString::new(py, &event.id);
            let lines = PyBytes::new(py, &event.lines);
            (
                event.start,
                event.end,
                indices[event.index].clone(),
                id,
                lines,
            )
        })
        .collect();
    (events, resume, until)
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(access_events, module)?)
}
