//! Live capture end to end: `parity-agent run` with eBPF against real servers and clients.
//!
//! Each test creates its own namespaces, veth pairs and cgroups (removed even when it fails),
//! sends traffic only to loopback or to its namespaces, and checks the exchange records the
//! agent wrote against what the clients sent and received: same count, methods, targets,
//! statuses and SHA-256 of every request and response body.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use parity_tests::agent::{Agent, AgentOpts};
use parity_tests::env;
use parity_tests::fixture::{self, pattern, sha256_hex};
use parity_tests::http1::{encode_request, Client, Got};
use parity_tests::netns::{self, Cgroup, VethPair};
use serde_json::Value;

/// What a client did: one entry per exchange.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    method: String,
    uri: String,
    status: u16,
    req_sha: String,
    resp_sha: String,
    interim: Vec<u16>,
}

fn seen(method: &str, uri: &str, req_body: &[u8], got: &Got) -> Seen {
    Seen {
        method: method.into(),
        uri: uri.into(),
        status: got.status,
        req_sha: sha256_hex(req_body),
        resp_sha: sha256_hex(&got.body),
        interim: got.interim.clone(),
    }
}

fn from_record(r: &Value) -> Seen {
    Seen {
        method: r["request"]["method"].as_str().unwrap_or("").into(),
        uri: r["request"]["uri"].as_str().unwrap_or("").into(),
        status: r["response"]["status"].as_u64().unwrap_or(0) as u16,
        req_sha: r["request"]["body_sha256"].as_str().unwrap_or("").into(),
        resp_sha: r["response"]["body_sha256"].as_str().unwrap_or("").into(),
        interim: r["interim"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64())
                    .map(|v| v as u16)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The scenario of the issue: keep-alive, chunked bodies, bodies of 5 MB, pipelining and
/// 100-continue, against `server`.
async fn scenario(server: SocketAddr) -> Result<Vec<Seen>> {
    let mut out = Vec::new();
    let mut c = Client::connect(server).await?;
    for (m, uri, body) in [
        ("GET", "/bytes/100".to_string(), Vec::new()),
        ("GET", "/chunked/20000".to_string(), Vec::new()),
        ("POST", "/echo".to_string(), pattern(5 << 20, 7)),
        ("GET", "/bytes/5242880".to_string(), Vec::new()),
        ("GET", "/chunked/5242881".to_string(), Vec::new()),
        ("GET", "/hello?x=1".to_string(), Vec::new()),
    ] {
        let got = c.request(m, &uri, &[], &body).await?;
        out.push(seen(m, &uri, &body, &got));
    }
    // Five pipelined requests in one write, then the five responses.
    let mut batch = Vec::new();
    let host = server.to_string();
    for n in [10, 20, 30, 40, 50] {
        batch.extend(encode_request(
            "GET",
            &format!("/bytes/{n}"),
            &host,
            &[],
            b"",
        ));
    }
    c.send_raw(&batch).await?;
    for n in [10, 20, 30, 40, 50] {
        let got = c.read_response(false).await?;
        out.push(seen("GET", &format!("/bytes/{n}"), b"", &got));
    }
    // Expect: 100-continue.
    let body = pattern(100_000, 9);
    let got = c.request_expect_continue("/echo", &body).await?;
    out.push(seen("POST", "/echo", &body, &got));
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Serve the fixture on `addrs` from a thread inside `ns` until the returned sender is dropped.
fn serve_in(ns: &netns::Netns, addrs: Vec<SocketAddr>) -> Result<std::sync::mpsc::Sender<()>> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let _ = ns.spawn(move || {
        let rt = runtime()?;
        let r = rt.block_on(async {
            for a in &addrs {
                fixture::start(*a).await?;
            }
            anyhow::Ok(())
        });
        let failed = r.is_err();
        let _ = ready_tx.send(r);
        if !failed {
            let _ = stop_rx.recv();
        }
        drop(rt);
        Ok(())
    });
    ready_rx.recv_timeout(Duration::from_secs(10))??;
    Ok(stop_tx)
}

fn sorted(mut v: Vec<Seen>) -> Vec<Seen> {
    v.sort();
    v
}

fn check_records(records: &[Value], expected: &[Seen]) {
    let incomplete: Vec<&Value> = records.iter().filter(|r| r["complete"] != true).collect();
    assert!(
        incomplete.is_empty(),
        "incomplete exchanges: {incomplete:#?}"
    );
    let got = sorted(records.iter().map(from_record).collect());
    let want = sorted(expected.to_vec());
    assert_eq!(got.len(), want.len(), "exchange count");
    assert_eq!(got, want);
}

#[test]
fn veth_namespaces_ipv4_and_ipv6_with_rust_client_and_curl() -> Result<()> {
    if !env::require_root() || !env::require_tools(&["ip", "curl"]) {
        return Ok(());
    }
    let pair = VethPair::new("lv", 41)?;
    let v4 = SocketAddr::new(IpAddr::V4(pair.b_v4), 8080);
    let v6 = SocketAddr::new(IpAddr::V6(pair.b_v6), 8080);
    let _server = serve_in(&pair.b, vec![v4, v6])?;
    let config = format!(
        "[capture]\nengine = \"tc\"\ninterfaces = [\"{}\"]\ntargets = [\":8080\"]\n",
        pair.b_if
    );
    let mut agent = Agent::start(AgentOpts {
        config: &config,
        args: vec![],
        netns: Some(&pair.b.name),
        listen: None,
    })?;
    std::thread::sleep(Duration::from_millis(300));

    // The Rust client from the other namespace, over IPv4 and IPv6.
    let mut expected = pair
        .a
        .spawn(move || {
            let rt = runtime()?;
            rt.block_on(async {
                let mut all = scenario(v4).await?;
                all.extend(scenario(v6).await?);
                anyhow::Ok(all)
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;

    // curl: two URLs on one keep-alive connection, and an upload.
    let upload = pattern(300_000, 3);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &upload)?;
    for base in [
        format!("http://{v4}"),
        format!("http://[{}]:8080", pair.b_v6),
    ] {
        let out = pair
            .a
            .command("curl")
            .args(["-s", "--http1.1", "-o", "/dev/null", "-o", "/dev/null"])
            .arg(format!("{base}/bytes/1234"))
            .arg(format!("{base}/chunked/4321"))
            .output()?;
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = pair
            .a
            .command("curl")
            .args([
                "-s",
                "--http1.1",
                "-o",
                "/dev/null",
                "-H",
                "Expect:",
                "--data-binary",
            ])
            .arg(format!("@{}", file.path().display()))
            .arg(format!("{base}/echo"))
            .output()?;
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (uri, body) in [
            ("/bytes/1234", pattern(1234, 1234)),
            ("/chunked/4321", pattern(4321, 4322)),
        ] {
            expected.push(Seen {
                method: "GET".into(),
                uri: uri.into(),
                status: 200,
                req_sha: sha256_hex(b""),
                resp_sha: sha256_hex(&body),
                interim: vec![],
            });
        }
        expected.push(Seen {
            method: "POST".into(),
            uri: "/echo".into(),
            status: 200,
            req_sha: sha256_hex(&upload),
            resp_sha: sha256_hex(&upload),
            interim: vec![],
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.stop()?;
    assert!(status.success(), "agent: {status}\n{}", agent.log());
    check_records(&agent.exchanges()?, &expected);
    assert_eq!(netns::parity_in_kernel()?, "", "nothing left attached");
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[test]
fn lo_with_tc_captures_every_exchange_once() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let rt = runtime()?;
    let port = free_port();
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let v6: SocketAddr = format!("[::1]:{port}").parse()?;
    rt.block_on(async {
        fixture::start(v4).await?;
        fixture::start(v6).await
    })?;
    let config =
        format!("[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\ntargets = [\":{port}\"]\n");
    let mut agent = Agent::start(AgentOpts {
        config: &config,
        args: vec![],
        netns: None,
        listen: None,
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let expected = rt.block_on(async {
        let mut all = scenario(v4).await?;
        all.extend(scenario(v6).await?);
        anyhow::Ok(all)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.stop()?;
    assert!(status.success(), "agent: {status}\n{}", agent.log());
    check_records(&agent.exchanges()?, &expected);
    Ok(())
}

#[test]
fn cgroup_engine_captures_only_the_child_cgroup_each_segment_once() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let cg = Cgroup::new("cap")?;
    let (inside, outside) = (free_port(), free_port());
    // The server inside the cgroup must create its sockets after moving there: a shell moves
    // itself, then execs the fixture.
    let demo_bin = env::agent_bin().with_file_name("parity-demo");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} fixture --listen 127.0.0.1:{inside}",
        cg.path.display(),
        demo_bin.display()
    );
    let mut server = Command::new("sh")
        .args(["-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .context("starting the fixture in the cgroup (is parity-demo built?)")?;
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);
    let rt = runtime()?;
    rt.block_on(fixture::start(format!("127.0.0.1:{outside}").parse()?))?;
    // Wait for the child's listener.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", inside)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = format!(
        "[capture]\nengine = \"cgroup\"\ncgroup = \"{}\"\ntargets = [\":{inside}\", \":{outside}\"]\n",
        cg.path.display()
    );
    let mut agent = Agent::start(AgentOpts {
        config: &config,
        args: vec![],
        netns: None,
        listen: None,
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let expected = rt.block_on(async {
        let in_addr: SocketAddr = format!("127.0.0.1:{inside}").parse()?;
        let out_addr: SocketAddr = format!("127.0.0.1:{outside}").parse()?;
        let seen_in = scenario(in_addr).await?;
        // Traffic to the server outside the cgroup must not be captured.
        scenario(out_addr).await?;
        anyhow::Ok(seen_in)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.stop()?;
    assert!(status.success(), "agent: {status}\n{}", agent.log());
    assert_eq!(
        netns::cgroup_attachments(&cg.path)?,
        "",
        "nothing left on the cgroup"
    );
    let records = agent.exchanges()?;
    assert!(
        records
            .iter()
            .all(|r| r["flow"]["server"] == format!("127.0.0.1:{inside}")),
        "only the cgroup's server is captured"
    );
    check_records(&records, &expected);
    Ok(())
}

#[test]
fn tiny_ring_buffer_overflows_counts_drops_marks_gaps_and_recovers() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let rt = runtime()?;
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    rt.block_on(fixture::start(server))?;
    let config = format!(
        "[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\ntargets = [\":{port}\"]\n[server]\nlisten = \"{listen}\"\n[limits]\nring_buffer_bytes = \"16KiB\"\ngap_timeout = \"500ms\"\n"
    );
    let mut agent = Agent::start_listening(&config, listen)?;
    // Heavy load: 8 connections fetching 2 MB bodies as fast as they can.
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(server).await?;
                for _ in 0..10 {
                    c.request("GET", "/bytes/2000000", &[], b"").await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let dropped = agent.metric("parity_capture_dropped_total{reason=\"ringbuf_full\"}")?;
    assert!(
        dropped > 0.0,
        "a 16 KiB ring under this load must overflow:\n{}",
        agent.metrics()?
    );
    // Recovery: light traffic afterwards is captured completely.
    let recovered = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..10 {
            let mut c = Client::connect(server).await?;
            let uri = format!("/bytes/{}", 100 + i);
            let got = c.request("GET", &uri, &[], b"").await?;
            out.push(seen("GET", &uri, b"", &got));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(out)
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let status = agent.stop()?;
    assert!(
        status.success(),
        "the agent kept running and exited cleanly: {status}"
    );
    let records = agent.exchanges()?;
    let gaps = records
        .iter()
        .filter(|r| r["incomplete_reason"] == "gap")
        .count();
    assert!(
        gaps > 0,
        "lost records must surface as exchanges incomplete with reason gap"
    );
    let tail: Vec<Seen> = records
        .iter()
        .filter(|r| {
            r["request"]["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("/bytes/1") && u.len() == 10)
        })
        .filter(|r| r["complete"] == true)
        .map(from_record)
        .collect();
    assert_eq!(
        sorted(tail),
        sorted(recovered),
        "capture recovered after the overflow"
    );
    let report = agent.report()?;
    assert!(
        report["capture"]["dropped"]["ringbuf_full"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    Ok(())
}

#[test]
fn sigint_detaches_everything_and_a_sigkilled_run_leaves_nothing_behind() -> Result<()> {
    if !env::require_root() || !env::require_tools(&["bpftool"]) {
        return Ok(());
    }
    let rt = runtime()?;
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    rt.block_on(fixture::start(server))?;
    let config =
        format!("[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\ntargets = [\":{port}\"]\n");
    let start = || {
        Agent::start(AgentOpts {
            config: &config,
            args: vec![],
            netns: None,
            listen: None,
        })
    };
    let send = |n: usize| -> Result<Vec<Seen>> {
        rt.block_on(async {
            let mut c = Client::connect(server).await?;
            let mut out = Vec::new();
            for i in 0..n {
                let uri = format!("/bytes/{}", 10 + i);
                let got = c.request("GET", &uri, &[], b"").await?;
                out.push(seen("GET", &uri, b"", &got));
            }
            anyhow::Ok(out)
        })
    };

    let mut agent = start()?;
    assert!(
        !netns::parity_in_kernel()?.is_empty(),
        "attached while running"
    );
    agent.signal(libc::SIGINT)?;
    let status = agent.wait(Duration::from_secs(30))?;
    assert!(status.success(), "SIGINT exits 0: {status}");
    assert_eq!(
        netns::parity_in_kernel()?,
        "",
        "nothing attached after SIGINT"
    );

    // SIGKILL under load: the kernel drops the links with the process.
    let mut agent = start()?;
    let load = std::thread::spawn(move || -> Result<()> {
        let rt = runtime()?;
        rt.block_on(async {
            for _ in 0..200 {
                let mut c = Client::connect(server).await?;
                c.request("GET", "/bytes/1000", &[], b"").await?;
            }
            anyhow::Ok(())
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    agent.kill()?;
    load.join()
        .map_err(|_| anyhow::anyhow!("load panicked"))??;
    let mut left = netns::parity_in_kernel()?;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = netns::parity_in_kernel()?;
    }
    assert_eq!(left, "", "nothing attached after SIGKILL");

    // Starting again neither fails nor captures twice.
    let mut agent = start()?;
    std::thread::sleep(Duration::from_millis(200));
    let expected = send(10)?;
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.stop()?;
    assert!(status.success());
    check_records(&agent.exchanges()?, &expected);
    Ok(())
}

#[test]
fn sighup_reloads_targets_and_keeps_the_old_configuration_on_error() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let rt = runtime()?;
    let (p1, p2) = (free_port(), free_port());
    let a1: SocketAddr = format!("127.0.0.1:{p1}").parse()?;
    let a2: SocketAddr = format!("127.0.0.1:{p2}").parse()?;
    rt.block_on(async {
        fixture::start(a1).await?;
        fixture::start(a2).await
    })?;
    let cfg = |targets: &str| {
        format!("[capture]\nengine = \"tc\"\ninterfaces = [\"lo\"]\ntargets = [{targets}]\n")
    };
    let mut agent = Agent::start(AgentOpts {
        config: &cfg(&format!("\":{p1}\"")),
        args: vec![],
        netns: None,
        listen: None,
    })?;
    let hit = |addr: SocketAddr, tag: &str| -> Result<()> {
        rt.block_on(async {
            let mut c = Client::connect(addr).await?;
            c.request("GET", &format!("/{tag}"), &[], b"").await?;
            anyhow::Ok(())
        })
    };
    hit(a2, "before-reload")?;
    std::fs::write(
        agent.path("parity.toml"),
        cfg(&format!("\":{p1}\", \":{p2}\"")),
    )?;
    agent.signal(libc::SIGHUP)?;
    wait_for_log(&agent, "SIGHUP: reloaded")?;
    hit(a2, "after-reload")?;
    std::fs::write(agent.path("parity.toml"), "this is = not [valid toml")?;
    agent.signal(libc::SIGHUP)?;
    wait_for_log(&agent, "keeping the old configuration")?;
    hit(a2, "after-bad-reload")?;
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.stop()?;
    assert!(status.success());
    let uris: Vec<String> = agent
        .exchanges()?
        .iter()
        .filter_map(|r| r["request"]["uri"].as_str().map(String::from))
        .collect();
    assert!(!uris.contains(&"/before-reload".to_string()), "{uris:?}");
    assert!(uris.contains(&"/after-reload".to_string()), "{uris:?}");
    assert!(uris.contains(&"/after-bad-reload".to_string()), "{uris:?}");
    Ok(())
}

fn wait_for_log(agent: &Agent, needle: &str) -> Result<()> {
    for _ in 0..100 {
        if agent.log().contains(needle) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the agent never logged {needle:?}:\n{}", agent.log())
}

#[test]
fn clear_errors_for_missing_interface_cgroup_and_privileges() -> Result<()> {
    if !env::require_root() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let run = |config: &str, as_nobody: bool| -> Result<(i32, String)> {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, config)?;
        let bin = env::agent_bin();
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--duration")
            .arg("1s")
            .current_dir(dir.path())
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, err) = run(
        "[capture]\ninterfaces = [\"nosuchif0\"]\ntargets = [\":80\"]\n",
        false,
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nosuchif0"), "{err}");
    let (code, err) = run(
        "[capture]\nengine = \"cgroup\"\ncgroup = \"/sys/fs/cgroup/unified/no/such/group\"\ntargets = [\":80\"]\n",
        false,
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such/group"), "{err}");
    // The temp dir must be readable by nobody for the config.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let (code, err) = run(
        "[capture]\ninterfaces = [\"lo\"]\ntargets = [\":80\"]\n",
        true,
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("root") || err.contains("CAP_BPF"),
        "an unprivileged start says what it needs: {err}"
    );
    Ok(())
}
