//! Choosing the compute device from `device = "auto" | "cpu" | "cuda:N"`, checking the
//! precision against it, and sampling the GPU for the dashboard header ([`GpuMonitor`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;

use crate::config::Precision;
use crate::hub::EventHub;
use crate::protocol::Event;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "device {0:?} asked for, but this wick was built without CUDA: rebuild with `cargo build --release --features cuda` (see README.md, \"GPU\")"
    )]
    NoCudaSupport(String),
    #[error("cannot open {device}: {message}")]
    Open { device: String, message: String },
    #[error("unknown device {0:?}: expected \"auto\", \"cpu\" or \"cuda:N\"")]
    Unknown(String),
    #[error(
        "train.precision = \"{precision}\" needs a CUDA device, but the run is on {device}: on the CPU, candle has no bf16 matrix multiply and wick's kernels are f32; set precision = \"f32\" (or use --device cuda:N)"
    )]
    PrecisionNeedsCuda { precision: String, device: String },
}

/// The precision a run trains in on `device`: `asked` where the device supports it. bf16 on the
/// CPU is an error when the CPU was asked for (`spec` `"cpu"`), and falls back to f32 with a
/// warning (the second value) when `auto` found no GPU.
pub fn resolve_precision(
    asked: Precision,
    device: &Device,
    spec: &str,
    device_name: &str,
) -> Result<(Precision, Option<String>), DeviceError> {
    match asked.compute_dtype() {
        Some(dt) if !crate::model::autocast::supported(dt, device) => {
            if spec == "auto" {
                Ok((
                    Precision::F32,
                    Some(format!(
                        "train.precision = \"{}\" needs a CUDA device; device = \"auto\" found none, training in f32 on {device_name}",
                        asked.name()
                    )),
                ))
            } else {
                Err(DeviceError::PrecisionNeedsCuda {
                    precision: asked.name().into(),
                    device: device_name.into(),
                })
            }
        }
        _ => Ok((asked, None)),
    }
}

/// Opens the device and describes it for the dashboard header.
pub fn open(spec: &str) -> Result<(Device, String), DeviceError> {
    match spec {
        "cpu" => Ok((Device::Cpu, cpu_name())),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    let name = describe_cuda("cuda:0", &d);
                    return Ok((d, name));
                }
            }
            Ok((Device::Cpu, cpu_name()))
        }
        other => {
            let Some(n) = crate::config::parse_cuda(other) else {
                return Err(DeviceError::Unknown(other.into()));
            };
            if !cfg!(feature = "cuda") {
                return Err(DeviceError::NoCudaSupport(other.into()));
            }
            Device::new_cuda(n)
                .map(|d| {
                    let name = describe_cuda(other, &d);
                    (d, name)
                })
                .map_err(|e| DeviceError::Open {
                    device: other.into(),
                    message: e.to_string(),
                })
        }
    }
}

/// `"cuda:0 H200"`: the spec and the GPU's name without the vendor.
fn describe_cuda(spec: &str, device: &Device) -> String {
    match gpu_name(device) {
        Some(name) => format!("{spec} {}", name.trim_start_matches("NVIDIA ").trim()),
        None => spec.to_string(),
    }
}

/// The GPU's name from the CUDA driver (`"NVIDIA H200"`).
#[cfg(feature = "cuda")]
pub fn gpu_name(device: &Device) -> Option<String> {
    let cuda = device.as_cuda_device().ok()?;
    cuda.cuda_stream().context().name().ok()
}

#[cfg(not(feature = "cuda"))]
pub fn gpu_name(_device: &Device) -> Option<String> {
    None
}

fn cpu_name() -> String {
    // The kernels' thread pool, which RAYON_NUM_THREADS can make smaller than the cores.
    let threads = rayon::current_num_threads().max(1);
    format!("cpu ({threads} threads)")
}

/// One reading of the GPU (device-wide: other processes' memory included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSample {
    pub memory_used_mib: u64,
    pub memory_total_mib: u64,
    /// Percent of the last sample period a kernel ran (`nvidia-smi`'s `utilization.gpu`).
    pub utilization_pct: Option<u32>,
}

impl GpuSample {
    fn event(self) -> Event {
        Event::Gpu {
            memory_used_mib: self.memory_used_mib,
            memory_total_mib: self.memory_total_mib,
            utilization_pct: self.utilization_pct,
        }
    }

    /// Worth a new event after `last`: memory moved by 1% of the total (at least 64 MiB) or
    /// the utilisation by 10 points.
    fn differs(self, last: GpuSample) -> bool {
        let step = (self.memory_total_mib / 100).max(64);
        self.memory_used_mib.abs_diff(last.memory_used_mib) >= step
            || self.memory_total_mib != last.memory_total_mib
            || match (self.utilization_pct, last.utilization_pct) {
                (Some(a), Some(b)) => a.abs_diff(b) >= 10,
                (a, b) => a.is_some() != b.is_some(),
            }
    }
}

/// Parses one line of `nvidia-smi --query-gpu=memory.used,memory.total,utilization.gpu
/// --format=csv,noheader,nounits` (`"12034, 143771, 87"`; the utilisation may be `[N/A]`).
pub fn parse_smi_line(line: &str) -> Option<GpuSample> {
    let mut fields = line.split(',').map(str::trim);
    let used = fields.next()?.parse().ok()?;
    let total = fields.next()?.parse().ok()?;
    let util = fields.next().and_then(|u| u.parse().ok());
    Some(GpuSample {
        memory_used_mib: used,
        memory_total_mib: total,
        utilization_pct: util,
    })
}

/// Where samples come from: `nvidia-smi` for the GPU with this id (memory and utilisation),
/// else the CUDA driver (memory only).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
enum Source {
    Smi(String),
    #[cfg(feature = "cuda")]
    Driver(Arc<candle_core::cuda_backend::cudarc::driver::CudaContext>),
}

impl Source {
    fn sample(&self) -> Option<GpuSample> {
        match self {
            Source::Smi(id) => {
                let out = std::process::Command::new("nvidia-smi")
                    .args([
                        "--query-gpu=memory.used,memory.total,utilization.gpu",
                        "--format=csv,noheader,nounits",
                        "-i",
                        id,
                    ])
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .ok()?;
                if !out.status.success() {
                    return None;
                }
                parse_smi_line(String::from_utf8_lossy(&out.stdout).lines().next()?)
            }
            #[cfg(feature = "cuda")]
            Source::Driver(ctx) => {
                let (free, total) = ctx.mem_get_info().ok()?;
                Some(GpuSample {
                    memory_used_mib: ((total - free.min(total)) >> 20) as u64,
                    memory_total_mib: (total >> 20) as u64,
                    utilization_pct: None,
                })
            }
        }
    }
}

/// Samples the training GPU every few seconds on a thread of its own and emits
/// [`Event::Gpu`] when the reading changed noticeably (or a minute passed), for the dashboard
/// header: the UI never touches the device. Uses `nvidia-smi` (memory and utilisation) when it
/// answers for this GPU, else the CUDA driver (memory only). Stopped by [`GpuMonitor::stop`] or
/// on drop; no event is emitted after that returns (a slow `nvidia-smi` is not waited for).
pub struct GpuMonitor {
    /// Set to stop; held while an event is emitted.
    stopped: Arc<Mutex<bool>>,
}

impl GpuMonitor {
    /// Starts sampling `device` (`None` off CUDA, or when neither source answers).
    pub fn start(device: &Device, hub: Arc<EventHub>, every: Duration) -> Option<GpuMonitor> {
        let source = Self::source(device)?;
        let first = source.sample()?;
        let stopped = Arc::new(Mutex::new(false));
        let flag = stopped.clone();
        // Emits unless stopped; false once stopped.
        let emit = move |s: Option<GpuSample>| -> bool {
            let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
            if *guard {
                return false;
            }
            if let Some(s) = s {
                hub.emit(s.event());
            }
            true
        };
        emit(Some(first));
        std::thread::Builder::new()
            .name("wick-gpu-monitor".into())
            .spawn(move || {
                let (mut last, mut last_at) = (first, Instant::now());
                loop {
                    std::thread::sleep(every);
                    if !emit(None) {
                        return;
                    }
                    let Some(s) = source.sample() else { continue };
                    if s.differs(last) || last_at.elapsed() >= Duration::from_secs(60) {
                        if !emit(Some(s)) {
                            return;
                        }
                        (last, last_at) = (s, Instant::now());
                    }
                }
            })
            .ok()?;
        Some(GpuMonitor { stopped })
    }

    #[cfg(feature = "cuda")]
    fn source(device: &Device) -> Option<Source> {
        let ctx = device
            .as_cuda_device()
            .ok()?
            .cuda_stream()
            .context()
            .clone();
        let smi = ctx.uuid().ok().map(|u| Source::Smi(uuid_string(&u.bytes)));
        match smi {
            Some(s) if s.sample().is_some() => Some(s),
            _ => Some(Source::Driver(ctx)),
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn source(_device: &Device) -> Option<Source> {
        None
    }

    /// No event is emitted once this returns.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }
}

impl Drop for GpuMonitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nvidia-smi -i` form of a CUDA device UUID: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_string(bytes: &[std::ffi::c_char; 16]) -> String {
    let h: Vec<String> = bytes.iter().map(|b| format!("{:02x}", *b as u8)).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_open() {
        assert!(open("cpu").unwrap().0.is_cpu());
        #[cfg(not(feature = "cuda"))]
        assert!(open("auto").unwrap().0.is_cpu());
    }

    #[test]
    fn bf16_on_the_cpu_is_refused_when_asked_for_and_falls_back_under_auto() {
        let cpu = Device::Cpu;
        let (p, warn) = resolve_precision(Precision::F32, &cpu, "cpu", "cpu").unwrap();
        assert_eq!((p, warn), (Precision::F32, None));
        let e = resolve_precision(Precision::Bf16, &cpu, "cpu", "cpu (2 threads)")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.precision = \"bf16\" needs a CUDA device"),
            "{e}"
        );
        assert!(e.contains("cpu (2 threads)"), "{e}");
        let (p, warn) = resolve_precision(Precision::Bf16, &cpu, "auto", "cpu").unwrap();
        assert_eq!(p, Precision::F32);
        assert!(warn.unwrap().contains("training in f32"));
    }

    #[test]
    fn smi_lines_and_change_detection() {
        let s = parse_smi_line("12034, 143771, 87").unwrap();
        assert_eq!(
            s,
            GpuSample {
                memory_used_mib: 12034,
                memory_total_mib: 143771,
                utilization_pct: Some(87)
            }
        );
        let na = parse_smi_line("512, 81559, [N/A]").unwrap();
        assert_eq!(na.utilization_pct, None);
        assert!(parse_smi_line("").is_none());
        assert!(parse_smi_line("No devices were found").is_none());
        let mut t = s;
        t.memory_used_mib += 1000;
        assert!(!t.differs(s), "1000 MiB of 140 GiB is under 1%");
        t.memory_used_mib += 1000;
        assert!(t.differs(s));
        let mut u = s;
        u.utilization_pct = Some(80);
        assert!(!u.differs(s));
        u.utilization_pct = Some(70);
        assert!(u.differs(s));
        let dir = tempfile::tempdir().unwrap();
        let hub = EventHub::open(&dir.path().join("events.jsonl")).unwrap();
        assert!(GpuMonitor::start(&Device::Cpu, hub, Duration::from_millis(1)).is_none());
    }

    #[test]
    fn uuid_formats_like_nvidia_smi() {
        let b: [std::ffi::c_char; 16] = std::array::from_fn(|i| (i * 17) as u8 as std::ffi::c_char);
        assert_eq!(uuid_string(&b), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_feature() {
        let e = open("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
