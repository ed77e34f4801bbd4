//! What both of the bench crate's SVG writers need (the scale curve's, `curve.rs`, and the load
//! program's phases, `load/svg.rs`): round axis steps and text safe inside SVG. The load binary
//! includes this file by path.

/// A round step for about five ticks up to `max`.
pub fn step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Text as SVG character data.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round_and_text_is_escaped() {
        assert_eq!(step(100.0), 20.0);
        assert_eq!(step(43_000.0), 10_000.0);
        assert_eq!(step(95_000.0), 20_000.0);
        assert_eq!(step(7.0), 2.0);
        assert_eq!(step(0.0), 1.0);
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
