//! A tiny HTTP/1.1 server on 127.0.0.1 for download tests: serves files with
//! `HEAD`/`GET` and byte ranges, redirects, fixed error statuses, and can drop
//! a connection part-way through a body. It listens on two ports, `base` (the
//! hub) and `cdn_base` (another origin, like the hub's CDN), with the same
//! routes. Every request is logged. The server stops when dropped, and by
//! itself after two minutes at the latest.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a path answers.
#[derive(Clone)]
pub enum Route {
    /// File contents with extra headers; HEAD, GET and `Range` supported.
    File {
        body: Arc<Vec<u8>>,
        headers: Vec<(String, String)>,
        /// Close the connection after this many body bytes, for the first N GETs.
        drop_after: Option<usize>,
        drops_left: Arc<AtomicUsize>,
        /// Required `Authorization` value (401 otherwise).
        require_auth: Option<String>,
    },
    /// A status with headers and an empty body (redirects, errors).
    Status {
        code: u16,
        headers: Vec<(String, String)>,
    },
    /// A fixed body (e.g. JSON) with status 200.
    Text { body: String, content_type: String },
}

impl Route {
    pub fn file(body: Vec<u8>, headers: Vec<(String, String)>) -> Route {
        Route::File {
            body: Arc::new(body),
            headers,
            drop_after: None,
            drops_left: Arc::new(AtomicUsize::new(0)),
            require_auth: None,
        }
    }

    /// The first `times` GETs stop after `bytes` body bytes.
    pub fn dropping(self, bytes: usize, times: usize) -> Route {
        match self {
            Route::File {
                body,
                headers,
                require_auth,
                ..
            } => Route::File {
                body,
                headers,
                drop_after: Some(bytes),
                drops_left: Arc::new(AtomicUsize::new(times)),
                require_auth,
            },
            other => other,
        }
    }

    pub fn requiring(self, auth: &str) -> Route {
        match self {
            Route::File {
                body,
                headers,
                drop_after,
                drops_left,
                ..
            } => Route::File {
                body,
                headers,
                drop_after,
                drops_left,
                require_auth: Some(auth.to_string()),
            },
            other => other,
        }
    }
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query as requested.
    pub target: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

pub struct Server {
    pub base: String,
    /// A second origin serving the same routes.
    pub cdn_base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const LIFETIME: Duration = Duration::from_secs(120);

impl Server {
    pub fn start() -> Server {
        let bind = || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener.set_nonblocking(true).unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            (listener, base)
        };
        let (hub, base) = bind();
        let (cdn, cdn_base) = bind();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, log, stop) = (routes.clone(), log.clone(), stop.clone());
            thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
                    let mut idle = true;
                    for listener in [&hub, &cdn] {
                        if let Ok((stream, _)) = listener.accept() {
                            idle = false;
                            let (routes, log) = (routes.clone(), log.clone());
                            thread::spawn(move || {
                                let _ = handle(stream, &routes, &log);
                            });
                        }
                    }
                    if idle {
                        thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        };
        Server {
            base,
            cdn_base,
            routes,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    /// Logged requests of one method whose path starts with `prefix`.
    pub fn requests(&self, method: &str, prefix: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method == method && l.target.starts_with(prefix))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    log.lock().unwrap().push(Logged {
        method: method.clone(),
        target: target.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });
    let path = target.split('?').next().unwrap_or("").to_string();
    let route = routes.lock().unwrap().get(&path).cloned();
    let mut out = stream;
    let head_only = method == "HEAD";
    match route {
        None => respond(
            &mut out,
            404,
            &[("X-Error-Code".into(), "EntryNotFound".into())],
            b"",
            head_only,
        ),
        Some(Route::Status { code, headers }) => respond(&mut out, code, &headers, b"", head_only),
        Some(Route::Text { body, content_type }) => respond(
            &mut out,
            200,
            &[("Content-Type".into(), content_type)],
            body.as_bytes(),
            head_only,
        ),
        Some(Route::File {
            body,
            headers: extra,
            drop_after,
            drops_left,
            require_auth,
        }) => {
            if let Some(want) = require_auth {
                if headers.get("authorization") != Some(&want) {
                    return respond(&mut out, 401, &[], b"", head_only);
                }
            }
            let total = body.len();
            let mut extra = extra.clone();
            extra.push(("Accept-Ranges".into(), "bytes".into()));
            let (status, slice) = match headers.get("range").and_then(|r| parse_range(r, total)) {
                Some(Ok((start, end))) => {
                    extra.push((
                        "Content-Range".into(),
                        format!("bytes {start}-{}/{total}", end - 1),
                    ));
                    (206, &body[start..end])
                }
                Some(Err(())) => {
                    extra.push(("Content-Range".into(), format!("bytes */{total}")));
                    return respond(&mut out, 416, &extra, b"", head_only);
                }
                None => (200, &body[..]),
            };
            if !head_only && drop_after.is_some() && take_one(&drops_left) {
                let cut = drop_after.unwrap_or(0).min(slice.len());
                write_head(&mut out, status, &extra, slice.len())?;
                out.write_all(&slice[..cut])?;
                out.flush()?;
                return out.shutdown(Shutdown::Both);
            }
            respond(&mut out, status, &extra, slice, head_only)
        }
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// `bytes=S-` / `bytes=S-E` -> Ok((S, E+1)); unsatisfiable -> Err.
fn parse_range(value: &str, total: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: usize = start.parse().ok()?;
    let end: usize = if end.is_empty() {
        total
    } else {
        end.parse::<usize>().ok()? + 1
    };
    if start >= total {
        return Some(Err(()));
    }
    Some(Ok((start, end.min(total))))
}

fn write_head(
    out: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    len: usize,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
    let mut head =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    if !head_only {
        out.write_all(body)?;
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}
