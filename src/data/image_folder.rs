//! torchvision-style ImageFolder trees (`root/<class>/<image>`) and unlabelled image folders.
//!
//! Class names are the sub-folder names, sorted; an image's label is its class's position in
//! that list. Files are sorted so that a scan is deterministic whatever order the file system
//! lists them in. Hidden entries (names starting with `.`) are ignored, and so are files whose
//! extension is not an image one.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::DataError;

/// File extensions recognised as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

/// How deep nested folders are followed (inside a class folder, or an unlabelled root).
const MAX_DEPTH: usize = 32;

/// One image and, when known, its label (an index into [`ImageFolder::classes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: Option<usize>,
}

/// A labelled image tree: one sub-folder of `root` per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Sorted class names (the sub-folder names).
    pub classes: Vec<String>,
    /// Every image, class by class, sorted by path within a class. Labels are always `Some`.
    pub samples: Vec<Sample>,
}

impl ImageFolder {
    /// Scans `root`: each non-hidden sub-folder is a class, every image file below it (nested
    /// folders included) is a sample of that class. Files directly in `root` are ignored.
    ///
    /// Errors: `root` missing or not a directory, no class folder, a class folder without any
    /// image (the error names that folder), or an unreadable directory.
    pub fn scan(root: &Path) -> Result<ImageFolder, DataError> {
        check_dir(root)?;
        let mut class_dirs: Vec<(String, PathBuf)> = Vec::new();
        for entry in read_dir_sorted(root)? {
            if is_hidden(&entry) {
                continue;
            }
            if is_dir(&entry)? {
                let Some(name) = entry.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                class_dirs.push((name, entry));
            }
        }
        if class_dirs.is_empty() {
            return Err(DataError::NoClasses {
                path: root.to_path_buf(),
            });
        }
        // Sort by the (lossy) name so that labels match torchvision's `sorted(classes)`.
        class_dirs.sort_by(|a, b| a.0.cmp(&b.0));

        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut samples = Vec::new();
        for (label, (name, dir)) in class_dirs.into_iter().enumerate() {
            let mut files = Vec::new();
            collect_images(&dir, 0, &mut files)?;
            if files.is_empty() {
                return Err(DataError::EmptyClass {
                    path: dir,
                    class: name,
                });
            }
            samples.extend(files.into_iter().map(|path| Sample {
                path,
                label: Some(label),
            }));
            classes.push(name);
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when there are no samples (never the case for a folder that `scan` accepted).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The sample paths, in sample order (what [`super::Loader::new`] takes).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.samples.iter().map(|s| s.path.clone()).collect()
    }

    /// Number of samples of each class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for label in self.samples.iter().filter_map(|s| s.label) {
            if let Some(c) = counts.get_mut(label) {
                *c += 1;
            }
        }
        counts
    }
}

/// Every image below `root` (flat or nested folders), sorted by path; no labels.
///
/// Errors: `root` missing or not a directory, no image at all, or an unreadable directory.
pub fn scan_unlabelled(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    check_dir(root)?;
    let mut files = Vec::new();
    collect_images(root, 0, &mut files)?;
    if files.is_empty() {
        return Err(DataError::NoImages {
            path: root.to_path_buf(),
        });
    }
    Ok(files)
}

/// Checks that `train` and `val` have the same class folders; the error lists the classes
/// missing from either side.
pub fn check_same_classes(train: &ImageFolder, val: &ImageFolder) -> Result<(), DataError> {
    if train.classes == val.classes {
        return Ok(());
    }
    let t: BTreeSet<&String> = train.classes.iter().collect();
    let v: BTreeSet<&String> = val.classes.iter().collect();
    Err(DataError::ClassMismatch {
        train: train.root.clone(),
        val: val.root.clone(),
        missing_in_val: t.difference(&v).map(|s| s.to_string()).collect(),
        missing_in_train: v.difference(&t).map(|s| s.to_string()).collect(),
    })
}

/// True when `path` has one of the [`IMAGE_EXTENSIONS`] (any case) and is not hidden.
pub fn is_image_file(path: &Path) -> bool {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    {
        return false;
    }
    path.extension().is_some_and(|ext| {
        let ext = ext.to_string_lossy();
        IMAGE_EXTENSIONS
            .iter()
            .any(|known| ext.eq_ignore_ascii_case(known))
    })
}

fn check_dir(root: &Path) -> Result<(), DataError> {
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(DataError::NotADirectory {
            path: root.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DataError::NotFound {
            path: root.to_path_buf(),
        }),
        Err(e) => Err(DataError::io(root, e)),
    }
}

/// The entries of `dir`, sorted by path.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        out.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Is `path` a directory (following symlinks)? A dangling symlink is not an error: it is
/// neither a directory nor an image we can read, and decoding will report it if it is named
/// like an image.
fn is_dir(path: &Path) -> Result<bool, DataError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Appends every image file below `dir` (recursively, sorted, hidden entries skipped).
fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Err(DataError::TooDeep {
            path: dir.to_path_buf(),
            max_depth: MAX_DEPTH,
        });
    }
    for entry in read_dir_sorted(dir)? {
        if is_hidden(&entry) {
            continue;
        }
        if is_dir(&entry)? {
            collect_images(&entry, depth + 1, out)?;
        } else if is_image_file(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, b"x").expect("write");
    }

    #[test]
    fn scans_sorted_classes_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        touch(&root.join("dog/b.PNG"));
        touch(&root.join("dog/a.jpg"));
        touch(&root.join("dog/nested/c.JpEg"));
        touch(&root.join("dog/notes.txt"));
        touch(&root.join("dog/.hidden.png"));
        touch(&root.join("cat/z.webp"));
        touch(&root.join("cat/y.TIFF"));
        touch(&root.join(".git/objects/x.png"));
        touch(&root.join("README.png")); // a file at the root is not a class
        let folder = ImageFolder::scan(root).expect("scan");
        assert_eq!(folder.classes, vec!["cat", "dog"]);
        let got: Vec<(String, Option<usize>)> = folder
            .samples
            .iter()
            .map(|s| {
                let rel = s.path.strip_prefix(root).expect("under root");
                (rel.to_string_lossy().into_owned(), s.label)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("cat/y.TIFF".to_string(), Some(0)),
                ("cat/z.webp".to_string(), Some(0)),
                ("dog/a.jpg".to_string(), Some(1)),
                ("dog/b.PNG".to_string(), Some(1)),
                ("dog/nested/c.JpEg".to_string(), Some(1)),
            ]
        );
        assert_eq!(folder.class_counts(), vec![2, 3]);
        assert_eq!(folder.paths().len(), 5);
    }

    #[test]
    fn missing_root_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = ImageFolder::scan(&missing).expect_err("must fail");
        assert!(matches!(err, DataError::NotFound { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn file_root_is_not_a_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file.png");
        touch(&file);
        let err = ImageFolder::scan(&file).expect_err("must fail");
        assert!(matches!(err, DataError::NotADirectory { .. }));
        assert!(err.to_string().contains("file.png"), "{err}");
        let err = scan_unlabelled(&file).expect_err("must fail");
        assert!(matches!(err, DataError::NotADirectory { .. }));
    }

    #[test]
    fn no_class_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a.png"));
        let err = ImageFolder::scan(dir.path()).expect_err("must fail");
        assert!(matches!(err, DataError::NoClasses { .. }));
        assert!(err.to_string().contains("no class folders"), "{err}");
    }

    #[test]
    fn empty_class_folder_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("cat/a.png"));
        touch(&dir.path().join("dog/readme.txt"));
        let err = ImageFolder::scan(dir.path()).expect_err("must fail");
        match &err {
            DataError::EmptyClass { path, class } => {
                assert_eq!(class, "dog");
                assert!(path.ends_with("dog"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("dog"), "{err}");
    }

    #[test]
    fn unlabelled_flat_and_nested() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("b.png"));
        touch(&dir.path().join("a/c.jpg"));
        touch(&dir.path().join("a/.d.jpg"));
        touch(&dir.path().join("x.txt"));
        let files = scan_unlabelled(dir.path()).expect("scan");
        let rel: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("under").to_path_buf())
            .collect();
        assert_eq!(rel, vec![PathBuf::from("a/c.jpg"), PathBuf::from("b.png")]);

        let empty = tempfile::tempdir().expect("tempdir");
        let err = scan_unlabelled(empty.path()).expect_err("must fail");
        assert!(matches!(err, DataError::NoImages { .. }));
    }

    #[test]
    fn class_mismatch_names_both_sides() {
        let dir = tempfile::tempdir().expect("tempdir");
        for c in ["cat", "dog", "eel"] {
            touch(&dir.path().join("train").join(c).join("1.png"));
        }
        for c in ["cat", "dog", "fox"] {
            touch(&dir.path().join("val").join(c).join("1.png"));
        }
        touch(&dir.path().join("val2/cat/1.png"));
        touch(&dir.path().join("val2/dog/1.png"));
        touch(&dir.path().join("val2/eel/1.png"));
        let train = ImageFolder::scan(&dir.path().join("train")).expect("train");
        let val = ImageFolder::scan(&dir.path().join("val")).expect("val");
        let val2 = ImageFolder::scan(&dir.path().join("val2")).expect("val2");
        check_same_classes(&train, &val2).expect("same classes");
        let err = check_same_classes(&train, &val).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("missing from val: eel"), "{msg}");
        assert!(msg.contains("missing from train: fox"), "{msg}");
    }

    #[test]
    fn image_extension_check() {
        assert!(is_image_file(Path::new("a/b.JPG")));
        assert!(is_image_file(Path::new("b.tif")));
        assert!(!is_image_file(Path::new("b.txt")));
        assert!(!is_image_file(Path::new("png")));
        assert!(!is_image_file(Path::new(".x.png")));
    }
}
