//! Builds the libjpeg-turbo shim (src/data/jpeg_region.c) that the loader uses to decode JPEGs
//! (only the region a random crop keeps). Without libjpeg's headers the shim is left out
//! (`cfg(wick_no_libjpeg)`) and JPEGs decode through the `image` crate as other formats do:
//! slower, same results within the decoders' rounding. Install `libjpeg62-turbo-dev` (Debian)
//! or `libjpeg-turbo8-dev` (Ubuntu) for the fast path.

fn main() {
    println!("cargo::rerun-if-changed=src/data/jpeg_region.c");
    println!("cargo::rerun-if-env-changed=WICK_NO_LIBJPEG");
    println!("cargo::rustc-check-cfg=cfg(wick_no_libjpeg)");
    let disabled = std::env::var_os("WICK_NO_LIBJPEG").is_some_and(|v| v != "0");
    if disabled {
        println!("cargo::rustc-cfg=wick_no_libjpeg");
        return;
    }
    let built = cc::Build::new()
        .file("src/data/jpeg_region.c")
        .warnings(true)
        .opt_level(2)
        .try_compile("wick_jpeg_region");
    match built {
        Ok(()) => println!("cargo::rustc-link-lib=jpeg"),
        Err(e) => {
            println!(
                "cargo::warning=cannot build the libjpeg shim ({e}); install libjpeg62-turbo-dev \
                 (Debian) for the fast path. JPEGs decode through the image crate"
            );
            println!("cargo::rustc-cfg=wick_no_libjpeg");
        }
    }
}
