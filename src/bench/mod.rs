//! `wick bench`: CPU training and inference speed of wick's models and kernels, against
//! candle's plain ops and (when installed) PyTorch, measured in one invocation.
//!
//! Rows:
//! - model rows (images/s, batch 32): the default `wick-cnn` train step at 28 px (1 channel),
//!   ResNet-18 train step (forward, cross-entropy, backward, SGD momentum 0.9 + weight decay)
//!   and eval forward at 32 px and 224 px (3 channels, 10 classes);
//! - op rows (ms per call): a 64->64 3x3 convolution on 32x64x56x56 (forward, input gradient,
//!   weight gradient), BatchNorm2d train forward+backward on 32x64x56x56, max-pool 3x3/2 pad 1
//!   forward+backward on 32x64x112x112, and a 1024^3 f32 GEMM.
//!
//! Columns: PyTorch (`bench/reference.py`, same shapes, run as a child `python3` process),
//! candle (the same model code with [`crate::ops::Backend::Candle`]: candle's own ops), wick.
//! Ratios are wick / PyTorch speed (>= 1 means wick is faster).
//!
//! Peak RSS: each model configuration runs in a fresh child process when
//! [`BenchOptions::child`] says how to start one (the CLI re-executes itself: the child is
//! started with the spec in the environment variable [`CHILD_ENV`] and must call
//! [`child_main`]); otherwise in this process, with the peak reset between configurations
//! (Linux `clear_refs`), which over-counts memory the allocator kept from earlier rows.

pub mod gpu;
pub mod loader;
pub mod workloads;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::ops::Backend;
pub use workloads::{ModelSpec, OpKind, OpShapes};

/// Environment variable carrying a [`ModelSpec`] (JSON) to a child process.
pub const CHILD_ENV: &str = "WICK_BENCH_CHILD";
/// Prefix of the one stdout line a child prints: the prefix, then a [`Measure`] as JSON.
pub const RESULT_PREFIX: &str = "WICK_BENCH_RESULT ";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("benchmark workload failed: {0}")]
    Workload(String),
    #[error("benchmark child process: {0}")]
    Child(String),
    #[error("PyTorch reference: {0}")]
    Reference(String),
}

/// How to start a child process for one model configuration: `program args…`, with
/// [`CHILD_ENV`] set. The child must call [`child_main`] and exit.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl ChildCommand {
    /// This executable, with `args` (e.g. a hidden `__bench-child` subcommand).
    pub fn current_exe<I: IntoIterator<Item = S>, S: Into<OsString>>(
        args: I,
    ) -> std::io::Result<Self> {
        Ok(ChildCommand {
            program: std::env::current_exe()?,
            args: args.into_iter().map(Into::into).collect(),
        })
    }
}

/// Where the PyTorch reference lives.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Python interpreter with `torch` importable.
    pub python: PathBuf,
    /// `bench/reference.py`.
    pub script: PathBuf,
}

impl Reference {
    /// `bench/reference.py` from the current directory or from the source tree this binary
    /// was built from, run by the first of `$WICK_BENCH_PYTHON`, `python3` (on `PATH`) and
    /// `/usr/bin/python3` that can `import torch`; `None` if there is no script or no such
    /// interpreter.
    pub fn auto() -> Option<Reference> {
        let candidates = [
            PathBuf::from("bench/reference.py"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/reference.py"),
        ];
        let script = candidates.into_iter().find(|p| p.is_file())?;
        let pythons = std::env::var_os("WICK_BENCH_PYTHON")
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("python3"), PathBuf::from("/usr/bin/python3")]);
        for python in pythons {
            let ok = Command::new(&python)
                .args(["-c", "import torch"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(Reference { python, script });
            }
        }
        None
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tiny shapes and iteration counts (seconds; for smoke tests, not for numbers).
    pub quick: bool,
    /// Timed repetitions per row (median reported); at least 1.
    pub repeats: usize,
    /// Untimed warm-up repetitions per row.
    pub warmup: usize,
    /// Also measure candle's plain ops (slow: ~20 s per ResNet-18 step at 224 px).
    pub candle: bool,
    /// PyTorch reference to run, if any.
    pub reference: Option<Reference>,
    /// Fresh process per model configuration (honest peak RSS); `None`: in this process.
    pub child: Option<ChildCommand>,
    /// Only rows whose name contains one of these (all rows when empty).
    pub filter: Vec<String>,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl BenchOptions {
    /// The full benchmark: 3 timed repetitions after 1 warm-up, candle and PyTorch columns,
    /// in-process (set `child` for honest peak RSS).
    pub fn full() -> Self {
        BenchOptions {
            quick: false,
            repeats: 3,
            warmup: 1,
            candle: true,
            reference: Reference::auto(),
            child: None,
            filter: Vec::new(),
            verbose: false,
        }
    }

    /// Smoke-test sizes: batch 2, small images and ops, 1 repetition, no warm-up.
    pub fn quick() -> Self {
        BenchOptions {
            quick: true,
            repeats: 1,
            warmup: 0,
            ..Self::full()
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }
}

/// One measurement: the median and the samples it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Median of `samples` (images/s or ms, see [`Unit`]).
    pub value: f64,
    pub samples: Vec<f64>,
    /// Peak RSS of the process that ran it, in bytes (model rows).
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// Higher is better.
    ImagesPerSecond,
    /// Lower is better.
    Milliseconds,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::ImagesPerSecond => "img/s",
            Unit::Milliseconds => "ms",
        }
    }
}

/// One table row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub description: String,
    pub unit: Unit,
    pub torch: Option<Measure>,
    pub candle: Option<Measure>,
    pub wick: Option<Measure>,
    /// Floating-point operations per call, for GFLOP/s (GEMM-like rows).
    pub flops: Option<f64>,
}

impl Row {
    /// Speed of `a` relative to `b` (> 1: `a` faster).
    fn speedup(&self, a: &Option<Measure>, b: &Option<Measure>) -> Option<f64> {
        let (a, b) = (a.as_ref()?.value, b.as_ref()?.value);
        match self.unit {
            Unit::ImagesPerSecond => Some(a / b),
            Unit::Milliseconds => Some(b / a),
        }
    }

    /// wick's speed / PyTorch's (>= 1: wick faster).
    pub fn wick_vs_torch(&self) -> Option<f64> {
        self.speedup(&self.wick, &self.torch)
    }

    /// wick's speed / candle's plain ops'.
    pub fn wick_vs_candle(&self) -> Option<f64> {
        self.speedup(&self.wick, &self.candle)
    }

    /// GFLOP/s of a column (ms rows with known flops).
    pub fn gflops(&self, m: &Option<Measure>) -> Option<f64> {
        match (self.unit, self.flops, m) {
            (Unit::Milliseconds, Some(f), Some(m)) => Some(f / (m.value * 1e-3) / 1e9),
            _ => None,
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    pub rayon_threads: usize,
    pub avx512f: bool,
}

impl Machine {
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        #[cfg(target_arch = "x86_64")]
        let avx512f = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512f = false;
        Machine {
            cpu,
            logical_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            rayon_threads: rayon::current_num_threads(),
            avx512f,
        }
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub quick: bool,
    pub repeats: usize,
    /// PyTorch version and thread count, when the reference ran.
    pub torch: Option<String>,
    pub rows: Vec<Row>,
    /// Things the reader should know (skipped columns, measurement caveats).
    pub notes: Vec<String>,
}

impl BenchReport {
    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// The model configurations, in table order.
pub fn model_specs(quick: bool) -> Vec<ModelSpec> {
    let batch = if quick { 2 } else { 32 };
    let big = if quick { 64 } else { 224 };
    let mut v = vec![("wick-cnn", 1, 28, true)];
    for px in [32, big] {
        v.push(("resnet18", 3, px, true));
        v.push(("resnet18", 3, px, false));
    }
    v.into_iter()
        .map(|(arch, cin, px, train)| ModelSpec {
            arch: arch.into(),
            in_channels: cin,
            px,
            batch,
            train,
            backend: "wick".into(),
            warmup: 0,
            reps: 1,
        })
        .collect()
}

/// Runs the benchmark. Errors only when wick's own workloads fail; a missing or failing
/// PyTorch reference becomes a note.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    crate::ops::init_cpu();
    let machine = Machine::detect();
    let reps = opts.repeats.max(1);
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let log = |s: &str| {
        if opts.verbose {
            eprintln!("bench: {s}");
        }
    };

    let specs: Vec<ModelSpec> = model_specs(opts.quick)
        .into_iter()
        .filter(|s| opts.wants(&workloads::spec_name(s)))
        .collect();
    let shapes = if opts.quick {
        OpShapes::quick()
    } else {
        OpShapes::full()
    };
    let op_kinds: Vec<OpKind> = OpKind::all()
        .into_iter()
        .filter(|k| opts.wants(k.name()))
        .collect();

    // PyTorch first, so that its numbers and ours come from the same minutes of machine load.
    let mut torch_rows = std::collections::HashMap::new();
    let mut torch = None;
    if let Some(r) = &opts.reference {
        let names: Vec<String> = specs
            .iter()
            .map(workloads::spec_name)
            .chain(op_kinds.iter().map(|k| k.name().to_string()))
            .collect();
        log("PyTorch reference");
        match run_reference(r, opts, &names) {
            Ok((version, rows)) => {
                torch = Some(version);
                torch_rows = rows;
            }
            Err(e) => notes.push(format!("PyTorch column skipped: {e}")),
        }
    } else {
        notes.push(
            "PyTorch column skipped: no bench/reference.py, or no python3 that imports torch \
             (set WICK_BENCH_PYTHON)"
                .into(),
        );
    }
    if opts.child.is_none() && !specs.is_empty() {
        notes.push(
            "model rows ran in the bench process: peak RSS counts memory kept from earlier rows"
                .into(),
        );
    }
    if opts.quick {
        notes.push("quick mode: tiny shapes, one repetition; not comparable numbers".into());
    }

    for spec in &specs {
        let name = workloads::spec_name(spec);
        let mut row = Row {
            description: format!(
                "{} {} batch {} at {}x{} ({} ch)",
                spec.arch,
                if spec.train {
                    "train step"
                } else {
                    "eval forward"
                },
                spec.batch,
                spec.px,
                spec.px,
                spec.in_channels
            ),
            name: name.clone(),
            unit: Unit::ImagesPerSecond,
            torch: torch_rows.remove(&name),
            candle: None,
            wick: None,
            flops: None,
        };
        let mut s = spec.clone();
        s.warmup = opts.warmup;
        s.reps = reps;
        log(&format!("{name} wick"));
        row.wick = Some(run_model_spec(&s, opts)?);
        if opts.candle {
            s.backend = "candle".into();
            log(&format!("{name} candle"));
            match run_model_spec(&s, opts) {
                Ok(m) => row.candle = Some(m),
                Err(e) => notes.push(format!("{name}: candle column failed: {e}")),
            }
        }
        rows.push(row);
    }

    for kind in op_kinds {
        let name = kind.name().to_string();
        log(&name);
        let wick = workloads::run_op(kind, &shapes, Backend::Wick, opts.warmup, reps)?;
        let candle = if opts.candle {
            match workloads::run_op(kind, &shapes, Backend::Candle, opts.warmup, reps) {
                Ok(m) => Some(m),
                Err(e) => {
                    notes.push(format!("{name}: candle column failed: {e}"));
                    None
                }
            }
        } else {
            None
        };
        rows.push(Row {
            description: kind.describe(&shapes),
            torch: torch_rows.remove(&name),
            name,
            unit: Unit::Milliseconds,
            candle,
            wick: Some(wick),
            flops: kind.flops(&shapes),
        });
    }
    log("loader rows");
    rows.extend(loader::rows(opts, &mut notes));
    if rows
        .iter()
        .any(|r| r.name == "maxpool3x3s2-fwd-bwd" && r.candle.is_some())
    {
        notes.push(
            "max-pool candle column: candle's max_pool2d has no padding and no backward for \
             kernel != stride; its column is wick's composition of candle ops"
                .into(),
        );
    }
    Ok(BenchReport {
        machine,
        quick: opts.quick,
        repeats: reps,
        torch,
        rows,
        notes,
    })
}

fn run_model_spec(spec: &ModelSpec, opts: &BenchOptions) -> Result<Measure, BenchError> {
    match &opts.child {
        None => {
            workloads::reset_peak_rss();
            workloads::run_model(spec)
        }
        Some(c) => {
            let json = serde_json::to_string(spec).map_err(|e| BenchError::Child(e.to_string()))?;
            let out = Command::new(&c.program)
                .args(&c.args)
                .env(CHILD_ENV, json)
                .output()
                .map_err(|e| BenchError::Child(format!("{}: {e}", c.program.display())))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX));
            match line {
                Some(l) if out.status.success() => serde_json::from_str(l)
                    .map_err(|e| BenchError::Child(format!("bad result line {l:?}: {e}"))),
                _ => Err(BenchError::Child(format!(
                    "{} exited with {}; stderr: {}",
                    workloads::spec_name(spec),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                ))),
            }
        }
    }
}

/// Whether this process was started as a benchmark child ([`CHILD_ENV`] is set).
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The child side: runs the [`ModelSpec`] in [`CHILD_ENV`] and prints one line,
/// [`RESULT_PREFIX`] followed by the [`Measure`] as JSON, on stdout. Call it first thing in
/// `main` (it calls [`crate::ops::init_cpu`]).
pub fn child_main() -> Result<(), BenchError> {
    crate::ops::init_cpu();
    let json = std::env::var(CHILD_ENV)
        .map_err(|_| BenchError::Child(format!("{CHILD_ENV} is not set")))?;
    let spec: ModelSpec = serde_json::from_str(&json)
        .map_err(|e| BenchError::Child(format!("bad spec {json:?}: {e}")))?;
    let m = workloads::run_model(&spec)?;
    let line = serde_json::to_string(&m).map_err(|e| BenchError::Child(e.to_string()))?;
    println!("{RESULT_PREFIX}{line}");
    Ok(())
}

#[derive(Deserialize)]
struct ReferenceOutput {
    torch: String,
    threads: usize,
    rows: std::collections::HashMap<String, Measure>,
}

type TorchRows = std::collections::HashMap<String, Measure>;

fn run_reference(
    r: &Reference,
    opts: &BenchOptions,
    names: &[String],
) -> Result<(String, TorchRows), BenchError> {
    let mut cmd = Command::new(&r.python);
    cmd.arg(&r.script)
        .arg("--reps")
        .arg(opts.repeats.max(1).to_string())
        .arg("--warmup")
        .arg(opts.warmup.to_string())
        .arg("--rows")
        .arg(names.join(","));
    if opts.quick {
        cmd.arg("--quick");
    }
    let out = cmd
        .output()
        .map_err(|e| BenchError::Reference(format!("{}: {e}", r.python.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(BenchError::Reference(format!(
            "{} exited with {}: {}",
            r.script.display(),
            out.status,
            err.lines().last().unwrap_or("")
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let parsed: ReferenceOutput = serde_json::from_str(last.unwrap_or(""))
        .map_err(|e| BenchError::Reference(format!("unreadable output: {e}")))?;
    Ok((
        format!("PyTorch {} ({} threads)", parsed.torch, parsed.threads),
        parsed.rows,
    ))
}

fn fmt_value(m: &Option<Measure>) -> String {
    match m {
        Some(m) if m.value >= 100.0 => format!("{:.0}", m.value),
        Some(m) if m.value >= 10.0 => format!("{:.1}", m.value),
        Some(m) => format!("{:.2}", m.value),
        None => "-".into(),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

fn fmt_rss(m: &Option<Measure>) -> String {
    match m.as_ref().and_then(|m| m.peak_rss_bytes) {
        Some(b) => format!("{:.2} GB", b as f64 / 1e9),
        None => "-".into(),
    }
}

/// The table, as `wick bench` prints it.
impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.machine;
        writeln!(
            f,
            "wick bench: {} ({} logical CPUs, AVX-512 {}), {} rayon threads; {}; median of {}{}",
            m.cpu,
            m.logical_cpus,
            if m.avx512f { "yes" } else { "no" },
            m.rayon_threads,
            self.torch.as_deref().unwrap_or("no PyTorch"),
            self.repeats,
            if self.quick { " (QUICK MODE)" } else { "" }
        )?;
        writeln!(
            f,
            "{:<26} {:>5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>7} {:>9} {:>9}",
            "row",
            "unit",
            "PyTorch",
            "candle",
            "wick",
            "wick/PyT",
            "wick/cndl",
            "GFLOP/s",
            "RSS PyT",
            "RSS wick"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<26} {:>5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>7} {:>9} {:>9}",
                r.name,
                r.unit.label(),
                fmt_value(&r.torch),
                fmt_value(&r.candle),
                fmt_value(&r.wick),
                fmt_ratio(r.wick_vs_torch()),
                fmt_ratio(r.wick_vs_candle()),
                r.gflops(&r.wick)
                    .map(|g| format!("{g:.0}"))
                    .unwrap_or_else(|| "-".into()),
                fmt_rss(&r.torch),
                fmt_rss(&r.wick),
            )?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole bench code path in quick mode, in-process, wick and candle columns, and the
    /// PyTorch column when the reference runs here.
    #[test]
    fn quick_bench_runs_and_prints_every_row() {
        let mut opts = BenchOptions::quick();
        opts.filter = vec![
            "wick-cnn".into(),
            "resnet18-forward-32".into(),
            "conv3x3".into(),
            "batchnorm".into(),
            "maxpool".into(),
            "sgemm".into(),
        ];
        opts.reference = None;
        let report = run(&opts).expect("bench runs");
        let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "wick-cnn-train-28",
                "resnet18-forward-32",
                "conv3x3-forward",
                "conv3x3-input-grad",
                "conv3x3-weight-grad",
                "batchnorm-train-fwd-bwd",
                "maxpool3x3s2-fwd-bwd",
                "sgemm"
            ]
        );
        for r in &report.rows {
            let w = r.wick.as_ref().expect("wick measured");
            assert!(w.value.is_finite() && w.value > 0.0, "{}: {w:?}", r.name);
            assert!(r.candle.is_some(), "{}: candle measured", r.name);
            assert!(r.wick_vs_candle().is_some());
        }
        let text = report.to_string();
        assert!(text.contains("wick-cnn-train-28"), "{text}");
        assert!(text.contains("QUICK MODE"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json()).expect("report JSON parses");
        assert_eq!(json["rows"].as_array().map(Vec::len), Some(8));
    }

    #[test]
    fn ratios_follow_the_unit() {
        let m = |v: f64| {
            Some(Measure {
                value: v,
                samples: vec![v],
                peak_rss_bytes: None,
            })
        };
        let mut r = Row {
            name: "x".into(),
            description: String::new(),
            unit: Unit::ImagesPerSecond,
            torch: m(100.0),
            candle: m(10.0),
            wick: m(50.0),
            flops: None,
        };
        assert_eq!(r.wick_vs_torch(), Some(0.5));
        assert_eq!(r.wick_vs_candle(), Some(5.0));
        r.unit = Unit::Milliseconds;
        r.flops = Some(2e9);
        assert_eq!(r.wick_vs_torch(), Some(2.0));
        assert_eq!(r.gflops(&r.wick), Some(40.0));
    }

    /// The child protocol, through this test binary: re-executed with [`CHILD_ENV`] set, the
    /// `child_hook` test below runs the spec and prints the result line.
    #[test]
    fn child_process_reports_a_measure_and_peak_rss() {
        let mut opts = BenchOptions::quick();
        opts.reference = None;
        opts.candle = false;
        opts.filter = vec!["wick-cnn".into()];
        opts.child = Some(
            ChildCommand::current_exe([
                "--exact",
                "bench::tests::child_hook",
                "--nocapture",
                "--include-ignored",
            ])
            .expect("current exe"),
        );
        let report = run(&opts).expect("bench runs through a child");
        let w = report.rows[0].wick.as_ref().expect("wick measured");
        assert!(w.value > 0.0);
        assert!(w.peak_rss_bytes.unwrap_or(0) > 1_000_000, "{w:?}");
    }

    /// Not a test of its own: the entry point of the child processes above.
    #[test]
    #[ignore = "entry point for child_process_reports_a_measure_and_peak_rss"]
    fn child_hook() {
        if is_child() {
            child_main().expect("child runs");
        }
    }
}
