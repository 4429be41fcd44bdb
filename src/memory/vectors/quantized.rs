//! The int8 form of a vector (held by the index, stored by the embedded store) and the
//! float reductions around it.

/// `y` (|y| ≤ 127) rounded half away from zero. By hand: `f32::round` is a libm call per
/// component on the baseline CPU, a fifth of the time of reading a scope's vectors; the
/// cast truncates and saturates.
#[inline]
pub(super) fn quantize(y: f32) -> i8 {
    (y + 0.5f32.copysign(y)) as i32 as i8
}

/// The largest |component| of `v` and its norm, over eight lanes (a fold over one lane
/// and `f32::max`, which minds NaN, was most of the time of reading a scope's vectors).
fn max_and_norm(v: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let (mut max, mut sq) = ([0f32; LANES], [0f32; LANES]);
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let a = c[i].abs();
            max[i] = if a > max[i] { a } else { max[i] };
            sq[i] += c[i] * c[i];
        }
    }
    for (i, x) in tail.iter().enumerate() {
        max[i] = if x.abs() > max[i] { x.abs() } else { max[i] };
        sq[i] += x * x;
    }
    let max = max.into_iter().fold(0f32, |m, x| if x > m { x } else { m });
    (max, sq.iter().sum::<f32>().sqrt())
}

/// A vector as the index holds it (and the embedded store keeps it): each component
/// scaled by the largest |component| to ±127, and the factor that turns dot products of
/// the components into cosines (that scale divided by the norm).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub factor: f32,
    pub components: Vec<i8>,
}

impl Quantized {
    pub fn of(v: &[f32]) -> Self {
        let (max, norm) = max_and_norm(v);
        let (scale, factor) = if max > 0.0 && norm > 0.0 {
            (127.0 / max, max / 127.0 / norm)
        } else {
            (0.0, 0.0)
        };
        Self {
            factor,
            components: v.iter().map(|x| quantize(x * scale)).collect(),
        }
    }

    /// The unit vector it stands for (within the quantization's error).
    pub fn unit(&self) -> Vec<f32> {
        self.components
            .iter()
            .map(|&c| f32::from(c) * self.factor)
            .collect()
    }

    /// Stored form: the factor (little-endian f32), then one byte per component.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(4 + self.components.len());
        b.extend(self.factor.to_le_bytes());
        b.extend(self.components.iter().map(|&c| c as u8));
        b
    }

    /// The factor and the components' bytes of a stored form (`None` when it is too
    /// short to be one).
    pub fn parts(bytes: &[u8]) -> Option<(f32, &[u8])> {
        let (factor, components) = bytes.split_first_chunk::<4>()?;
        Some((f32::from_le_bytes(*factor), components))
    }

    /// Reads a stored form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (factor, components) = Self::parts(bytes)?;
        Some(Self {
            factor,
            components: components.iter().map(|&c| c as i8).collect(),
        })
    }
}

/// Dot product of two float vectors over eight lanes (a sum over one lane is a chain of
/// dependent adds the compiler may not reorder).
pub(super) fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
