//! `parity-agent run`: live capture with eBPF through the same pipeline as `replay`.
//!
//! One task drains the ring buffer and drives the pipeline; timeouts run on a monotonic clock
//! (converted to the capture's epoch timeline), checked every 100 ms. SIGHUP reloads the
//! configuration's targets and limits (keeping the old configuration when the new one is
//! invalid; `[[pair]]` and `ring_buffer_bytes` changes wait for the next start);
//! SIGINT/SIGTERM (or `--duration`) stop capture, drain what the kernel still holds, flush pending
//! exchanges, detach, and write the report.

use crate::cli::{Failure, RunCmd};

/// Run `run`.
#[cfg(not(feature = "ebpf"))]
pub fn cmd_run(_c: RunCmd) -> Result<i32, Failure> {
    Err(Failure::from(
        "this parity-agent was built without live capture (the `ebpf` feature); rebuild with `cargo xtask build`",
    ))
}

/// Run `run`.
#[cfg(feature = "ebpf")]
pub fn cmd_run(c: RunCmd) -> Result<i32, Failure> {
    live::cmd_run(c)
}

#[cfg(feature = "ebpf")]
mod live {
    use std::io::{IsTerminal, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tokio::signal::unix::{signal, SignalKind};

    use crate::capture::ebpf::LiveCapture;
    use crate::cli::{self, Failure, RunCmd, EXIT_OK};
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::pipeline::{Pipeline, QueuePolicy, Shared};
    use crate::segment::{Nanos, Segment};
    use crate::server::{self, ServerState};
    use crate::summary::Summary;

    pub fn cmd_run(c: RunCmd) -> Result<i32, Failure> {
        let config = Config::load(&c.config)?;
        let persistent = c.out.exchanges.is_some() || config.store.is_some();
        let masker = cli::masker(&config, c.out.unmasked, persistent)?;
        let records = cli::record_sink(c.out.exchanges.as_deref(), &masker)?;
        let token = match &config.server {
            Some(s) => server::api_token(s.listen, s.token.clone())?,
            None => None,
        };
        let shared = Shared {
            summary: Arc::new(Mutex::new(Summary::new(&config.pairs))),
            metrics: Arc::new(Metrics::new()),
        };
        let store = crate::store::open_for(
            &config,
            masker.clone(),
            shared.metrics.clone(),
            QueuePolicy::Drop,
            "run",
            &format!("run {}", c.config.display()),
        )?;
        if let Some(s) = &store {
            // Stored every 10 s and at the end, so `serve` shows the overview of this run.
            s.watch_summary(shared.summary.clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let state = Arc::new(ServerState {
            metrics: shared.metrics.clone(),
            summary: Some(shared.summary.clone()),
            ready: AtomicBool::new(false),
            token,
            store: store.as_ref().map(|s| s.reader()),
        });
        let hook = store.as_ref().map(|s| s.hook());
        let result = rt.block_on(async {
            if let Some(s) = &config.server {
                server::start(s.listen, state.clone()).await?;
            }
            let capture = LiveCapture::start(&config.capture, &config.limits)?;
            let pipeline = Pipeline::new(&config, records, QueuePolicy::Drop, shared.clone(), hook);
            state.ready.store(true, Ordering::Relaxed);
            shared.metrics.up.set(1);
            tracing::info!(
                "capturing with the {:?} engine; targets: {}",
                config.capture.engine,
                config
                    .capture
                    .targets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            capture_loop(capture, pipeline, &c, config.clone(), &shared).await
        });
        shared.metrics.up.set(0);
        if let Some(s) = store {
            let counts = s.finish();
            tracing::info!(
                "diff store: {} records stored, {} not stored (see parity_store_records_total)",
                counts.stored(),
                counts.lost()
            );
        }
        result?;
        let report = shared
            .summary
            .lock()
            .map(|s| s.report())
            .map_err(|_| Failure::from("the summary is unavailable (a thread panicked)"))?;
        if let Some(p) = &c.out.report {
            cli::write_report(p, &report)?;
        }
        if c.duration.is_some() || c.out.report.is_some() {
            eprint!("{}", crate::summary::render_text(&report));
        }
        Ok(cli::gate_exit(&c.out, &report).max(EXIT_OK))
    }

    async fn capture_loop(
        mut capture: LiveCapture,
        mut pipeline: Pipeline,
        c: &RunCmd,
        mut config: Config,
        shared: &Shared,
    ) -> Result<(), Failure> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let deadline = c.duration.map(|d| started + d.get());
        let status = !c.quiet && std::io::stderr().is_terminal();
        let mut last_status = Instant::now();
        let mut batch = Vec::with_capacity(4096);
        loop {
            tokio::select! {
                r = capture.next_batch(&mut batch) => {
                    r?;
                    for seg in batch.drain(..) {
                        pipeline.push(seg);
                    }
                    pipeline.flush_compare();
                }
                _ = tick.tick() => {
                    let now = catch_up(&mut capture, &mut pipeline, &mut batch);
                    pipeline.tick(now);
                    pipeline.set_capture_dropped(capture.dropped().into_iter().map(|(k, v)| (k.to_string(), v)).collect());
                    pipeline.publish();
                    pipeline.flush_records();
                    if status && last_status.elapsed() >= Duration::from_secs(1) {
                        last_status = Instant::now();
                        status_line(&pipeline, shared, &capture);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sighup.recv() => reload(&c.config, &mut config, &mut capture, &mut pipeline),
            }
        }
        if status {
            eprintln!();
        }
        tracing::info!("stopping: detaching, draining the ring buffer, flushing pending exchanges");
        let rest = capture.stop();
        for seg in rest {
            pipeline.push(seg);
        }
        pipeline.set_capture_dropped(
            capture
                .dropped()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        capture.detach();
        pipeline
            .finish()
            .map_err(|e| Failure::from(format!("writing exchange records: {e}")))?;
        Ok(())
    }

    fn reload(
        path: &std::path::Path,
        config: &mut Config,
        capture: &mut LiveCapture,
        pipeline: &mut Pipeline,
    ) {
        match Config::load(path) {
            Ok(mut new) => {
                if new.pairs != config.pairs {
                    tracing::warn!("SIGHUP: [[pair]] changes take effect at the next start; applying targets and limits only");
                }
                if new.limits.ring_buffer_bytes != config.limits.ring_buffer_bytes {
                    tracing::warn!(
                        "SIGHUP: limits.ring_buffer_bytes takes effect at the next start (the kernel's ring keeps its size); applying the other limits"
                    );
                    // What is in effect: a later reload compares against the ring's real size.
                    new.limits.ring_buffer_bytes = config.limits.ring_buffer_bytes;
                }
                if let Err(e) = capture.set_targets(&new.capture.targets) {
                    tracing::error!("SIGHUP: keeping the old targets: {e}");
                    return;
                }
                pipeline.set_targets(new.capture.targets.clone());
                pipeline.set_limits(&new.limits);
                tracing::info!(
                    "SIGHUP: reloaded {} ({} targets)",
                    path.display(),
                    new.capture.targets.len()
                );
                *config = new;
            }
            Err(e) => tracing::error!("SIGHUP: keeping the old configuration: {e}"),
        }
    }

    /// Most ring batches taken before a tick: enough to catch up after a slow exchange (a
    /// decompression bomb in a debug build), bounded so that a pipeline that cannot keep up still
    /// runs its timeouts.
    const CATCH_UP_BATCHES: usize = 64;

    /// Feed the pipeline what the ring holds before its timeouts run, and return the time they
    /// run at. Timeouts run on the clock only once the ring is empty: a pipeline that fell behind
    /// must not expire a pending exchange whose counterpart is still waiting in the ring. When it
    /// cannot catch up, they run at the time of the last segment it took.
    fn catch_up(
        capture: &mut LiveCapture,
        pipeline: &mut Pipeline,
        batch: &mut Vec<Segment>,
    ) -> Nanos {
        for _ in 0..CATCH_UP_BATCHES {
            let empty = capture.take_ready(batch);
            for seg in batch.drain(..) {
                pipeline.push(seg);
            }
            if empty {
                pipeline.flush_compare();
                return capture.now();
            }
        }
        pipeline.flush_compare();
        pipeline.now()
    }

    fn status_line(pipeline: &Pipeline, shared: &Shared, capture: &LiveCapture) {
        let (compared, diverged, unmatched) = shared
            .summary
            .lock()
            .map(|s| s.totals())
            .unwrap_or_default();
        let dropped: u64 = capture.dropped().iter().map(|(_, v)| v).sum();
        let rate = if compared > 0 {
            format!("{:.1}%", 100.0 * diverged as f64 / compared as f64)
        } else {
            "-".to_string()
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r\x1b[2Kparity: {} exchanges, {compared} pairs compared, divergence {rate}, {unmatched} unmatched, {dropped} capture drops, {} flows",
            pipeline.stats().exchanges,
            pipeline.flows_active()
        );
        let _ = err.flush();
    }
}
