//! The `wick` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wick::config::{Config, ConfigError};
use wick::launch::{self, TrainOptions};

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
    /// Start a training run (the dashboard on a terminal, progress lines otherwise).
    Train {
        /// Run configuration (TOML).
        #[arg(default_value = "config.toml")]
        config: PathBuf,
        /// No dashboard: one progress line per epoch on stderr and a summary on stdout.
        #[arg(long)]
        headless: bool,
        /// Dashboard with ASCII glyphs only.
        #[arg(long)]
        ascii: bool,
        /// Override `device` from the config: auto, cpu or cuda:N.
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
        /// Architecture, when MODEL is a weights file.
        #[arg(long, default_value = "resnet18")]
        arch: String,
        /// Input channels, when MODEL is a weights file.
        #[arg(long, default_value_t = 3)]
        channels: usize,
        /// Input size, when MODEL is a weights file.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// How many classes to list.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// JSON lines with the raw logits too.
        #[arg(long)]
        json: bool,
    },
    /// (Re)write runs/<id>/report.md and its plots from the run's events.
    Report {
        /// Run directory (runs/<run-id>).
        run: PathBuf,
    },
    /// Convert a PyTorch checkpoint (.pth, zip or legacy format) to safetensors.
    Convert { input: PathBuf, output: PathBuf },
    /// Write a run's best model weights as a plain safetensors file (usable as `model.pretrained`).
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

/// Exit status for a configuration the user must fix.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Train {
            config,
            headless,
            ascii,
            device,
        } => train(&config, headless, ascii, device),
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

fn train(config_path: &Path, headless: bool, ascii: bool, device: Option<String>) -> ExitCode {
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
    let _log = init_logging(&run.log());
    tracing::info!(run = %run.id, config = %config_path.display(), "starting");
    let opts = TrainOptions { headless, ascii };
    match launch::run(config, run.clone(), None, &opts) {
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
    let run = wick::rundir::RunDir::open(run)?;
    let ckpt =
        wick::engine::checkpoint::best_or_latest(&run.checkpoints(), &candle_core::Device::Cpu)?;
    let n = wick::engine::checkpoint::export_weights(&ckpt, out)?;
    println!(
        "wrote {n} tensors from {} (epoch {}, val acc {:.2}%) to {}",
        ckpt.path.display(),
        ckpt.state.best_epoch,
        ckpt.state.best_val_acc * 100.0,
        out.display()
    );
    Ok(())
}

fn predict(
    model: PathBuf,
    images: &[PathBuf],
    arch: String,
    channels: usize,
    size: usize,
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
