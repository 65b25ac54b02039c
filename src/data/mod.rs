//! Image data: ImageFolder scanning, idx files, transforms and the threaded loader.
