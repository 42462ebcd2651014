//! The `/metrics` endpoint: a minimal HTTP/1.1 server on one housekeeping thread.
//!
//! One connection at a time, each bounded (8 KiB of request head, 2 s to send it, 2 s to take
//! the page), so a slow or hostile client delays a scrape by at most that and never grows
//! memory. A scrape calls the page source, which reads published counters and snapshots only:
//! never the control loop's live state, never a worker, never the flow table.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::text::{Family, Format, encode};

/// Longest request head (request line and headers) accepted.
const MAX_HEAD: u64 = 8 * 1024;
/// How long a client may take to send its request, and to take the page.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the families of one scrape (the endpoint's own counters are passed in).
pub type Source = dyn Fn(&mut Vec<Family>, &HttpStats) + Send + Sync;

/// What the endpoint counts about itself.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Pages served.
    pub scrapes: AtomicU64,
    /// Requests refused: malformed, too long, too slow, wrong method or path.
    pub bad_requests: AtomicU64,
    /// Pages built from an older snapshot because a fresh one did not come in time.
    pub stale: AtomicU64,
}

/// A running endpoint; dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<HttpStats>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `source` on `listener` (bound by the caller, so that a bad address is refused
    /// before anything else starts) from a new thread named `isopath-metrics`; `on_start` runs
    /// first on that thread (the caller's affinity mask for housekeeping threads).
    ///
    /// # Errors
    /// The listener's address cannot be read, or the thread not started.
    pub fn spawn(
        listener: TcpListener,
        source: Arc<Source>,
        on_start: impl FnOnce() + Send + 'static,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(HttpStats::default());
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("isopath-metrics".into())
            .spawn(move || {
                on_start();
                serve(&listener, &*source, &s, &st);
            })?;
        Ok(Self {
            addr,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port is the kernel's choice when asked for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its own counters.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, source: &Source, stop: &AtomicBool, stats: &HttpStats) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let timed = conn
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)));
        if timed.is_err() || answer(&conn, source, stats).is_err() {
            stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        let _ = conn.shutdown(Shutdown::Write);
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `GET /metrics` (or `HEAD`), with its `Accept` header.
    Metrics {
        head_only: bool,
        accept: Option<String>,
    },
    /// Anything else: the status line to answer with.
    Refuse(&'static str),
}

/// Reads one request head from `r`.
pub(crate) fn read_request(r: impl Read) -> io::Result<Request> {
    let mut r = BufReader::new(r.take(MAX_HEAD));
    // Bytes, not read_line: a head that is not UTF-8 gets a 400 like any other bad request.
    let mut next_line = || -> io::Result<Option<String>> {
        let mut b = Vec::new();
        Ok((r.read_until(b'\n', &mut b)? > 0).then(|| String::from_utf8_lossy(&b).into_owned()))
    };
    let line = next_line()?.unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    if version.is_none_or(|v| !v.starts_with("HTTP/1.")) {
        return Ok(Request::Refuse("400 Bad Request"));
    }
    let mut accept = None;
    loop {
        let Some(h) = next_line()? else {
            // The head ended without its blank line: cut off or too long.
            return Ok(Request::Refuse("400 Bad Request"));
        };
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("accept")
        {
            accept = Some(v.trim().to_string());
        }
    }
    let head_only = match method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Ok(Request::Refuse("405 Method Not Allowed")),
    };
    // The path, without a query string.
    if path.map(|p| p.split('?').next().unwrap_or(p)) != Some("/metrics") {
        return Ok(Request::Refuse("404 Not Found"));
    }
    Ok(Request::Metrics { head_only, accept })
}

/// Answers one request on `conn` (a TCP connection with its timeouts set, or a test's pipe).
fn answer<S>(mut conn: S, source: &Source, stats: &HttpStats) -> io::Result<()>
where
    S: Read + Write,
{
    let req = read_request(&mut conn)?;
    let (status, ctype, body, head_only) = match req {
        Request::Metrics { head_only, accept } => {
            let format = Format::negotiate(accept.as_deref());
            let mut fams = Vec::new();
            source(&mut fams, stats);
            let mut body = String::new();
            encode(&fams, format, &mut body);
            stats.scrapes.fetch_add(1, Ordering::Relaxed);
            ("200 OK", format.content_type(), body, head_only)
        }
        Request::Refuse(s) => {
            stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            (s, "text/plain; charset=utf-8", format!("{s}\n"), false)
        }
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_bad_ones_refused() {
        let r = read_request(&b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n"[..]).unwrap();
        assert_eq!(
            r,
            Request::Metrics {
                head_only: false,
                accept: Some("application/openmetrics-text".into())
            }
        );
        let r = read_request(&b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"[..]).unwrap();
        assert_eq!(
            r,
            Request::Metrics {
                head_only: true,
                accept: None
            }
        );
        for (req, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            (b"GET /metrics\r\n\r\n", "400 Bad Request"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", "400 Bad Request"),
            (b"\x00\xff garbage", "400 Bad Request"),
        ] {
            assert_eq!(read_request(req).unwrap(), Request::Refuse(want), "{req:?}");
        }
        // A head longer than the bound is cut off, never read to the end.
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', 20_000));
        assert_eq!(
            read_request(&long[..]).unwrap(),
            Request::Refuse("400 Bad Request")
        );
    }

    #[test]
    fn a_scrape_gets_the_page_in_the_negotiated_format() {
        // A socket pair stands in for the TCP connection (unit tests stay off every network
        // interface; the lab test scrapes the real endpoint with a real Prometheus).
        let src = |f: &mut Vec<Family>, _: &HttpStats| {
            f.push(Family::counter("t_frames", "Frames.").with(&[("port", "up0")], 7u64));
        };
        let stats = HttpStats::default();
        for (accept, ctype, tail) in [
            (
                "",
                "text/plain; version=0.0.4",
                "t_frames_total{port=\"up0\"} 7\n",
            ),
            (
                "Accept: application/openmetrics-text; version=1.0.0\r\n",
                "application/openmetrics-text; version=1.0.0",
                "t_frames_total{port=\"up0\"} 7\n# EOF\n",
            ),
        ] {
            let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            a.write_all(format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{accept}\r\n").as_bytes())
                .unwrap();
            answer(&b, &src, &stats).unwrap();
            drop(b);
            let mut page = String::new();
            a.read_to_string(&mut page).unwrap();
            assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
            assert!(page.contains(&format!("Content-Type: {ctype}")), "{page}");
            assert!(page.ends_with(tail), "{page}");
        }
        assert_eq!(stats.scrapes.load(Ordering::Relaxed), 2);
    }
}
