//! The `wick` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wick::config::{Config, ConfigError};
use wick::launch::{self, TrainOptions};
use wick::rundir::RunDir;

#[derive(Parser)]
#[command(
    name = "wick",
    version,
    about = "Train image classifiers on candle from a terminal dashboard: transfer learning and self-training, fit for SSH."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a training run. On a terminal the run goes to a background process and this one
    /// shows its dashboard (`d` detaches; closing the terminal or losing SSH leaves the run
    /// going); otherwise (or with --headless) it trains here with progress lines.
    Train {
        /// Run configuration (TOML).
        #[arg(default_value = "config.toml")]
        config: PathBuf,
        #[command(flatten)]
        how: How,
        /// Override `device` from the config: auto, cpu or cuda:N.
        #[arg(long)]
        device: Option<String>,
    },
    /// Continue a crashed or stopped run from its newest valid checkpoint (appending to its
    /// events; exact on CPU).
    Resume {
        /// Run directory, run id (under --runs-dir) or a unique prefix of one.
        run: String,
        /// Where run ids are looked up.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        #[command(flatten)]
        how: How,
        /// Resume on another device: auto, cpu or cuda:N.
        #[arg(long)]
        device: Option<String>,
    },
    /// Open the dashboard of a run: its history, then live events and control when it is live.
    Attach {
        /// Run directory, run id or unique prefix (default: the newest live run).
        run: Option<String>,
        /// Where run ids are looked up.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Dashboard with ASCII glyphs only.
        #[arg(long)]
        ascii: bool,
        /// No dashboard: events as JSON lines on stdout (history, then live until the run
        /// ends); JSON commands (e.g. {"cmd":"pause"}) read from stdin.
        #[arg(long)]
        json: bool,
    },
    /// List runs: state (live, finished, stopped, failed, crashed), progress, best accuracy.
    Ls {
        /// Folder holding the run directories.
        #[arg(default_value = "runs")]
        runs_dir: PathBuf,
    },
    /// Train an existing run directory in this process, headless (what a background run
    /// executes; stdio is expected to go to the run's log).
    #[command(hide = true)]
    Serve {
        run: PathBuf,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        device: Option<String>,
    },
    /// Classify images with a trained run (or pretrained weights and --arch): top classes with
    /// probabilities.
    Predict {
        /// A run directory (runs/<run-id>) or a weights file (.safetensors / .pth).
        model: PathBuf,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Architecture, when MODEL is a weights file [default: the file's model card (`wick
        /// export` writes one), else resnet18].
        #[arg(long)]
        arch: Option<String>,
        /// Input channels, when MODEL is a weights file [default: the model card's, else 3].
        #[arg(long)]
        channels: Option<usize>,
        /// Input size, when MODEL is a weights file [default: the model card's, else 224].
        #[arg(long)]
        size: Option<usize>,
        /// How many classes to list.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// JSON lines with the raw logits too.
        #[arg(long)]
        json: bool,
    },
    /// CPU speed of wick's models and kernels against candle's plain ops and, when it is
    /// installed, PyTorch (bench/reference.py), measured in one invocation.
    Bench {
        /// Tiny iteration counts: checks the code path in seconds, numbers are meaningless.
        #[arg(long)]
        quick: bool,
        /// Only rows whose name contains one of these.
        #[arg(long)]
        filter: Vec<String>,
        /// The whole report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// GPU checks for scripts/gpu-check.sh: every op and model, CPU against the GPU
    /// (exit status 1 when one differs).
    #[command(name = "__gpu-check", hide = true)]
    GpuCheck {
        #[arg(long, default_value = "cuda:0")]
        device: String,
    },
    /// GPU training-step benchmark for scripts/gpu-check.sh: one JSON line.
    #[command(name = "__gpu-bench", hide = true)]
    GpuBench {
        #[arg(long, default_value = "cuda:0")]
        device: String,
        #[arg(long, default_value = "resnet18")]
        arch: String,
        #[arg(long, default_value_t = 224)]
        px: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// f32 or bf16.
        #[arg(long, default_value = "f32")]
        precision: String,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
    /// (Re)write runs/<id>/report.md and its plots from the run's events.
    Report {
        /// Run directory (runs/<run-id>).
        run: PathBuf,
    },
    /// Convert a PyTorch checkpoint (.pth, zip or legacy format) to safetensors.
    Convert { input: PathBuf, output: PathBuf },
    /// Write a run's best model weights (its EMA average when it validated with one) as a plain
    /// safetensors file (usable as `model.pretrained`) with a model card (architecture, input
    /// size, normalisation, class names) that `wick predict` reads.
    Export {
        /// Run directory (runs/<run-id>).
        run: PathBuf,
        /// Output .safetensors file.
        out: PathBuf,
    },
    /// Regenerate the bundled Fashion-MNIST ImageFolders from the Debian idx files.
    Data {
        /// Folder with the *-ubyte.gz files (Debian package dataset-fashion-mnist).
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        idx_dir: PathBuf,
        /// Where `fashion-target/` and `fashion-source/` are written.
        #[arg(long, default_value = "data")]
        out: PathBuf,
    },
}

/// Where a run trains and what shows it.
#[derive(clap::Args, Clone, Copy)]
struct How {
    /// No dashboard: train in this process with one progress line per epoch on stderr and a
    /// summary on stdout.
    #[arg(long, conflicts_with_all = ["detach", "foreground"])]
    headless: bool,
    /// Start the run in the background, print how to attach, and exit.
    #[arg(long, conflicts_with = "foreground")]
    detach: bool,
    /// Dashboard and training in this one process (no background process; after `d` or a
    /// lost terminal it goes on training, still holding this terminal's job).
    #[arg(long)]
    foreground: bool,
    /// Dashboard with ASCII glyphs only.
    #[arg(long)]
    ascii: bool,
}

enum Mode {
    /// Train in this process; `headless` = progress lines rather than the dashboard.
    Here { headless: bool },
    /// Train in a background process; `attach` = show its dashboard from here.
    Background { attach: bool },
}

impl How {
    fn mode(self) -> Mode {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
        if self.detach {
            Mode::Background { attach: false }
        } else if self.headless || !tty {
            Mode::Here { headless: true }
        } else if self.foreground {
            Mode::Here { headless: false }
        } else {
            Mode::Background { attach: true }
        }
    }
}

/// Large tensors get transparent huge pages: candle allocates every tensor afresh, and page
/// faults were a quarter of a BatchNorm step (docs/benchmarks.md).
#[global_allocator]
static ALLOC: wick::ops::alloc::HugePageAlloc = wick::ops::alloc::HugePageAlloc;

/// Exit status for a configuration the user must fix.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Before any tensor work or thread: keep candle's spinning elementwise pool off.
    wick::ops::init_cpu();
    if wick::bench::is_child() {
        return report(wick::bench::child_main().map_err(anyhow::Error::from));
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Train {
            config,
            how,
            device,
        } => train(&config, how, device),
        Cmd::Resume {
            run,
            runs_dir,
            how,
            device,
        } => resume(&run, &runs_dir, how, device),
        Cmd::Attach {
            run,
            runs_dir,
            ascii,
            json,
        } => attach(run.as_deref(), &runs_dir, ascii, json),
        Cmd::Ls { runs_dir } => report(list_runs(&runs_dir)),
        Cmd::Serve {
            run,
            resume,
            device,
        } => serve(&run, resume, device),
        Cmd::Data { idx_dir, out } => report(export_data(&idx_dir, &out)),
        Cmd::Export { run, out } => report(export_weights(&run, &out)),
        Cmd::Predict {
            model,
            images,
            arch,
            channels,
            size,
            top,
            json,
        } => report(predict(model, &images, arch, channels, size, top, json)),
        Cmd::Convert { input, output } => report(convert(&input, &output)),
        Cmd::Bench {
            quick,
            filter,
            json,
        } => report(bench(quick, filter, json)),
        Cmd::GpuCheck { device } => report(gpu_check(&device)),
        Cmd::GpuBench {
            device,
            arch,
            px,
            batch,
            precision,
            warmup,
            reps,
        } => report(gpu_bench(
            &device,
            wick::bench::gpu::BenchSpec {
                arch,
                px,
                batch,
                precision: match precision.as_str() {
                    "bf16" => wick::config::Precision::Bf16,
                    _ => wick::config::Precision::F32,
                },
                warmup,
                reps,
            },
        )),
        Cmd::Report { run } => report(
            wick::report::write_report(&run)
                .map(|p| println!("wrote {}", p.display()))
                .map_err(anyhow::Error::from),
        ),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &Path, device: Option<String>) -> Result<Config, ConfigError> {
    let mut config = Config::load(path)?;
    if let Some(d) = device {
        config.device = d;
        let text = config.to_toml();
        Config::parse(&text, Path::new("--device"))?;
    }
    Ok(config)
}

fn train(config_path: &Path, how: How, device: Option<String>) -> ExitCode {
    let config = match load_config(config_path, device) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Data problems (missing folder, empty class, class lists that differ) are named before a
    // run directory is made.
    if let Err(e) = wick::engine::dataset::RunData::prepare(&config) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let run = match launch::create_run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match how.mode() {
        Mode::Here { headless } => {
            let _log = init_logging(&run.log());
            tracing::info!(run = %run.id, config = %config_path.display(), "starting");
            let opts = TrainOptions {
                headless,
                ascii: how.ascii,
            };
            train_here(config, run, None, &opts)
        }
        Mode::Background { attach } => background(&run, false, None, attach, how.ascii),
    }
}

fn resume(arg: &str, runs_dir: &Path, how: How, device: Option<String>) -> ExitCode {
    let run = match RunDir::resolve(arg, runs_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (config, from) = match launch::prepare_resume(&run, device.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &from.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "resuming {} from {} (epoch {}, step {})",
        run.id,
        from.checkpoint.path.display(),
        from.checkpoint.state.epoch,
        from.checkpoint.state.global_step
    );
    match how.mode() {
        Mode::Here { headless } => {
            let _log = init_logging(&run.log());
            tracing::info!(run = %run.id, "resuming");
            let opts = TrainOptions {
                headless,
                ascii: how.ascii,
            };
            train_here(config, run, Some(from), &opts)
        }
        Mode::Background { attach } => {
            drop(from);
            background(&run, true, device.as_deref(), attach, how.ascii)
        }
    }
}

fn train_here(
    config: Config,
    run: RunDir,
    from: Option<wick::engine::Resume>,
    opts: &TrainOptions,
) -> ExitCode {
    match launch::run(config, run.clone(), from, opts) {
        Ok(outcome) => {
            tracing::info!(run = %outcome.run.id, "finished");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e} (run directory {})", run.path.display());
            ExitCode::FAILURE
        }
    }
}

/// Starts the run in a background process; then either says how to attach (`--detach`) or
/// attaches from here.
fn background(
    run: &RunDir,
    resume: bool,
    device: Option<&str>,
    attach_now: bool,
    ascii: bool,
) -> ExitCode {
    let bg = match launch::spawn_background(run, resume, device) {
        Ok(bg) => bg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !attach_now {
        println!("{}", run.id);
        eprintln!(
            "run {} {} in the background (pid {})\n  attach:  wick attach {}\n  list:    wick ls {}\n  log:     {}",
            run.id,
            if resume { "resumed" } else { "started" },
            bg.pid,
            run.path.display(),
            run.path.parent().unwrap_or(Path::new(".")).display(),
            run.log().display()
        );
        return ExitCode::SUCCESS;
    }
    attach_dashboard(run, ascii)
}

fn attach(arg: Option<&str>, runs_dir: &Path, ascii: bool, json: bool) -> ExitCode {
    let run = match arg {
        Some(a) => RunDir::resolve(a, runs_dir),
        None => wick::attach::newest_live(runs_dir).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no live run under {} (`wick ls {}` lists the runs; `wick attach RUN` shows one that has ended)",
                    runs_dir.display(),
                    runs_dir.display()
                ),
            )
        }),
    };
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let runtime = match client_runtime() {
            Ok(r) => r,
            Err(e) => return report(Err(e)),
        };
        return report(
            runtime
                .block_on(wick::attach::json_lines(&run))
                .map_err(anyhow::Error::from),
        );
    }
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!("error: the dashboard needs a terminal (use --json for a stream of events)");
        return ExitCode::FAILURE;
    }
    attach_dashboard(&run, ascii)
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn attach_dashboard(run: &RunDir, ascii: bool) -> ExitCode {
    let runtime = match client_runtime() {
        Ok(r) => r,
        Err(e) => return report(Err(e)),
    };
    let outcome = match runtime.block_on(wick::attach::dashboard(run, ascii)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    drop(runtime);
    if let Some(e) = &outcome.server_error {
        eprintln!("the run closed the connection: {e}");
    }
    match outcome.exit {
        wick::ui::DashboardExit::Detached => {
            eprintln!(
                "detached from {}: it goes on. Attach again with: wick attach {}",
                run.id,
                run.path.display()
            );
            ExitCode::SUCCESS
        }
        // Nothing more goes to a terminal that is gone.
        wick::ui::DashboardExit::TerminalLost => ExitCode::SUCCESS,
        wick::ui::DashboardExit::Quit => match &outcome.ended {
            Some(Ok(summary)) => {
                print!("{}", wick::headless::summary_text(summary));
                ExitCode::SUCCESS
            }
            Some(Err(error)) => {
                eprintln!("run {} failed: {error}", run.id);
                ExitCode::FAILURE
            }
            None => {
                if outcome.live {
                    eprintln!(
                        "left the dashboard; run {} goes on (wick attach {})",
                        run.id,
                        run.path.display()
                    );
                }
                ExitCode::SUCCESS
            }
        },
    }
}

fn list_runs(runs_dir: &Path) -> anyhow::Result<()> {
    let runs = RunDir::list(runs_dir);
    if runs.is_empty() {
        println!("no runs under {}", runs_dir.display());
        return Ok(());
    }
    let now = wick::hub::now_ms();
    let width = runs.iter().map(|r| r.id.len()).max().unwrap_or(3).max(3);
    println!(
        "{:<width$}  {:<13}  {:>8}  {:>6}  LAST EVENT",
        "RUN", "STATE", "EPOCH", "BEST"
    );
    for run in runs {
        let live = wick::server::is_live(&run);
        let (state, epoch, best, last) = match wick::rundir::progress(&run) {
            Ok(p) => {
                let mut state = p.state(live).label().to_string();
                if live && p.paused {
                    state.push_str(" (paused)");
                }
                (
                    state,
                    format!("{}/{}", p.epoch, p.planned),
                    p.best_val_acc
                        .map(|a| format!("{:.1}%", a * 100.0))
                        .unwrap_or_else(|| "-".into()),
                    p.last_at_ms
                        .map(|t| format!("{} ago", age(now.saturating_sub(t))))
                        .unwrap_or_else(|| "-".into()),
                )
            }
            Err(e) => (
                if live { "live" } else { "unreadable" }.to_string(),
                "-".into(),
                "-".into(),
                e.to_string(),
            ),
        };
        println!(
            "{:<width$}  {state:<13}  {epoch:>8}  {best:>6}  {last}",
            run.id
        );
    }
    Ok(())
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The background process of a run (see `launch::spawn_background`).
fn serve(path: &Path, resume: bool, device: Option<String>) -> ExitCode {
    let run = match RunDir::open(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _log = init_logging(&run.log());
    let prepared = if resume {
        launch::prepare_resume(&run, device.as_deref()).map(|(c, r)| (c, Some(r)))
    } else {
        launch::run_config(&run, device.as_deref()).map(|c| (c, None))
    };
    let (config, from) = match prepared {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(run = %run.id, resume, pid = std::process::id(), "serving in the background");
    let opts = TrainOptions {
        headless: true,
        ascii: false,
    };
    train_here(config, run, from, &opts)
}

/// Logs go to `runs/<id>/wick.log`, never to the screen.
fn init_logging(path: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let filter = tracing_subscriber::EnvFilter::try_from_env("WICK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .ok()?;
    Some(guard)
}

fn export_data(idx_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let reports = wick::data::export_bundled_fashion(idx_dir, out)
        .with_context(|| format!("exporting Fashion-MNIST from {}", idx_dir.display()))?;
    for r in reports {
        println!(
            "{}: {} classes, {} train + {} val images, {} bytes",
            r.out_dir.display(),
            r.classes.len(),
            r.train_counts.iter().sum::<usize>(),
            r.val_counts.iter().sum::<usize>(),
            r.bytes
        );
    }
    Ok(())
}

fn export_weights(run: &Path, out: &Path) -> anyhow::Result<()> {
    let e = wick::export::export_run(run, out)?;
    println!(
        "wrote {} tensors from {} (epoch {}, val acc {:.2}%) to {}",
        e.tensors,
        e.checkpoint.display(),
        e.best_epoch,
        e.best_val_acc * 100.0,
        out.display()
    );
    Ok(())
}

fn predict(
    model: PathBuf,
    images: &[PathBuf],
    arch: Option<String>,
    channels: Option<usize>,
    size: Option<usize>,
    top: usize,
    json: bool,
) -> anyhow::Result<()> {
    use wick::predict::{format_prediction, Predictor, Source};
    let source = if model.is_dir() {
        Source::Run(model)
    } else {
        Source::Weights {
            path: model,
            arch,
            channels,
            size,
        }
    };
    let predictor = Predictor::open(&source)?;
    for image in images {
        let p = predictor.predict(image, top)?;
        if json {
            println!("{}", serde_json::to_string(&p)?);
        } else {
            print!("{}", format_prediction(&p));
        }
    }
    Ok(())
}

fn convert(input: &Path, output: &Path) -> anyhow::Result<()> {
    let (n, elements) = wick::convert::convert(input, output)?;
    println!(
        "wrote {n} tensors ({:.2}M values) to {}",
        elements as f64 / 1e6,
        output.display()
    );
    Ok(())
}

fn bench(quick: bool, filter: Vec<String>, json: bool) -> anyhow::Result<()> {
    let mut opts = if quick {
        wick::bench::BenchOptions::quick()
    } else {
        wick::bench::BenchOptions::full()
    };
    opts.filter = filter;
    // Each model row runs in a fresh child of this executable, for an honest peak RSS.
    opts.child = wick::bench::ChildCommand::current_exe(["bench"]).ok();
    let report = wick::bench::run(&opts)?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

fn gpu_check(device: &str) -> anyhow::Result<()> {
    let (dev, name) = wick::engine::device::open(device)?;
    println!("device: {name}");
    let checks = wick::bench::gpu::compare_ops(&dev)?;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    println!("{} checks, {failed} failed", checks.len());
    if failed > 0 {
        anyhow::bail!("{failed} GPU check(s) failed");
    }
    Ok(())
}

fn gpu_bench(device: &str, spec: wick::bench::gpu::BenchSpec) -> anyhow::Result<()> {
    let (dev, _) = wick::engine::device::open(device)?;
    let r = wick::bench::gpu::train_step_bench(&dev, &spec)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
