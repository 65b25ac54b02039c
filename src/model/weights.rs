//! Loading pretrained weights into a built model's `VarMap`.
//!
//! Formats, told apart by their first bytes (not the file name):
//! - safetensors;
//! - PyTorch's zip `.pth`/`.pt` (`torch.save` since 1.6), read with candle's pickle reader; the
//!   state dict may be the top-level object or sit under `state_dict` / `model`;
//! - PyTorch's legacy (pre-1.6, non-zip) `.pth`, read here with candle's pickle machinery.
//!
//! A `module.` prefix on every name (from `nn.DataParallel`) is stripped, and
//! `num_batches_tracked` is ignored.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use super::{is_backbone, ModelError};

/// What [`load_weights`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of tensors copied from the file into the model.
    pub loaded: usize,
    /// When the head's shape differed (another class count): `(shape of the head weight in the
    /// file, shape of the new head weight)`; the head then keeps its fresh initialisation.
    pub head_replaced: Option<(Vec<usize>, Vec<usize>)>,
}

/// Loads pretrained weights (safetensors, or a PyTorch `.pth`) into the already-built `varmap`.
///
/// Every variable of the model must be in the file with the same shape, and every tensor of the
/// file must be in the model, except:
/// - `num_batches_tracked` (ignored);
/// - the head (names under `head_prefix`): if any of its tensors has another shape (another class
///   count), the whole head is left at its fresh initialisation and reported in
///   [`LoadReport::head_replaced`].
///
/// Nothing is written unless the whole file checks out. Dtypes are converted to the model's.
pub fn load_weights(
    varmap: &VarMap,
    path: &Path,
    head_prefix: &str,
) -> Result<LoadReport, ModelError> {
    load_tensors(varmap, &read_checkpoint(path)?, path, head_prefix)
}

/// [`load_weights`] of tensors already read from `path` (by [`read_checkpoint`]); `path` names
/// the file in errors.
pub fn load_tensors(
    varmap: &VarMap,
    file: &BTreeMap<String, Tensor>,
    path: &Path,
    head_prefix: &str,
) -> Result<LoadReport, ModelError> {
    let data = varmap.data().lock().map_err(|_| ModelError::Read {
        path: path.to_path_buf(),
        message: "the model's VarMap lock is poisoned".into(),
    })?;
    let model: BTreeMap<&str, &candle_core::Var> =
        data.iter().map(|(k, v)| (k.as_str(), v)).collect();

    // Check everything first.
    let mut head_mismatch = false;
    for (&name, var) in &model {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let Some(t) = file.get(name) else {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                name: name.to_string(),
                shape: var.dims().to_vec(),
            });
        };
        if t.dims() != var.dims() {
            if is_backbone(name, head_prefix) {
                return Err(ModelError::ShapeMismatch {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    checkpoint: t.dims().to_vec(),
                    model: var.dims().to_vec(),
                });
            }
            head_mismatch = true;
        }
    }
    if let Some((name, t)) = file.iter().find(|(n, _)| !model.contains_key(n.as_str())) {
        return Err(ModelError::Unexpected {
            path: path.to_path_buf(),
            name: name.clone(),
            shape: t.dims().to_vec(),
        });
    }

    let mut loaded = 0;
    for (&name, var) in &model {
        if name.ends_with("num_batches_tracked")
            || (head_mismatch && !is_backbone(name, head_prefix))
        {
            continue;
        }
        let Some(t) = file.get(name) else { continue };
        let tensor_err = |source| ModelError::Tensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            source: Box::new(source),
        };
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(tensor_err)?;
        var.set(&t).map_err(tensor_err)?;
        loaded += 1;
    }
    let head_replaced = if head_mismatch {
        let w = format!("{head_prefix}.weight");
        let file_shape = file.get(&w).map(|t| t.dims().to_vec()).unwrap_or_default();
        let model_shape = model
            .get(w.as_str())
            .map(|v| v.dims().to_vec())
            .unwrap_or_default();
        Some((file_shape, model_shape))
    } else {
        None
    };
    Ok(LoadReport {
        loaded,
        head_replaced,
    })
}

/// Reads every tensor of a checkpoint file onto the CPU, keyed by name, without
/// `num_batches_tracked` and without a common `module.` prefix.
pub fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let read_err = |message: String| ModelError::Read {
        path: path.to_path_buf(),
        message,
    };
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|e| read_err(e.to_string()))?;
    let head = &head[..n];
    let tensors: Vec<(String, Tensor)> = if head.starts_with(b"PK\x03\x04") {
        read_zip_pth(path).map_err(|e| read_err(e.to_string()))?
    } else if head.first() == Some(&0x80) {
        read_legacy_pth(path).map_err(|e| read_err(e.to_string()))?
    } else {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| {
                read_err(format!(
                    "not a safetensors file nor a PyTorch checkpoint ({e})"
                ))
            })?
            .into_iter()
            .collect()
    };
    let mut tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .collect();
    if tensors.is_empty() {
        return Err(read_err("the file holds no tensors".into()));
    }
    if tensors.iter().all(|(n, _)| n.starts_with("module.")) {
        for (n, _) in tensors.iter_mut() {
            *n = n["module.".len()..].to_string();
        }
    }
    Ok(tensors.into_iter().collect())
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_zip_pth(path: &Path) -> candle_core::Result<Vec<(String, Tensor)>> {
    let all = candle_core::pickle::read_all_with_key(path, None)?;
    if !all.is_empty() {
        return Ok(all);
    }
    for key in ["state_dict", "model", "model_state_dict"] {
        if let Ok(all) = candle_core::pickle::read_all_with_key(path, Some(key)) {
            if !all.is_empty() {
                return Ok(all);
            }
        }
    }
    Ok(Vec::new())
}

/// The legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`, and everything
/// before PyTorch 1.6): five pickles in a row (magic number, protocol version, system info, the
/// object with persistent storage ids, the list of storage keys), then for each key in that order
/// the storage as a little-endian `i64` element count followed by its raw bytes.
fn read_legacy_pth(path: &Path) -> candle_core::Result<Vec<(String, Tensor)>> {
    // The first pickle is the magic number 0x1950a86a20f9469cfc6c as PROTO 2, LONG1 of 10 bytes,
    // STOP. It is checked byte for byte: candle's LONG1 decoder cannot hold 80 bits.
    const MAGIC: [u8; 15] = [
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ];
    let file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len() as usize;
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 15];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        candle_core::bail!("not a PyTorch checkpoint (bad legacy magic number)")
    }
    let next = |r: &mut BufReader<std::fs::File>| -> candle_core::Result<Object> {
        let mut stack = Stack::empty();
        stack.read_loop(r)?;
        stack.finalize()
    };
    let _protocol = next(&mut r)?;
    let _sys_info = next(&mut r)?;
    let obj = next(&mut r)?;
    let keys = match next(&mut r)? {
        Object::List(keys) | Object::Tuple(keys) => keys
            .into_iter()
            .map(|k| match k {
                Object::Unicode(s) => Ok(s),
                other => Err(candle_core::Error::Msg(format!(
                    "legacy checkpoint: storage key {other:?} is not a string"
                ))),
            })
            .collect::<candle_core::Result<Vec<String>>>()?,
        other => {
            candle_core::bail!("legacy checkpoint: expected a list of storage keys, got {other:?}")
        }
    };

    // Tensor descriptions; `into_tensor_info` names the storage "<dir>/<key>".
    let dict = find_state_dict(obj)?;
    let mut infos = Vec::new();
    for (name, value) in dict {
        if let Some(info) = value.into_tensor_info(name, Path::new(""))? {
            infos.push(info);
        }
    }
    let mut dtypes: HashMap<String, DType> = HashMap::new();
    for info in &infos {
        dtypes.insert(storage_key(&info.path).to_string(), info.dtype);
    }

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    for key in keys {
        let mut len = [0u8; 8];
        r.read_exact(&mut len)?;
        let numel = i64::from_le_bytes(len);
        if numel < 0 {
            candle_core::bail!("legacy checkpoint: storage {key} has negative size {numel}")
        }
        let numel = numel as usize;
        let dtype = dtypes.get(&key).copied();
        let elem = dtype.map(|d| d.size_in_bytes()).unwrap_or(0);
        match dtype {
            Some(dtype) => {
                // Refuse sizes the file cannot hold before allocating (corrupt or truncated file).
                let bytes = numel.checked_mul(elem).filter(|&b| b <= file_len);
                let Some(bytes) = bytes else {
                    candle_core::bail!(
                        "legacy checkpoint: storage {key} claims {numel} elements, more than the file holds"
                    )
                };
                let mut buf = vec![0u8; bytes];
                r.read_exact(&mut buf)?;
                let t = Tensor::from_raw_buffer(&buf, dtype, &[numel], &Device::Cpu)?;
                storages.insert(key, t);
            }
            None => {
                // A storage no tensor of the state dict uses: its element size is unknown, so the
                // rest of the file cannot be located.
                candle_core::bail!("legacy checkpoint: storage {key} is used by no tensor")
            }
        }
    }

    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        let key = storage_key(&info.path);
        let storage = storages.get(key).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "legacy checkpoint: tensor {} uses missing storage {key}",
                info.name
            ))
        })?;
        // candle's pickle reader expresses the offset in bytes.
        let offset = info.layout.start_offset() / info.dtype.size_in_bytes();
        let layout = candle_core::Layout::new(
            info.layout.shape().clone(),
            info.layout.stride().to_vec(),
            offset,
        );
        let count = layout.shape().elem_count();
        let t = if layout.is_contiguous() {
            storage
                .narrow(0, offset, count)?
                .reshape(layout.shape().clone())?
        } else {
            // Any other strides (e.g. a saved transpose): gather element by element.
            let idx = strided_indices(layout.dims(), layout.stride(), offset);
            if idx.iter().any(|&i| i as usize >= storage.elem_count()) {
                candle_core::bail!(
                    "legacy checkpoint: tensor {} reaches past its storage {key}",
                    info.name
                )
            }
            let idx = Tensor::from_vec(idx, count, &Device::Cpu)?;
            storage
                .index_select(&idx, 0)?
                .reshape(layout.shape().clone())?
        };
        out.push((info.name, t));
    }
    Ok(out)
}

/// Flat element indices of a strided view, in row-major order of `dims`.
fn strided_indices(dims: &[usize], stride: &[usize], offset: usize) -> Vec<u32> {
    let count: usize = dims.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut pos = vec![0usize; dims.len()];
    for _ in 0..count {
        let i: usize = offset + pos.iter().zip(stride).map(|(p, s)| p * s).sum::<usize>();
        out.push(u32::try_from(i).unwrap_or(u32::MAX));
        for d in (0..dims.len()).rev() {
            pos[d] += 1;
            if pos[d] < dims[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    out
}

fn storage_key(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The state dict inside a checkpoint object: the object itself when it is a dict of tensors,
/// else its `state_dict` / `model` entry.
fn find_state_dict(obj: Object) -> candle_core::Result<Vec<(Object, Object)>> {
    let Object::Dict(items) = obj else {
        candle_core::bail!("legacy checkpoint: the saved object is not a dict")
    };
    let is_tensor_dict = items
        .iter()
        .any(|(_, v)| matches!(v, Object::Reduce { .. }));
    if is_tensor_dict {
        return Ok(items);
    }
    for key in ["state_dict", "model", "model_state_dict"] {
        let wanted = Object::Unicode(key.to_string());
        if items.iter().any(|(k, _)| *k == wanted) {
            if let Some((_, v)) = items.into_iter().find(|(k, _)| *k == wanted) {
                return find_state_dict(v);
            }
            break;
        }
    }
    candle_core::bail!("legacy checkpoint: no state dict found")
}
