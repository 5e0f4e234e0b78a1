//! IVF_SQ8's vector codec: one byte per dimension, uniform over each
//! dimension's range, like Faiss' `ScalarQuantizer` with `QT_8bit` and the
//! `RS_minmax` range.
//!
//! The codec is trained on the residuals `x - centroid(x)` of every row (Faiss'
//! `IndexIVFScalarQuantizer` encodes residuals by default); ranges are the
//! exact per-dimension minimum and maximum, so no row is clipped. A value maps
//! to `floor(255 · (x - min) / (max - min))` and decodes to the middle of its
//! cell, `min + (code + 0.5) / 255 · (max - min)`, as Faiss' `Codec8bit` does.

/// Per-dimension ranges of the residuals.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarQuantizer {
    /// Smallest value of each dimension.
    pub vmin: Vec<f32>,
    /// `max - min` of each dimension (0 for a constant dimension).
    pub vdiff: Vec<f32>,
}

impl ScalarQuantizer {
    /// Ranges of the residuals `row - centroids[assignment[row]]` of row-major
    /// `data`. With no rows every range is empty (`vmin` 0, `vdiff` 0). NaN
    /// values are ignored.
    pub fn train_residuals(
        dim: usize,
        data: &[f32],
        centroids: &[f32],
        assignment: &[u32],
    ) -> Self {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for (row, &list) in data.chunks_exact(dim).zip(assignment) {
            let centroid = &centroids[list as usize * dim..][..dim];
            for (((l, h), &x), &c) in lo.iter_mut().zip(&mut hi).zip(row).zip(centroid) {
                let r = x - c;
                *l = l.min(r);
                *h = h.max(r);
            }
        }
        let (vmin, vdiff) = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| if l <= h { (l, h - l) } else { (0.0, 0.0) })
            .unzip();
        Self { vmin, vdiff }
    }

    pub fn dim(&self) -> usize {
        self.vmin.len()
    }

    /// Codes of the residual `vector - centroid` into `out` (`dim` values each).
    pub fn encode_residual(&self, vector: &[f32], centroid: &[f32], out: &mut [u8]) {
        let ranges = self.vmin.iter().zip(&self.vdiff);
        for ((code, (&x, &c)), (&min, &diff)) in
            out.iter_mut().zip(vector.iter().zip(centroid)).zip(ranges)
        {
            let unit = if diff > 0.0 {
                (x - c - min) / diff
            } else {
                0.0
            };
            // `as u8` saturates, and maps NaN to 0.
            *code = (255.0 * unit.clamp(0.0, 1.0)) as u8;
        }
    }

    /// Decodes row-major `codes` into `out` (same length), adding `offset` (the
    /// list's centroid, `dim` values) to every row.
    pub fn decode_rows(&self, codes: &[u8], offset: &[f32], out: &mut Vec<f32>) {
        let dim = self.dim();
        let scale: Vec<f32> = self.vdiff.iter().map(|d| d / 255.0).collect();
        let base: Vec<f32> = (0..dim)
            .map(|d| offset[d] + self.vmin[d] + 0.5 * scale[d])
            .collect();
        out.clear();
        out.reserve(codes.len());
        for row in codes.chunks_exact(dim) {
            out.extend(
                row.iter()
                    .zip(&base)
                    .zip(&scale)
                    .map(|((&c, &b), &s)| b + f32::from(c) * s),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_within_one_cell() {
        let data = [0.0f32, -1.0, 5.0, 1.0, 1.0, 5.0, 0.25, 0.0, 5.0];
        let zero = [0.0f32; 3];
        let sq = ScalarQuantizer::train_residuals(3, &data, &zero, &[0; 3]);
        assert_eq!(sq.vmin, vec![0.0, -1.0, 5.0]);
        assert_eq!(sq.vdiff, vec![1.0, 2.0, 0.0]);
        let mut codes = vec![0u8; data.len()];
        for (row, out) in data.chunks_exact(3).zip(codes.chunks_exact_mut(3)) {
            sq.encode_residual(row, &zero, out);
        }
        assert_eq!(codes, vec![0, 0, 0, 255, 255, 0, 63, 127, 0]);
        let mut decoded = Vec::new();
        sq.decode_rows(&codes, &[10.0, 0.0, 0.0], &mut decoded);
        for (i, (&x, &y)) in data.iter().zip(&decoded).enumerate() {
            let offset = if i % 3 == 0 { 10.0 } else { 0.0 };
            let cell = sq.vdiff[i % 3] / 255.0;
            assert!((x + offset - y).abs() <= cell, "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn out_of_range_and_nan_values_are_clamped() {
        let sq = ScalarQuantizer::train_residuals(1, &[1.0, 2.0], &[1.0], &[0, 0]);
        let mut code = [0u8];
        for (x, expected) in [(-5.0, 0), (5.0, 255), (f32::NAN, 0), (0.5, 127)] {
            sq.encode_residual(&[x + 1.0], &[1.0], &mut code);
            assert_eq!(code[0], expected, "{x}");
        }
        let empty = ScalarQuantizer::train_residuals(2, &[], &[], &[]);
        assert_eq!((empty.vmin, empty.vdiff), (vec![0.0; 2], vec![0.0; 2]));
    }
}
