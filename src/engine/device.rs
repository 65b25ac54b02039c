//! Choosing the compute device from `device = "auto" | "cpu" | "cuda:N"`.

use candle_core::Device;

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
}

/// Opens the device and describes it for the dashboard header.
pub fn open(spec: &str) -> Result<(Device, String), DeviceError> {
    match spec {
        "cpu" => Ok((Device::Cpu, cpu_name())),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok((d, "cuda:0".into()));
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
                .map(|d| (d, other.to_string()))
                .map_err(|e| DeviceError::Open {
                    device: other.into(),
                    message: e.to_string(),
                })
        }
    }
}

fn cpu_name() -> String {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("cpu ({threads} threads)")
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

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_feature() {
        let e = open("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
