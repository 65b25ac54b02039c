//! Self-training end to end on small real slices: the options of pseudo-label rounds, the
//! online FixMatch-style mode, commands through the channel, and resume-safe state. Also the
//! (ignored) export of the Fashion-MNIST benchmark folders used by `configs/bench/ssl-*.toml`.

mod common;

use std::path::PathBuf;

/// Writes the whole of Fashion-MNIST as ImageFolders for the self-training benchmark
/// (`configs/bench/ssl-*.toml`): `train/` with the 60,000 training images (6,000 per class;
/// the runs keep 40 labels per class and hide the rest), `val/` with the 10,000 test images.
///
/// ```text
/// WICK_SSL_DATA=/tmp/wick-fmnist-full cargo test --release --test self_training -- --ignored export_benchmark_data
/// ```
#[test]
#[ignore = "writes 70,000 PNGs (about 30 s); run by configs/bench/ssl-run.sh"]
fn export_benchmark_data() {
    let out = std::env::var_os("WICK_SSL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/wick-fmnist-full"));
    let spec = wick::data::ExportSpec {
        classes: wick::data::FASHION_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        train_per_class: 6000,
        val_per_class: 1000,
        overwrite: true,
    };
    let report = wick::data::export_fashion_mnist(
        std::path::Path::new("/usr/share/datasets/fashion-mnist"),
        &out,
        &spec,
    )
    .expect("export");
    assert_eq!(report.train_counts.iter().sum::<usize>(), 60_000);
    assert_eq!(report.val_counts.iter().sum::<usize>(), 10_000);
    eprintln!("wrote {} ({} bytes)", out.display(), report.bytes);
}
