//! Shared by the store and web-view end-to-end tests: a synthetic capture of a primary and its
//! mirror with secrets seeded in every place they can hide, the configuration that compares
//! them into a store, and helpers to run `parity-agent` and talk HTTP to `serve`.

#![allow(dead_code)]

#[path = "../../../tests/src/pcapgen.rs"]
pub mod pcapgen;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use pcapgen::{request, response, Capture, TcpConn};

pub const BEARER: &str = "s3cr3tBearerTok3nXYZ";
pub const COOKIE: &str = "c00kieVALUE42";
pub const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlX3NlY3JldA";
pub const EMAIL: &str = "jane.doe@example.com";
pub const CARD_P: &str = "4111 1111 1111 1111";
pub const CARD_M: &str = "5500 0055 5555 5559";
pub const PW_P: &str = "hunter2-primary-pw";
pub const PW_M: &str = "hunter2-mirror-pw";
pub const PW_FORM: &str = "formpass-9931";
pub const CUSTOM_P: &str = "SECRET-ABC-123";
pub const CUSTOM_M: &str = "SECRET-XYZ-999";
pub const SET_COOKIE_P: &str = "setc00kiePRIM";
pub const SET_COOKIE_M: &str = "setc00kieMIRR";

/// Every seeded secret, as the needle searched for in outputs. The e-mail address is searched
/// by its local part, the JWT by its header, cards with and without spaces.
pub fn needles() -> Vec<String> {
    let mut v: Vec<String> = [
        BEARER,
        COOKIE,
        "eyJhbGciOiJIUzI1NiJ9",
        "c2lnbmF0dXJlX3NlY3JldA",
        "jane.doe",
        "jane.doe%40",
        CARD_P,
        CARD_M,
        PW_P,
        PW_M,
        PW_FORM,
        CUSTOM_P,
        CUSTOM_M,
        SET_COOKIE_P,
        SET_COOKIE_M,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(CARD_P.replace(' ', ""));
    v.push(CARD_M.replace(' ', ""));
    v
}

/// The secrets found in `hay`.
pub fn leaks(hay: &[u8]) -> Vec<String> {
    needles()
        .into_iter()
        .filter(|n| hay.windows(n.len()).any(|w| w == n.as_bytes()))
        .collect()
}

/// Fail with `what` and the leaked secrets when `hay` holds any.
pub fn assert_clean(what: &str, hay: &[u8]) {
    let l = leaks(hay);
    assert!(l.is_empty(), "{what} leaks {l:?}");
}

pub const PRIMARY: &str = "10.1.0.1:8080";
pub const MIRROR: &str = "10.1.0.2:8080";
pub const PRIMARY_V6: &str = "[2001:db8::1]:8080";
pub const MIRROR_V6: &str = "[2001:db8::2]:8080";
pub const START_SECS: u64 = 1_764_345_600; // 2025-11-28 16:00:00 UTC

fn at(ms: u64) -> Duration {
    Duration::from_secs(START_SECS) + Duration::from_millis(ms)
}

/// One request sent to both sides and each side's response.
struct Mirrored {
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    primary: Vec<u8>,
    mirror: Vec<u8>,
}

fn json_response(status: u16, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    h.extend_from_slice(extra);
    response(
        status,
        if status == 200 { "OK" } else { "Unauthorized" },
        &h,
        body.as_bytes(),
    )
}

fn user_profile(card: &str, pw: &str, tax: &str, note: &str, gen: &str) -> String {
    format!(
        r#"{{"email":"{EMAIL}","card":"{card}","password":"{pw}","name":"Jane","tax":{tax},"note":"ref {note}","meta":{{"generated_at":"{gen}"}}}}"#
    )
}

fn order(id: u32, tax: &str) -> String {
    format!(
        r#"{{"id":{id},"items":[{{"sku":"A-{id}","qty":1,"price":9.99}},{{"sku":"B-{id}","qty":2,"price":4.5}}],"tax":{tax},"total":18.99,"currency":"EUR"}}"#
    )
}

fn scenario() -> Vec<Mirrored> {
    let mut v = Vec::new();
    // Every secret at once: in the path, a query parameter, request headers, response headers,
    // JSON values and names, and a custom pattern.
    v.push(Mirrored {
        method: "GET",
        target: format!("/api/users/{EMAIL}/profile?access_token={JWT}&page=1"),
        headers: vec![
            ("Authorization", format!("Bearer {BEARER}")),
            ("Cookie", format!("session={COOKIE}")),
        ],
        body: vec![],
        primary: json_response(
            200,
            &[("Set-Cookie", &format!("sid={SET_COOKIE_P}; HttpOnly"))],
            &user_profile(CARD_P, PW_P, "1.2", CUSTOM_P, "t1"),
        ),
        mirror: json_response(
            200,
            &[("Set-Cookie", &format!("sid={SET_COOKIE_M}; HttpOnly"))],
            &user_profile(CARD_M, PW_M, "1.24", CUSTOM_M, "t2"),
        ),
    });
    // A form login whose request body holds a password; statuses and text bodies differ.
    v.push(Mirrored {
        method: "POST",
        target: "/api/login".into(),
        headers: vec![(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )],
        body: format!("user=jane&password={PW_FORM}").into_bytes(),
        primary: response(
            200,
            "OK",
            &[("Content-Type", "text/plain")],
            format!("Welcome {EMAIL}\nsession ok\n").as_bytes(),
        ),
        mirror: response(
            401,
            "Unauthorized",
            &[("Content-Type", "text/plain")],
            format!("Denied for {EMAIL}\nsession refused\n").as_bytes(),
        ),
    });
    // An object keyed by e-mail address: the secret is in the difference's path.
    v.push(Mirrored {
        method: "GET",
        target: "/api/teams/7".into(),
        headers: vec![],
        body: vec![],
        primary: json_response(
            200,
            &[],
            &format!(r#"{{"members":{{"{EMAIL}":{{"role":"admin"}}}}}}"#),
        ),
        mirror: json_response(
            200,
            &[],
            &format!(r#"{{"members":{{"{EMAIL}":{{"role":"owner"}}}}}}"#),
        ),
    });
    // Orders: 2 of 8 diverge on tax.
    for id in 1..=8u32 {
        let tax_m = if id % 4 == 0 { "1.90" } else { "1.52" };
        v.push(Mirrored {
            method: "GET",
            target: format!("/api/orders/{id}"),
            headers: vec![],
            body: vec![],
            primary: json_response(200, &[], &order(id, "1.52")),
            mirror: json_response(200, &[], &order(id, tax_m)),
        });
    }
    // Health checks: always identical.
    for _ in 0..10 {
        v.push(Mirrored {
            method: "GET",
            target: "/api/health".into(),
            headers: vec![],
            body: vec![],
            primary: json_response(200, &[], r#"{"status":"ok"}"#),
            mirror: json_response(200, &[], r#"{"status":"ok"}"#),
        });
    }
    v
}

/// Write the capture: every mirrored exchange on its own connection to each side (the mirror a
/// millisecond later, a little slower), one primary request the mirror never sees (unmatched),
/// and one diverging pair over IPv6. Returns the number of compared pairs expected.
pub fn write_capture(path: &Path) -> usize {
    let mut cap = Capture::new();
    let list = scenario();
    let n = list.len();
    for (i, m) in list.into_iter().enumerate() {
        let id = format!("req-{i:03}");
        let mut headers: Vec<(&str, &str)> = vec![("Host", "shop.internal"), ("x-request-id", &id)];
        for (k, v) in &m.headers {
            headers.push((k, v));
        }
        let req = request(m.method, &m.target, &headers, &m.body);
        let t0 = 1000 + i as u64 * 20;
        let client_p: SocketAddr = format!("10.1.0.100:{}", 30000 + i).parse().unwrap();
        let client_m: SocketAddr = format!("10.1.0.101:{}", 30000 + i).parse().unwrap();
        let mut p = TcpConn::new(client_p, PRIMARY.parse().unwrap(), at(t0));
        let mut q = TcpConn::new(client_m, MIRROR.parse().unwrap(), at(t0 + 1));
        for (c, resp, latency) in [
            (&mut p, &m.primary, Duration::from_millis(2)),
            (&mut q, &m.mirror, Duration::from_millis(3)),
        ] {
            c.handshake(&mut cap);
            c.exchange(&mut cap, &req, resp, latency);
            c.close(&mut cap);
        }
    }
    // The mirror never answers this id's request: it is not compared (timeout at the end).
    let mut lone = TcpConn::new(
        "10.1.0.100:29999".parse().unwrap(),
        PRIMARY.parse().unwrap(),
        at(900),
    );
    lone.handshake(&mut cap);
    let req = request(
        "GET",
        "/api/orders/404",
        &[("Host", "shop.internal"), ("x-request-id", "req-lonely")],
        b"",
    );
    lone.exchange(
        &mut cap,
        &req,
        &json_response(200, &[], &order(404, "1.52")),
        Duration::from_millis(2),
    );
    lone.close(&mut cap);
    // IPv6 pair, one divergence, segments cut at a small MSS.
    let req = request(
        "GET",
        "/search?q=shoes",
        &[("Host", "search.internal"), ("x-request-id", "v6-1")],
        b"",
    );
    let big_p = format!(
        r#"{{"hits":[{}],"took":3}}"#,
        vec![r#"{"name":"shoe","score":0.5}"#; 40].join(",")
    );
    let big_m = big_p.replace(r#""took":3"#, r#""took":4"#);
    let mut p = TcpConn::new(
        "[2001:db8::100]:40000".parse().unwrap(),
        PRIMARY_V6.parse().unwrap(),
        at(2000),
    )
    .with_mss(536);
    let mut q = TcpConn::new(
        "[2001:db8::101]:40000".parse().unwrap(),
        MIRROR_V6.parse().unwrap(),
        at(2001),
    )
    .with_mss(536);
    p.handshake(&mut cap);
    p.exchange(
        &mut cap,
        &req,
        &json_response(200, &[], &big_p),
        Duration::from_millis(4),
    );
    p.close(&mut cap);
    q.handshake(&mut cap);
    q.exchange(
        &mut cap,
        &req,
        &json_response(200, &[], &big_m),
        Duration::from_millis(5),
    );
    q.close(&mut cap);
    cap.write(path).unwrap();
    n + 1
}

/// Records expected in the store: the diverged pairs (profile, login, teams, 2 orders, the
/// IPv6 search) plus the matched ones kept by `keep_matched`.
pub const DIVERGED: usize = 6;

/// A configuration comparing the two pairs into a store at `db`.
pub fn config_text(db: &Path, keep_matched: f64) -> String {
    format!(
        r#"
[[pair]]
name = "checkout"
primary = "{PRIMARY}"
mirror = "{MIRROR}"
ignore_headers = ["date"]
endpoints = ["GET /api/orders/{{id}}"]

[[pair.rule]]
path = "$.meta.generated_at"
action = "ignore"

[[pair]]
name = "search"
primary = "{PRIMARY_V6}"
mirror = "{MIRROR_V6}"

[store]
path = "{}"
keep_matched = {keep_matched}

[[mask]]
regex = "SECRET-[A-Z]+-[0-9]+"
"#,
        db.display()
    )
}

/// A scenario on disk: capture, configuration, store path.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub pcap: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    pub compared: usize,
}

impl Fixture {
    pub fn new(keep_matched: f64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("mirror.pcap");
        let compared = write_capture(&pcap);
        let db = dir.path().join("store/parity.db");
        let config = dir.path().join("parity.toml");
        std::fs::write(&config, config_text(&db, keep_matched)).unwrap();
        Fixture {
            dir,
            pcap,
            config,
            db,
            compared,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_parity-agent")
}

/// Run `parity-agent args`, with `NO_COLOR` and `RUST_LOG` cleared unless given.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("RUST_LOG")
        .env_remove("PARITY_API_TOKEN")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `replay --config` of the fixture with extra arguments; panics unless it exits 0.
pub fn replay(f: &Fixture, extra: &[&str]) -> Output {
    let mut args = vec!["replay", "--quiet", "--config", f.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(f.pcap.to_str().unwrap());
    let out = run(&args, &[]);
    assert!(
        out.status.success(),
        "replay failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running `parity-agent serve`, killed on drop; its stderr is collected.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Server {
    /// Start `serve --db DB --listen LISTEN` plus `extra`, and wait for its address.
    pub fn start(db: &Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut c = Command::new(bin());
        c.args(["serve", "--db", db.to_str().unwrap(), "--listen", listen])
            .args(extra)
            .env_remove("PARITY_API_TOKEN")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = buf.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            let mut sent = false;
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                keep.lock().unwrap().extend_from_slice(line.as_bytes());
                if !sent {
                    if let Some(rest) = line.split("on http://").nth(1) {
                        let addr = rest.split('/').next().unwrap_or("").trim().to_string();
                        if let Ok(a) = addr.parse::<SocketAddr>() {
                            let _ = tx.send(a);
                            sent = true;
                        }
                    }
                }
                line.clear();
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not start: {}",
                    String::from_utf8_lossy(&buf.lock().unwrap())
                );
            }
        };
        // `0.0.0.0:port` is reached through loopback.
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::new("127.0.0.1".parse().unwrap(), addr.port())
        } else {
            addr
        };
        Server {
            child,
            addr,
            stderr: buf,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        http_get(self.addr, path, None)
    }

    pub fn get_with(&self, path: &str, token: &str) -> Reply {
        http_get(self.addr, path, Some(token))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stop the server and return what it wrote to stderr.
    pub fn stop(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let out = self.stderr.lock().unwrap().clone();
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Everything received, for leak checks.
    pub fn raw(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (n, h) in &self.headers {
            v.extend_from_slice(format!("{n}: {h}\n").as_bytes());
        }
        v.extend_from_slice(&self.body);
        v
    }
}

/// A GET over a fresh connection (`Connection: close`), with a bearer token when given.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .expect("a chunk size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(eol + 2..eol + 2 + size).expect("a whole chunk"));
            rest = rest.get(eol + 4 + size..).unwrap_or_default();
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// Where tests leave artifacts (screenshots): `<workspace>/target/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The database file and its WAL (and shared-memory index), as bytes.
pub fn store_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            all.extend(b);
        }
    }
    all
}
