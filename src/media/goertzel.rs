//! The Goertzel filter: one DFT bin of a block of samples, computed sample by sample with
//! two state variables, and its complex result referenced to the block's first sample (so
//! two consecutive blocks can be combined, and their phase compared, by the detector).
//!
//! Must never: allocate, or keep anything but its two state variables between samples.

/// Precomputed constants of one bin (frequency `hz` at `rate` Hz, block length `n`).
#[derive(Clone, Copy, Debug)]
pub struct Bin {
    /// `2 cos ω`.
    pub coeff: f32,
    cos: f32,
    sin: f32,
    /// `e^{-jω(n-1)}`: turns the filter output into the block-referenced DFT value.
    rot: (f32, f32),
    /// `e^{-jωn}`: the phase advance of one whole block.
    pub advance: (f32, f32),
    /// ω in radians per sample.
    pub omega: f32,
}

impl Bin {
    pub fn new(hz: f32, rate: f32, n: usize) -> Bin {
        let w = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(rate);
        let n1 = (n as f64 - 1.0) * w;
        let nn = n as f64 * w;
        Bin {
            coeff: (2.0 * w.cos()) as f32,
            cos: w.cos() as f32,
            sin: w.sin() as f32,
            rot: (n1.cos() as f32, -n1.sin() as f32),
            advance: (nn.cos() as f32, -nn.sin() as f32),
            omega: w as f32,
        }
    }
}

/// The running state of one bin over the current block.
#[derive(Clone, Copy, Debug, Default)]
pub struct State {
    s1: f32,
    s2: f32,
}

impl State {
    /// A state from its two variables (for callers that keep them as arrays).
    pub fn from_parts(s1: f32, s2: f32) -> State {
        State { s1, s2 }
    }

    #[inline]
    pub fn step(&mut self, bin: &Bin, x: f32) {
        let s = x + bin.coeff * self.s1 - self.s2;
        self.s2 = self.s1;
        self.s1 = s;
    }

    /// The block's DFT value `Σ x[m] e^{-jωm}` (m from 0), then the state is reset.
    pub fn finish(&mut self, bin: &Bin) -> (f32, f32) {
        // y = s1 - e^{-jω} s2 = Σ x[m] e^{jω(n-1-m)}
        let yr = self.s1 - bin.cos * self.s2;
        let yi = bin.sin * self.s2;
        *self = State::default();
        cmul((yr, yi), bin.rot)
    }
}

#[inline]
pub fn cmul(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

#[inline]
pub fn norm2(a: (f32, f32)) -> f32 {
    a.0 * a.0 + a.1 * a.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dft(x: &[f32], hz: f32) -> (f32, f32) {
        let w = 2.0 * std::f32::consts::PI * hz / 8000.0;
        x.iter().enumerate().fold((0.0, 0.0), |acc, (m, v)| {
            let p = w * m as f32;
            (acc.0 + v * p.cos(), acc.1 - v * p.sin())
        })
    }

    #[test]
    fn goertzel_equals_the_dft_bin() {
        let x: Vec<f32> = (0..51)
            .map(|i| 1000.0 * (0.37 * i as f32).sin() + 300.0 * (1.9 * i as f32 + 0.2).cos())
            .collect();
        for hz in [697.0, 941.0, 1209.0, 1633.0] {
            let bin = Bin::new(hz, 8000.0, 51);
            let mut st = State::default();
            for v in &x {
                st.step(&bin, *v);
            }
            let got = st.finish(&bin);
            let want = dft(&x, hz);
            assert!((got.0 - want.0).abs() < 1.0, "{hz}: {got:?} vs {want:?}");
            assert!((got.1 - want.1).abs() < 1.0, "{hz}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn bin_magnitude_of_a_centred_sine_is_a_n_over_2() {
        let n = 102;
        let bin = Bin::new(1000.0, 8000.0, n);
        let mut st = State::default();
        for i in 0..n {
            st.step(
                &bin,
                2000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 8000.0).sin(),
            );
        }
        let m = norm2(st.finish(&bin)).sqrt();
        // within 2 %: the mirror frequency leaks a little into a non-integer bin
        assert!((m - 2000.0 * n as f32 / 2.0).abs() < 2000.0, "{m}");
    }
}
