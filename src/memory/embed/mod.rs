//! The built-in embedding model: a static model (one vector per WordPiece token, distilled
//! from all-MiniLM-L6-v2 by `scripts/distill-static.py`). A text's vector is the mean of
//! its tokens' vectors, L2-normalised: microseconds per query, no network, no thread.
//!
//! The weights are fetched once into a cache by `scripts/fetch-model.sh`; the directory
//! holds `vectors.bin`, `vocab.txt`, `SHA256SUMS` (checked at load) and the licences.

mod wordpiece;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

pub use wordpiece::WordPiece;

use super::retrieve::{EmbedError, Embedder};
use super::store::BoxFuture;

/// The cache directory's name for the shipped model.
pub const MODEL_NAME: &str = "minilm-l6-static-256";

/// The command that puts the weights in place, named by every load error.
pub const FIX: &str =
    "run `scripts/fetch-model.sh` (or set memory.embedder_path to a directory it wrote, \
     or memory.embedder: none for lexical retrieval only)";

const MAGIC: &[u8; 8] = b"MPXSTAT1";

/// Why the built-in model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the built-in embedding model is missing: {path} not found; {FIX}", path = .0.display())]
    Missing(PathBuf),
    #[error("the built-in embedding model in {dir} is corrupt: {why}; {FIX}", dir = .0.display(), why = .1)]
    Corrupt(PathBuf, String),
}

/// The default weights directory: `$MEMPROXY_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/memproxy/models/<name>`, else `~/.cache/memproxy/models/<name>`.
pub fn default_dir(lookup: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let set = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    if let Some(d) = set("MEMPROXY_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let cache = set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("memproxy").join("models").join(MODEL_NAME)
}

/// A static embedding model in memory. Each token's vector is held as int8 scaled by its
/// largest component (7.8 MB for the shipped model instead of 31 MB of f32; a text's
/// vector moves by less than 0.01 in cosine).
pub struct StaticModel {
    id: String,
    vocab: WordPiece,
    dims: usize,
    /// Per token: `dims` quantized components.
    rows: Vec<i8>,
    /// Per token: the factor that turns its quantized components back into floats.
    scales: Vec<f32>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reader that hashes what it reads.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: std::io::Read> HashingReader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hash.update(&*buf);
        Ok(())
    }
}

impl StaticModel {
    /// Loads and verifies the weights in `dir` (blocking: reads ~30 MB). `vectors.bin` is
    /// read a row at a time, hashed and quantized as it comes: the file is never held
    /// whole (the allocator kept the 31 MB buffer of a whole read, ~30 MB of RSS).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let open_error = |name: &str, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing(dir.join(name)),
            _ => ModelError::Corrupt(dir.into(), format!("cannot read {name}: {e}")),
        };
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| open_error(name, e));
        let corrupt = |why: String| ModelError::Corrupt(dir.into(), why);
        let sums = String::from_utf8(read("SHA256SUMS")?)
            .map_err(|_| corrupt("SHA256SUMS is not text".into()))?;
        let expected = |name: &str| {
            sums.lines()
                .filter_map(|l| l.split_once(char::is_whitespace))
                .find(|(_, n)| n.trim().trim_start_matches('*') == name)
                .map(|(h, _)| h.to_ascii_lowercase())
                .ok_or_else(|| corrupt(format!("SHA256SUMS has no line for {name}")))
        };
        let check = |name: &str, got: String| {
            let want = expected(name)?;
            if got == want {
                Ok(got)
            } else {
                Err(corrupt(format!(
                    "{name} has sha256 {got}, SHA256SUMS says {want}"
                )))
            }
        };
        let vocab_bytes = read("vocab.txt")?;
        check("vocab.txt", sha256_hex(&vocab_bytes))?;
        let vocab = WordPiece::from_vocab(
            std::str::from_utf8(&vocab_bytes)
                .map_err(|_| corrupt("vocab.txt is not UTF-8".into()))?,
        );
        drop(vocab_bytes);

        let file = std::fs::File::open(dir.join("vectors.bin"))
            .map_err(|e| open_error("vectors.bin", e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let mut file = HashingReader {
            inner: std::io::BufReader::with_capacity(1 << 16, file),
            hash: Sha256::new(),
        };
        let short = |e: std::io::Error| corrupt(format!("vectors.bin: {e}"));
        let mut header = [0u8; 16];
        file.read_exact(&mut header)
            .map_err(|_| corrupt("vectors.bin has no MPXSTAT1 header".into()))?;
        if &header[..8] != MAGIC {
            return Err(corrupt("vectors.bin has no MPXSTAT1 header".into()));
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (rows, dims) = (word(8) as usize, word(12) as usize);
        if rows != vocab.len() || dims == 0 || size != 16 + rows * dims * 4 {
            return Err(corrupt(format!(
                "vectors.bin holds {rows}x{dims} in {size} bytes for a vocabulary of {}",
                vocab.len()
            )));
        }
        let mut rows_i8 = Vec::with_capacity(rows * dims);
        let mut scales = Vec::with_capacity(rows);
        let mut raw = vec![0u8; dims * 4];
        let mut row = Vec::with_capacity(dims);
        for _ in 0..rows {
            file.read_exact(&mut raw).map_err(short)?;
            row.clear();
            row.extend(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
            scales.push(scale);
            rows_i8.extend(row.iter().map(|x| {
                if scale > 0.0 {
                    (x / scale).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                }
            }));
        }
        let vectors_sha = check("vectors.bin", hex(&file.hash.finalize()))?;
        Ok(Self {
            id: format!("builtin:{MODEL_NAME}@{}", &vectors_sha[..12]),
            vocab,
            dims,
            rows: rows_i8,
            scales,
        })
    }

    /// The model in `dir`, loaded once per process and shared (servers started by tests
    /// and the eval share one copy of the weights).
    pub fn shared(dir: &Path) -> Result<Arc<Self>, ModelError> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<StaticModel>>>> = OnceLock::new();
        let loaded = LOADED.get_or_init(Default::default);
        let mut loaded = loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = loaded.get(dir) {
            return Ok(m.clone());
        }
        let m = Arc::new(Self::load(dir)?);
        loaded.insert(dir.to_path_buf(), m.clone());
        Ok(m)
    }

    /// The model id stored with each vector (changes whenever the weights change).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Dimensions of a vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The normalised mean of the text's token vectors (all zeros without known tokens).
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut ids = Vec::with_capacity(64);
        self.vocab.encode_into(text, &mut ids);
        let skip = [
            self.vocab.id("[UNK]"),
            self.vocab.id("[CLS]"),
            self.vocab.id("[SEP]"),
        ];
        let mut v = vec![0.0f32; self.dims];
        for id in ids {
            if skip.contains(&Some(id)) {
                continue;
            }
            let i = id as usize;
            let (row, scale) = (
                &self.rows[i * self.dims..(i + 1) * self.dims],
                self.scales[i],
            );
            v.iter_mut()
                .zip(row)
                .for_each(|(a, &b)| *a += f32::from(b) * scale);
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
        v
    }
}

/// The built-in model's least cosine for a memory found by meaning alone
/// ([`Embedder::alone_floor`]). `memproxy-bench calibrate-dense` on the LoCoMo dev file:
/// a question's evidence turns score 0.48 / 0.60 / 0.73 (p10 / p50 / p90), and at 0.45
/// 94.8 % of them would pass; small talk against a question scores far lower ("which
/// gemstone do I like?" against a captured "hello" exchange 0.24, "hi there" 0.30), a
/// paraphrase above ("does she own a dog?" against "I adopted a puppy" 0.49). Texts of
/// the same kind still pass it (the best turn of another LoCoMo conversation scores 0.65
/// at the median): the floor keeps chatter out, it does not make dense scores a
/// relevance test.
pub const ALONE_FLOOR: f32 = 0.45;

impl Embedder for StaticModel {
    fn model(&self) -> &str {
        &self.id
    }

    fn alone_floor(&self) -> f32 {
        ALONE_FLOOR
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        let out = texts.iter().map(|t| self.vector(t)).collect();
        Box::pin(async move { Ok(out) })
    }
}

#[cfg(test)]
mod tests;
