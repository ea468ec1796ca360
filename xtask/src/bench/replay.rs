//! `replay`: offline processing of capture files against tshark and a plain read of the file.
//!
//! Two captures are generated on loopback first (nginx + wrk + tcpdump, discarded and taken
//! again with fewer connections if tcpdump dropped anything): small keep-alive exchanges with
//! one server, and primary/mirror pairs through an nginx `mirror` splitter. Then, in interleaved
//! rounds, each file goes through `parity-agent replay` (records to /dev/null for the first, a
//! pairs configuration and a report for the second), tshark (`-Y http.response -T fields -e
//! http.response.code`: the cheapest invocation that still parses every response) and a plain
//! sequential read (the physical floor). Wall time and peak RSS come from `wait4(2)`.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procs::{self, WorkDir};
use super::report::{Row, Target};
use super::tools::{self, Nginx, NginxConf, Tcpdump};
use super::Ctx;

const BENCH: &str = "replay";

struct Capture {
    file: std::path::PathBuf,
    bytes: f64,
}

/// Capture `count` responses of wrk against `url` with tcpdump (`filter`); retried with fewer
/// connections while tcpdump reports kernel drops, because a capture with holes would measure
/// the agent on gaps instead of exchanges.
fn capture(
    ctx: &Ctx,
    work: &WorkDir,
    name: &str,
    url: &str,
    filter: &str,
    count: u64,
) -> Result<Capture> {
    let file = work.join(&format!("{name}.pcap"));
    let script = work.join(&format!("{name}.lua"));
    tools::wrk_stop_after(&script, count)?;
    for conns in [8u32, 4, 2, 1] {
        // wrk's thread stops after `count` responses, but wrk itself only exits at the end of
        // its duration: size the duration from a probe of the rate, with room for tcpdump.
        let probe = tools::wrk(url, 1, conns, 1, None)?;
        let secs = ((count as f64 / probe.rps.max(100.0)) * 1.6).ceil() as u64 + 1;
        let dump = Tcpdump::start(&file, filter, 256 * 1024)?;
        std::thread::sleep(Duration::from_millis(300));
        let run = tools::wrk(url, 1, conns, secs, Some(&script))?;
        std::thread::sleep(Duration::from_millis(300));
        let stats = dump.stop()?;
        ctx.log(&format!(
            "replay: {name}: wrk -c{conns} -d{secs}s: {} responses; tcpdump captured {} packets, dropped {}",
            run.requests, stats.captured, stats.dropped
        ));
        if run.errors > 0.0 {
            bail!("wrk saw {} errors while generating {name}", run.errors);
        }
        if stats.dropped == 0.0 && run.requests >= count as f64 {
            let bytes = std::fs::metadata(&file)?.len() as f64;
            return Ok(Capture { file, bytes });
        }
    }
    bail!("tcpdump dropped packets (or wrk was too slow) even with one connection: the machine is too loaded to generate {name}")
}

/// `N exchanges` from the replay summary on stderr.
fn exchanges_of(stderr: &str) -> Option<f64> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("replay: ") && l.contains(" exchanges ("))?;
    let before = line.split(" exchanges (").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Plain sequential read of `file` in 1 MiB blocks: seconds.
fn plain_read(file: &Path) -> Result<f64> {
    let t = Instant::now();
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sum = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Touch the data, as a parser would.
        sum = sum.wrapping_add(
            buf[..n]
                .iter()
                .step_by(4096)
                .map(|b| u64::from(*b))
                .sum::<u64>(),
        );
    }
    std::hint::black_box(sum);
    Ok(t.elapsed().as_secs_f64())
}

#[derive(Default)]
struct Series {
    agent_mbs: Vec<f64>,
    agent_xps: Vec<f64>,
    agent_rss: Vec<f64>,
    agent_cpu_mbs: Vec<f64>,
    tshark_mbs: Vec<f64>,
    tshark_cpu_mbs: Vec<f64>,
    tshark_rss: Vec<f64>,
    read_mbs: Vec<f64>,
}

/// Run the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    procs::need(&["nginx", "wrk", "tcpdump", "tshark"])?;
    let work = WorkDir::new("replay")?;
    // tshark takes about 0.3 ms per exchange: its runs are most of this benchmark's time.
    let (single, paired) = if ctx.quick {
        (10_000, 4_000)
    } else {
        (100_000, 20_000)
    };

    let [p_simple, p_front, p_primary, p_mirror] = procs::free_ports::<4>()?;
    let body = r#"{"status":"ok","items":[1,2,3]}"#;
    let servers = tools::return_server(p_simple, "ok", "text/plain")
        + &tools::return_server(p_primary, body, "application/json")
        + &tools::return_server(p_mirror, body, "application/json")
        + &tools::mirror_server(p_front, p_primary, p_mirror);
    let nginx = Nginx::start(
        &NginxConf {
            dir: &work.path,
            workers: 1,
            connections: 1024,
            servers,
            ports: vec![p_simple, p_front, p_primary, p_mirror],
        },
        None,
    )?;
    let records_cap = capture(
        ctx,
        &work,
        "exchanges",
        &format!("http://127.0.0.1:{p_simple}/"),
        &format!("tcp port {p_simple}"),
        single,
    )?;
    let pairs_cap = capture(
        ctx,
        &work,
        "pairs",
        &format!("http://127.0.0.1:{p_front}/api/items"),
        &format!("tcp port {p_primary} or tcp port {p_mirror}"),
        paired,
    )?;
    nginx.stop()?;

    let config = work.join("pairs.toml");
    procs::write(
        &config,
        &format!(
            "[[pair]]\nname = \"bench\"\nprimary = \"127.0.0.1:{p_primary}\"\nmirror = \"127.0.0.1:{p_mirror}\"\n"
        ),
    )?;
    let report = work.join("pairs.report.json");

    let mut rows = Vec::new();
    let mut records = Series::default();
    let mut paired_s = Series::default();
    let mut exchanges_in_file = (0.0, 0.0);
    for round in 0..ctx.rounds {
        for (label, cap, series) in [
            ("records", &records_cap, &mut records),
            ("report", &pairs_cap, &mut paired_s),
        ] {
            let mut agent = Command::new(&ctx.agent);
            agent.arg("replay").arg("--quiet").current_dir(&work.path);
            if label == "records" {
                agent.args(["--exchanges", "/dev/null"]);
            } else {
                agent
                    .arg("--config")
                    .arg(&config)
                    .arg("--report")
                    .arg(&report);
            }
            agent.arg(&cap.file);
            let a = procs::measure(&mut agent, Duration::from_secs(300))?;
            if a.code != 0 {
                bail!("parity-agent replay failed ({}): {}", a.code, a.stderr);
            }
            let n = exchanges_of(&a.stderr).with_context(|| {
                format!("no exchange count in the replay summary: {}", a.stderr)
            })?;
            if label == "records" {
                exchanges_in_file.0 = n;
            } else {
                exchanges_in_file.1 = n;
                check_pairs_report(&report, paired)?;
            }
            let tshark_out = work.join(&format!("{label}.tshark.txt"));
            let t = procs::measure(
                Command::new("sh").arg("-c").arg(format!(
                    "exec tshark -r '{}' -Y http.response -T fields -e http.response.code > '{}'",
                    cap.file.display(),
                    tshark_out.display()
                )),
                Duration::from_secs(900),
            )?;
            if t.code != 0 {
                bail!("tshark failed ({}): {}", t.code, t.stderr);
            }
            if round == 0 {
                let lines = std::fs::read_to_string(&tshark_out)?.lines().count() as f64;
                ctx.log(&format!(
                    "replay: {label}: {} MB, parity {n} exchanges, tshark {lines} responses",
                    cap.bytes / 1e6
                ));
            }
            let r = plain_read(&cap.file)?;
            let secs = a.wall.as_secs_f64();
            series.agent_mbs.push(cap.bytes / 1e6 / secs);
            series.agent_xps.push(n / secs);
            series.agent_rss.push(a.max_rss / (1 << 20) as f64);
            series
                .tshark_mbs
                .push(cap.bytes / 1e6 / t.wall.as_secs_f64());
            series.tshark_rss.push(t.max_rss / (1 << 20) as f64);
            series.read_mbs.push(cap.bytes / 1e6 / r);
            ctx.log(&format!(
                "replay: round {round} {label}: parity {:.1} MB/s {:.0} MiB ({:.2} CPU s in {secs:.2} s), tshark {:.1} MB/s {:.0} MiB, read {:.0} MB/s",
                cap.bytes / 1e6 / secs,
                a.max_rss / (1 << 20) as f64,
                a.cpu,
                cap.bytes / 1e6 / t.wall.as_secs_f64(),
                t.max_rss / (1 << 20) as f64,
                cap.bytes / 1e6 / r
            ));
        }
    }
    for (label, s, n) in [
        ("records", records, exchanges_in_file.0),
        ("report", paired_s, exchanges_in_file.1),
    ] {
        let what = if label == "records" {
            "exchanges → records"
        } else {
            "pairs → report"
        };
        rows.push(Row::new(
            BENCH,
            &format!("{what}: exchanges in the capture"),
            vec![n],
        ));
        rows.push(
            Row::new(
                BENCH,
                &format!("{what}: throughput (MB/s)"),
                s.agent_mbs.clone(),
            )
            .peer("tshark (MB/s)", s.tshark_mbs, "parity ÷ tshark", |a, b| {
                a / b
            })
            .target(Target::ratio_at_least(50.0)),
        );
        rows.push(
            Row::new(
                BENCH,
                &format!("{what}: MB per CPU second (user + system)"),
                s.agent_cpu_mbs,
            )
            .peer(
                "tshark (MB per CPU s)",
                s.tshark_cpu_mbs,
                "parity ÷ tshark",
                |a, b| a / b,
            ),
        );
        rows.push(Row::new(
            BENCH,
            &format!("{what}: exchanges/s"),
            s.agent_xps,
        ));
        rows.push(
            Row::new(BENCH, &format!("{what}: peak RSS (MiB)"), s.agent_rss)
                .peer("tshark (MiB)", s.tshark_rss, "parity ÷ tshark", |a, b| {
                    a / b
                })
                .target(Target::ratio_at_most(0.10)),
        );
        rows.push(
            Row::new(BENCH, &format!("{what}: vs plain read (MB/s)"), s.agent_mbs).peer(
                "plain read (MB/s)",
                s.read_mbs,
                "parity ÷ read",
                |a, b| a / b,
            ),
        );
    }
    Ok(rows)
}

/// The paired capture compares identical backends: every pair compared, none diverged.
fn check_pairs_report(path: &Path, pairs: u64) -> Result<()> {
    let report = super::tools::Agent::read_report(path)?;
    let p = &report["pairs"][0];
    let compared = p["compared"].as_f64().unwrap_or(0.0);
    let diverged = p["diverged"].as_f64().unwrap_or(0.0);
    if diverged > 0.0 {
        bail!("replay of identical backends reported {diverged} diverged pairs (false differences): {p}");
    }
    if compared < pairs as f64 {
        bail!("replay compared {compared} pairs of the {pairs} sent: {p}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_count_from_the_summary() {
        let s = "replay: 500000 packets (499000 TCP segments), 8 flows, 100016 exchanges (100016 complete), 0 gaps, 0.20s, 300.0 MB/s\n";
        assert_eq!(exchanges_of(s), Some(100016.0));
        assert_eq!(exchanges_of("nothing"), None);
    }
}
