//! The model card `wick export` writes into a weights file's safetensors metadata: what
//! `wick predict` needs besides the tensors (architecture, input channels and size, the
//! normalisation the model was trained with, class names), so that an exported model predicts
//! exactly as its run did without the user restating any of it.
//!
//! Stored as JSON under the metadata key `wick.model`, next to `format = "pt"` (what other
//! safetensors readers expect). Files without a card (torchvision exports, `.pth`) still load:
//! the caller falls back to flags and defaults.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Metadata key of the card.
pub const CARD_KEY: &str = "wick.model";

/// A safetensors header is at most this long (the format's own limit is 100 MB; a card-bearing
/// header of a ResNet-50 is ~30 kB).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub arch: String,
    pub channels: usize,
    pub image_size: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub classes: Vec<String>,
}

impl ModelCard {
    /// The safetensors metadata that carries this card.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("format".to_string(), "pt".to_string()),
            (
                CARD_KEY.to_string(),
                serde_json::to_string(self).expect("card serialises"),
            ),
        ])
    }

    /// Checks that the card describes a model wick can build, naming the field at fault.
    fn validate(&self) -> Result<(), String> {
        if self.channels == 0 || self.image_size == 0 {
            return Err("`channels` and `image_size` must be positive".into());
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(format!(
                "`mean` and `std` need one value per channel ({} channels)",
                self.channels
            ));
        }
        if !self.std.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err("`std` values must be finite and positive".into());
        }
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "__metadata__", default)]
    metadata: Option<HashMap<String, String>>,
}

/// The card of a weights file: `Ok(None)` for a file that is not safetensors or carries no
/// card; an error names the file when the card is there but unreadable. Reads only the header.
pub fn read_card(path: &Path) -> Result<Option<ModelCard>, ModelError> {
    let err = |message: String| ModelError::Read {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut len = [0u8; 8];
    if file.read_exact(&mut len).is_err() {
        return Ok(None);
    }
    let len = u64::from_le_bytes(len);
    // PyTorch files start with a zip or pickle magic: as a length, far beyond any header.
    if len == 0 || len > MAX_HEADER {
        return Ok(None);
    }
    let mut header = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut header)
        .map_err(|e| err(e.to_string()))?;
    let Ok(header) = serde_json::from_slice::<Header>(&header) else {
        return Ok(None);
    };
    let Some(json) = header.metadata.and_then(|mut m| m.remove(CARD_KEY)) else {
        return Ok(None);
    };
    let card: ModelCard = serde_json::from_str(&json)
        .map_err(|e| err(format!("metadata `{CARD_KEY}` is not a model card: {e}")))?;
    card.validate()
        .map_err(|m| err(format!("metadata `{CARD_KEY}`: {m}")))?;
    Ok(Some(card))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn card() -> ModelCard {
        ModelCard {
            arch: "wick-cnn".into(),
            channels: 1,
            image_size: 28,
            mean: vec![0.286],
            std: vec![0.353],
            classes: vec!["Bag".into(), "Coat".into()],
        }
    }

    fn write(path: &Path, metadata: Option<HashMap<String, String>>) {
        let t = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let bytes = safetensors::serialize([("fc.weight", &t)], metadata).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_card_written_as_metadata_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        write(&p, Some(card().to_metadata()));
        assert_eq!(read_card(&p).unwrap(), Some(card()));
    }

    #[test]
    fn files_without_a_card_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.safetensors");
        write(&plain, None);
        assert_eq!(read_card(&plain).unwrap(), None);
        let other = dir.path().join("other.safetensors");
        write(
            &other,
            Some(HashMap::from([("format".into(), "pt".into())])),
        );
        assert_eq!(read_card(&other).unwrap(), None);
        let zip = dir.path().join("m.pth");
        std::fs::write(&zip, b"PK\x03\x04 rest of a zip archive").unwrap();
        assert_eq!(read_card(&zip).unwrap(), None);
        let tiny = dir.path().join("tiny.bin");
        std::fs::write(&tiny, b"abc").unwrap();
        assert_eq!(read_card(&tiny).unwrap(), None);
    }

    #[test]
    fn a_broken_card_is_an_error_naming_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let mut bad = card();
        bad.mean = vec![0.1, 0.2, 0.3];
        write(&p, Some(bad.to_metadata()));
        let e = read_card(&p).unwrap_err().to_string();
        assert!(e.contains("m.safetensors") && e.contains("`mean`"), "{e}");

        write(
            &p,
            Some(HashMap::from([(CARD_KEY.into(), "{\"arch\": 3}".into())])),
        );
        let e = read_card(&p).unwrap_err().to_string();
        assert!(
            e.contains(CARD_KEY) && e.contains("not a model card"),
            "{e}"
        );
    }
}
