use super::*;

/// Writes a model of `vocab` with 2-d vectors `rows` into `dir`, with its checksums.
fn write_model(dir: &Path, vocab: &[&str], rows: &[[f32; 2]]) {
    let mut bin = MAGIC.to_vec();
    bin.extend((rows.len() as u32).to_le_bytes());
    bin.extend(2u32.to_le_bytes());
    for r in rows {
        bin.extend(crate::memory::retrieve::vector_to_bytes(r));
    }
    let text = vocab.join("\n") + "\n";
    std::fs::write(dir.join("vectors.bin"), &bin).unwrap();
    std::fs::write(dir.join("vocab.txt"), &text).unwrap();
    let sums = format!(
        "{}  vectors.bin\n{}  vocab.txt\n",
        sha256_hex(&bin),
        sha256_hex(text.as_bytes())
    );
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

fn tiny(dir: &Path) {
    write_model(
        dir,
        &["[UNK]", "[CLS]", "[SEP]", "cat", "kitten", "car"],
        &[
            [9.0, 9.0],
            [9.0, 9.0],
            [9.0, 9.0],
            [1.0, 0.1],
            [0.9, 0.2],
            [0.0, 1.0],
        ],
    );
}

#[test]
fn mean_pooled_normalised_and_unknowns_ignored() {
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path());
    let m = StaticModel::load(dir.path()).unwrap();
    assert_eq!(m.dims(), 2);
    assert!(m.id().starts_with("builtin:"));
    let cat = m.vector("Cat! zzz");
    assert!(((cat[0] * cat[0] + cat[1] * cat[1]) - 1.0).abs() < 1e-6);
    let sim = |a: &str, b: &str| crate::memory::retrieve::cosine(&m.vector(a), &m.vector(b));
    assert!(sim("cat", "kitten") > sim("cat", "car"));
    assert_eq!(m.vector("zzz"), vec![0.0, 0.0]);
}

#[test]
fn missing_or_corrupt_weights_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let e = StaticModel::load(dir.path()).err().unwrap();
    assert!(matches!(e, ModelError::Missing(_)), "{e}");
    assert!(e.to_string().contains("scripts/fetch-model.sh"), "{e}");
    tiny(dir.path());
    let mut bin = std::fs::read(dir.path().join("vectors.bin")).unwrap();
    let last = bin.len() - 1;
    bin[last] ^= 1;
    std::fs::write(dir.path().join("vectors.bin"), bin).unwrap();
    let e = StaticModel::load(dir.path()).err().unwrap();
    assert!(matches!(e, ModelError::Corrupt(..)), "{e}");
    assert!(
        e.to_string().contains("sha256") && e.to_string().contains("fetch-model"),
        "{e}"
    );
}

#[test]
fn default_dir_follows_the_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
    };
    assert_eq!(
        default_dir(&env(&[("MEMPROXY_MODEL_DIR", "/m"), ("HOME", "/h")])),
        PathBuf::from("/m")
    );
    assert_eq!(
        default_dir(&env(&[("HOME", "/h")])),
        PathBuf::from("/h/.cache/memproxy/models").join(MODEL_NAME)
    );
}
