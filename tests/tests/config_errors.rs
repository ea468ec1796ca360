//! Malformed or contradictory configuration, through the binary: `check-config FILE`,
//! `run --config FILE` and `replay --config FILE` must each refuse it with exit code 2 and one
//! error on stderr that names the file, the line and the key, before doing anything else.
//!
//! No privileges needed: a configuration error stops `run` before it touches the kernel.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;
use parity_tests::env;

/// One bad configuration: its text, the key the error must name, and the 1-based line.
struct Case {
    what: &'static str,
    text: &'static str,
    key: &'static str,
    line: usize,
}

const PAIR: &str =
    "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "unknown key in [limits]",
            text: "[limits]\nflow_memory = \"16MiB\"\nflow_memroy = \"1MiB\"\n",
            key: "flow_memroy",
            line: 3,
        },
        Case {
            what: "unknown key in [[pair.rule]]",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n\n[[pair.rule]]\npath = \"$.x\"\nacton = \"ignore\"\n",
            key: "acton",
            line: 8,
        },
        Case {
            what: "unknown table",
            text: "[capture]\ntargets = [\":80\"]\n\n[limit]\nflow_memory = \"1MiB\"\n",
            key: "limit",
            line: 4,
        },
        Case {
            what: "bad JSON path syntax",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n\n[[pair.rule]]\npath = \"$.items[\"\naction = \"ignore\"\n",
            key: "pair[0].rule[0].path",
            line: 7,
        },
        Case {
            what: "JSON path without $",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n[[pair.rule]]\npath = \"items\"\naction = \"ignore\"\n[[pair.rule]]\npath = \"$..\"\naction = \"ignore\"\n",
            key: "pair[0].rule[0].path",
            line: 6,
        },
        Case {
            what: "an address as primary of one pair and mirror of another",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n\n[[pair]]\nname = \"b\"\nprimary = \"127.0.0.1:9090\"\nmirror = \"127.0.0.1:9091\"\n",
            key: "pair[1].primary",
            line: 8,
        },
        Case {
            what: "one address as both roles of a pair",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = [\"127.0.0.1:9090\", \"127.0.0.1:8080\"]\n",
            key: "pair[0].mirror",
            line: 4,
        },
        Case {
            what: "a :port overlapping an exact address of the other role",
            text: "[[pair]]\nname = \"a\"\nprimary = \":8080\"\nmirror = \"10.0.0.1:8080\"\n",
            key: "pair[0].mirror",
            line: 4,
        },
        Case {
            what: "duplicate pair names",
            text: "[[pair]]\nname = \"orders\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n\n[[pair]]\nname = \"orders\"\nprimary = \"127.0.0.1:8081\"\nmirror = \"127.0.0.1:9091\"\n",
            key: "pair[1].name",
            line: 7,
        },
        Case {
            what: "a bad value in the second pair (regression: named the first pair's line)",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\nmatch_timeout = \"5s\"\n\n[[pair]]\nname = \"b\"\nprimary = \"127.0.0.1:8081\"\nmirror = \"127.0.0.1:9091\"\nmatch_timeout = \"0s\"\n",
            key: "pair[1].match_timeout",
            line: 11,
        },
        Case {
            what: "a sample outside [0, 1]",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\nsample = 1.5\n",
            key: "pair[0].sample",
            line: 5,
        },
        Case {
            what: "a host name as target",
            text: "[capture]\ninterfaces = [\"lo\"]\ntargets = [\":80\", \"localhost:8080\"]\n",
            key: "capture.targets[1]",
            line: 3,
        },
        Case {
            what: "a size with an unknown unit",
            text: "[limits]\nflow_memory = \"16XB\"\n",
            key: "flow_memory",
            line: 2,
        },
        Case {
            what: "a duration with an unknown unit",
            text: "[limits]\n\nidle_timeout = \"5 parsecs\"\n",
            key: "idle_timeout",
            line: 3,
        },
        Case {
            what: "a zero limit",
            text: "[limits]\npending_pairs = 0\n",
            key: "limits.pending_pairs",
            line: 2,
        },
        Case {
            what: "a value of the wrong type",
            text: "[limits]\ncompare_queue = \"lots\"\n",
            key: "compare_queue",
            line: 2,
        },
        Case {
            what: "a key written twice",
            text: "[[pair]]\nname = \"a\"\nname = \"b\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n",
            key: "name",
            line: 3,
        },
        Case {
            what: "a listen address that is not one",
            text: "[server]\nlisten = \"localhost\"\n",
            key: "server.listen",
            line: 2,
        },
        Case {
            what: "a numeric rule without tolerance",
            text: "[[pair]]\nname = \"a\"\nprimary = \"127.0.0.1:8080\"\nmirror = \"127.0.0.1:9090\"\n[[pair.rule]]\npath = \"$.total\"\naction = \"numeric\"\n",
            key: "pair[0].rule[0].action",
            line: 6,
        },
        Case {
            what: "not TOML",
            text: "this is = not [valid toml\n",
            key: "",
            line: 1,
        },
    ]
}

/// Does the error name `file`, `key` and `line`? Validation errors read `FILE:LINE: KEY: ...`;
/// TOML errors read `FILE: TOML parse error at line LINE, column C` and quote the line.
fn located(stderr: &str, file: &str, case: &Case) -> bool {
    let validation = format!("{file}:{}: {}", case.line, case.key);
    let syntax = stderr.contains(&format!("{file}: TOML parse error at line {},", case.line))
        && stderr.contains(case.key);
    stderr.contains(&validation) || syntax
}

fn run(args: &[&str], dir: &Path) -> Result<(i32, String, String)> {
    let out = Command::new(env::agent_bin())
        .args(args)
        .current_dir(dir)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A pcap file with a header and no packets: valid input for `replay`.
fn empty_pcap(path: &Path) -> Result<()> {
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(path, h)?;
    Ok(())
}

#[test]
fn every_command_refuses_a_bad_configuration_naming_file_line_and_key() -> Result<()> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let pcap = dir.path().join("empty.pcap");
    empty_pcap(&pcap)?;
    let pcap = pcap.display().to_string();

    // The harness itself: a good configuration passes every command it can without root.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, PAIR)?;
    let good_s = good.display().to_string();
    let (code, out, err) = run(&["check-config", &good_s], dir.path())?;
    assert_eq!(code, 0, "check-config on a good file: {err}");
    assert!(
        out.contains("127.0.0.1:9090"),
        "check-config prints what it understood: {out}"
    );
    let (code, _, err) = run(&["replay", "--config", &good_s, &pcap], dir.path())?;
    assert_eq!(
        code, 0,
        "replay of an empty capture with a good file: {err}"
    );

    let mut problems = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, case.text)?;
        let f = file.display().to_string();
        let commands: [Vec<&str>; 3] = [
            vec!["check-config", &f],
            vec!["run", "--config", &f, "--duration", "1s"],
            vec!["replay", "--config", &f, &pcap],
        ];
        for args in &commands {
            let (code, out, err) = run(args, dir.path())?;
            let errors = err.lines().filter(|l| l.starts_with("error:")).count();
            if code != 2 || errors != 1 || !located(&err, &f, case) || !out.is_empty() {
                problems.push(format!(
                    "{} ({}): `{}` exited {code}, stdout {out:?}, stderr:\n{err}",
                    case.what, case.key, args[0]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n---\n"));

    // A file that does not exist: exit 2 naming it.
    let missing = dir.path().join("missing.toml").display().to_string();
    for args in [
        vec!["check-config", missing.as_str()],
        vec!["run", "--config", &missing],
        vec!["replay", "--config", &missing, &pcap],
    ] {
        let (code, _, err) = run(&args, dir.path())?;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&missing), "{args:?} names the file: {err}");
    }
    eprintln!(
        "config errors: {} cases x 3 commands, {:.1}s",
        cases().len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
