#[cfg(target_arch = "x86_64")]
use super::scan::{avx2, dot_avx2};
use super::scan::{dot_head, dot_i8};
use super::*;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn scores_match_exact_cosine_closely_and_best_come_first() {
    let mut v = Vectors::default();
    let rows: Vec<Vec<f32>> = (0..50)
        .map(|i| {
            (0..64)
                .map(|d| (((i * 7 + d * 13) % 17) as f32 - 8.0) * 0.1)
                .collect()
        })
        .collect();
    for (i, r) in rows.iter().enumerate() {
        v.upsert(i as i64, r);
    }
    let q = rows[3].clone();
    let got = v.scored(&q, 10);
    assert_eq!(got[0].0, 3);
    for (k, s) in &got {
        let exact = super::super::retrieve::cosine(&q, &rows[*k as usize]);
        assert!((*s as f32 - exact).abs() < 0.02, "{s} vs {exact}");
    }
    assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
    assert!(got.len() <= 10);
}

#[test]
fn the_stored_form_holds_what_the_index_scores() {
    let v = [3.0f32, -4.0, 0.5, 0.0, 1.25, -0.01, 2.0, 7.0, -7.0];
    let q = Quantized::of(&v);
    assert_eq!(q.components.iter().map(|c| c.abs()).max(), Some(127));
    assert_eq!(Quantized::from_bytes(&q.to_bytes()), Some(q.clone()));
    assert_eq!(Quantized::from_bytes(&[1, 2]), None);
    // The unit vector it stands for.
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (u, x) in q.unit().iter().zip(&v) {
        assert!((u - x / norm).abs() < 0.01, "{u} vs {}", x / norm);
    }
    // Held from the stored form or from the vector: the same scores.
    let (mut a, mut b) = (Vectors::default(), Vectors::default());
    a.upsert(1, &v);
    b.upsert_stored(1, &q.to_bytes());
    b.upsert_stored(2, &[9]);
    assert_eq!(b.len(), 1);
    assert_eq!(a.scored(&v, 5), b.scored(&v, 5));
    // All zeros: kept, never similar to anything.
    let zero = Quantized::of(&[0.0; 4]);
    assert_eq!((zero.factor, zero.components), (0.0, vec![0; 4]));
}

#[test]
fn replace_and_remove_keep_the_rest_intact() {
    let mut v = Vectors::default();
    v.upsert(1, &unit(&[1.0, 0.0, 0.0]));
    v.upsert(2, &unit(&[0.0, 1.0, 0.0]));
    v.upsert(3, &unit(&[0.0, 0.0, 1.0]));
    v.upsert(1, &unit(&[0.0, 1.0, 0.1]));
    v.remove(2);
    assert_eq!(v.len(), 2);
    let got = v.scored(&[0.0, 1.0, 0.0], 5);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 1);
    assert_eq!(v.scored(&[0.0, 0.0, 1.0], 5)[0].0, 3);
    v.remove(3);
    v.remove(1);
    assert!(v.is_empty());
    assert!(v.scored(&[0.0, 1.0, 0.0], 5).is_empty());
}

/// Vectors whose leading dimensions carry most of their direction, like a PCA's.
fn pca_like(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dims)
        .map(|d| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
            u / (1.0 + d as f32 / 8.0)
        })
        .collect()
}

#[test]
fn two_passes_find_the_exact_best_and_follow_removals() {
    let mut v = Vectors::default();
    for k in 0..5_000 {
        v.upsert(k, &pca_like(k as u64, 128));
    }
    // Removals move the last row into the hole: its head must move with it.
    for k in (0..5_000).step_by(7) {
        v.remove(k);
    }
    v.upsert(4_999, &pca_like(77_777, 128));
    let mut found = 0;
    let mut wanted = 0;
    for q in 0..20 {
        let query = pca_like(1_000_000 + q, 128);
        let exact = v.scored_exact(&query, 10);
        let two = v.scored_two_passes(&query, 10);
        assert!(two.windows(2).all(|w| w[0].1 >= w[1].1));
        let exact_keys: Vec<i64> = exact.iter().map(|x| x.0).collect();
        // Every hit's score is its exact score.
        for (k, s) in &two {
            if let Some(e) = exact.iter().find(|e| e.0 == *k) {
                assert!((e.1 - s).abs() < 1e-6);
            }
            assert!(k % 7 != 0 || *k == 4_999, "a removed vector was found");
        }
        found += two.iter().filter(|x| exact_keys.contains(&x.0)).count();
        wanted += exact.len();
    }
    assert!(wanted > 0);
    assert!(found * 100 >= wanted * 95, "{found} of {wanted}");
    // A vector searched for itself comes first.
    let me = pca_like(77_777, 128);
    assert_eq!(v.scored_two_passes(&me, 5)[0].0, 4_999);
}

#[test]
fn the_avx2_dot_product_is_exact() {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [0, 1, 31, 32, 33, 256, 385] {
            let a: Vec<i8> = (0..len).map(|_| rng.i8(-127..=127)).collect();
            let b: Vec<i8> = (0..len).map(|_| rng.i8(-127..=127)).collect();
            // SAFETY: the CPU has AVX2 (checked above).
            assert_eq!(unsafe { dot_avx2(&a, &b) }, dot_i8(&a, &b), "{len}");
        }
        let extreme = [127i8; 64];
        let negative = [-127i8; 64];
        // SAFETY: as above.
        assert_eq!(unsafe { dot_avx2(&extreme, &negative) }, -127 * 127 * 64);
    }
}

#[test]
fn window_cosines_sum_the_groups_unit_vectors() {
    let mut v = Vectors::default();
    v.upsert(1, &[2.0, 0.0, 0.0, 0.0]);
    v.upsert(2, &[0.0, 0.5, 0.0, 0.0]);
    let got = v.window_cosines(&[1.0, 1.0, 0.0, 0.0], &[vec![1], vec![1, 2], vec![9]]);
    assert!(
        (got[0].unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01,
        "{got:?}"
    );
    assert!(
        (got[1].unwrap() - 1.0).abs() < 0.01,
        "lengths do not count: {got:?}"
    );
    assert_eq!(got[2], None, "no vector in the group");
    assert_eq!(v.window_cosines(&[1.0], &[vec![1]]), vec![None]);
}

#[test]
fn the_first_pass_keeps_exactly_the_best_partial_scores() {
    let mut v = Vectors::default();
    for k in 0..3_000 {
        v.upsert(k, &pca_like(k as u64, 64));
    }
    let q: Vec<i8> = pca_like(9, 64)[..HEAD]
        .iter()
        .map(|x| (x * 400.0).clamp(-127.0, 127.0) as i8)
        .collect();
    let mut all: Vec<(usize, f32)> = (0..v.len())
        .map(|i| {
            let h: &[i8; HEAD] = v.head[i * HEAD..(i + 1) * HEAD].try_into().unwrap();
            (
                i,
                dot_head(h, q[..].try_into().unwrap()) as f32 * v.factors[i],
            )
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for n in [1, 17, 500, 2_999, 3_000, 5_000] {
        let mut got = v.first_pass(&q, n);
        got.sort_unstable();
        let mut want: Vec<usize> = all.iter().take(n).map(|x| x.0).collect();
        want.sort_unstable();
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn the_best_are_kept_in_a_bounded_heap() {
    let scores = [0.1, 0.9, 0.5, 0.9, 0.3, 0.7];
    let of = |n, floor| {
        let mut rows: Vec<usize> = Best::of_indexed(scores.iter().copied().enumerate(), n, floor)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(of(3, 0.2), vec![1, 3, 5]);
    assert_eq!(of(10, 0.6).len(), 3);
    assert!(of(0, 0.0).is_empty());
}

#[test]
fn the_size_follows_puts_and_removals_of_a_loaded_scope() {
    let index = VectorIndex::new(1 << 20);
    let row = [0.5f32; 128];
    // Not held: a put is left for the load.
    index.put_if_loaded(1, "m", 10, &row);
    assert!(index.get(1, "m").is_none());
    index.update(1, "m", |v| {
        v.upsert(1, &row);
        v.loaded = true;
    });
    let one = index.bytes();
    assert!(one > 0);
    for k in 2..=50 {
        index.put_if_loaded(1, "m", k, &row);
    }
    assert_eq!(index.bytes(), 50 * one);
    for k in 1..=50 {
        index.forget(1, Some(k));
    }
    assert_eq!(index.bytes(), 0);
    // Forgetting what is not held, or twice, never takes the count below zero.
    index.forget(1, Some(7));
    index.forget(1, None);
    index.forget(1, None);
    index.scopes.resized(1_000, 0);
    assert_eq!(index.bytes(), 0);
    index.update(2, "m", |v| v.upsert(1, &row));
    assert_eq!(index.bytes(), one);
}

#[test]
fn forgetting_and_the_bound() {
    // Scopes of 3,840 bytes each (20 rows of 128 dimensions, their heads and keys):
    // two pass the bound.
    let index = VectorIndex::new(7_000);
    for uid in 0..3 {
        index.update(uid, "m", |v| {
            for k in 0..20 {
                v.upsert(k, &[1.0; 128]);
            }
        });
    }
    assert!(index.bytes() <= 7_000, "{}", index.bytes());
    assert!(
        index.get(0, "m").is_none(),
        "the least recently searched went first"
    );
    assert!(index.get(2, "m").is_some());
    index.forget(2, Some(5));
    assert_eq!(lock(&index.get(2, "m").unwrap()).len(), 19);
    index.forget(2, None);
    assert!(index.get(2, "m").is_none());
}
