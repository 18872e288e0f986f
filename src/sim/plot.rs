//! A small SVG line-plot writer for the simulation's figures.
//!
//! Owns: turning named series of (x, y) points into one self-contained SVG
//! document: axes with ticks, an x axis on a log2 scale (cluster sizes and
//! PG counts double), a y axis linear or log10, one coloured line with
//! markers per series, and a legend. No styling beyond that.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Plot y on a log10 scale (points with y ≤ 0 are then left out).
    pub y_log: bool,
    pub series: Vec<Series>,
}

const W: f64 = 820.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;
const COLOURS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#393b79", "#637939",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A number as a short label: 1.5k, 65536 → 64Ki is not used; plain
/// integers up to 6 digits, then k/M/G.
fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e5 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = if v.abs() >= 100.0 || v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.3}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Round-number linear ticks covering `lo..=hi`.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    (0..=60).map(|i| first + i as f64 * step).take_while(|t| *t <= hi + step * 0.999).collect()
}

impl Plot {
    pub fn to_svg(&self) -> String {
        let pts: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| *x > 0.0 && x.is_finite() && y.is_finite() && (!self.y_log || *y > 0.0))
            .collect();
        let fx = |x: f64| x.log2();
        let fy = |y: f64| if self.y_log { y.log10() } else { y };
        let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fx(p.0)), b.max(fx(p.0))));
        let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fy(p.1)), b.max(fy(p.1))));
        if pts.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        x0 = x0.floor();
        x1 = x1.ceil().max(x0 + 1.0);
        let y_ticks: Vec<f64> = if self.y_log {
            y0 = y0.floor();
            y1 = y1.ceil().max(y0 + 1.0);
            (y0 as i32..=y1 as i32).map(f64::from).collect()
        } else {
            y0 = y0.min(0.0);
            if y1 <= y0 {
                y1 = y0 + 1.0;
            }
            let t = linear_ticks(y0, y1);
            y1 = *t.last().unwrap_or(&y1);
            t
        };
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| LEFT + (fx(x) - x0) / (x1 - x0) * pw;
        let py = |v: f64| TOP + ph - (v - y0) / (y1 - y0) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        // Grid and ticks.
        let mut k = x0 as i32;
        while f64::from(k) <= x1 {
            let x = LEFT + (f64::from(k) - x0) / (x1 - x0) * pw;
            let _ =
                writeln!(s, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/>"##, TOP + ph);
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + ph + 16.0,
                label(2f64.powi(k))
            );
            k += 1;
        }
        for t in &y_ticks {
            let y = py(*t);
            let shown = if self.y_log { 10f64.powf(*t) } else { *t };
            let _ =
                writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##, LEFT + pw);
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                label(shown)
            );
        }
        let _ =
            writeln!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} (log2 scale)</text>"#,
            LEFT + pw / 2.0,
            H - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label),
            if self.y_log { " (log scale)" } else { "" }
        );
        // Lines, markers and legend.
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let dash = if i >= COLOURS.len() { r#" stroke-dasharray="5,3""# } else { "" };
            let mut mine: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|(x, y)| *x > 0.0 && x.is_finite() && y.is_finite() && (!self.y_log || *y > 0.0))
                .collect();
            mine.sort_by(|a, b| a.0.total_cmp(&b.0));
            if mine.len() > 1 {
                let path: Vec<String> = mine.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(fy(*y)))).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                    path.join(" ")
                );
            }
            for (x, y) in &mine {
                let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, px(*x), py(fy(*y)));
            }
            let ly = TOP + 8.0 + i as f64 * 18.0;
            let lx = LEFT + pw + 14.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#,
                lx + 22.0
            );
            let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, lx + 28.0, ly + 4.0, escape(&series.name));
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_one_svg_document_with_a_line_per_series() {
        let plot = Plot {
            title: "t <&>".into(),
            x_label: "nodes".into(),
            y_label: "seconds".into(),
            y_log: true,
            series: vec![
                Series { name: "4+2".into(), points: vec![(30.0, 0.5), (90.0, 2.0), (300.0, 9.0)] },
                Series { name: "8+4".into(), points: vec![(30.0, 1.0), (90.0, 0.0)] },
            ],
        };
        let svg = plot.to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1, "the second series has one plottable point");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn labels_and_ticks_are_round() {
        assert_eq!(label(65536.0), "65536");
        assert_eq!(label(1_500_000.0), "1.5M");
        assert_eq!(label(0.25), "0.25");
        let t = linear_ticks(0.0, 7.3);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 7.3 && t.len() <= 8, "{t:?}");
    }
}
