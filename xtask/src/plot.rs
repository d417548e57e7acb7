//! A small hand-written SVG line chart for the sweeps of `cargo xtask bench`: panels side by
//! side over one categorical x axis (γ values or draft models), one polyline with markers per
//! series, a legend under each panel; categories at the end of the axis can stand apart (no line
//! joins them to the others, a dotted rule separates them: `auto` beside the fixed γ values). Written by hand rather than with `plotters` so that the
//! xtask adds no dependency (and no Cargo.lock entries) for one kind of chart.

use std::fmt::Write;

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// One value per x category; `None` leaves a gap.
    pub values: Vec<Option<f64>>,
    /// Drawn dashed (used for predictions beside measurements).
    pub dashed: bool,
}

/// One chart: its own y axis and series.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range; otherwise 0 to a round number above the largest value.
    pub y_max: Option<f64>,
    /// A dotted horizontal reference line (e.g. speedup 1 = no gain).
    pub reference: Option<f64>,
}

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];
const PANEL_W: f64 = 480.0;
const PLOT_H: f64 = 260.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 58.0;
const AXIS_H: f64 = 48.0;
const LEGEND_ROW: f64 = 18.0;

/// The chart as a standalone SVG document. With `apart_from = Some(i)`, the categories from
/// index `i` on stand apart: lines break before `i` and a dotted vertical rule separates them.
pub fn line_chart(
    title: &str,
    x_label: &str,
    x_ticks: &[String],
    apart_from: Option<usize>,
    panels: &[Panel],
) -> String {
    let rows = panels.iter().map(|p| p.series.len()).max().unwrap_or(0) as f64;
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = TOP + PLOT_H + AXIS_H + rows * LEGEND_ROW + 12.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(
            &mut svg,
            PANEL_W * i as f64,
            x_label,
            x_ticks,
            apart_from,
            panel,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(
    svg: &mut String,
    x0: f64,
    x_label: &str,
    x_ticks: &[String],
    apart_from: Option<usize>,
    panel: &Panel,
) {
    let plot_w = PANEL_W - LEFT - RIGHT;
    let (left, top, bottom) = (x0 + LEFT, TOP, TOP + PLOT_H);
    let largest = panel
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .copied()
        .chain(panel.reference)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let (y_max, step) = match panel.y_max {
        Some(max) => (max, nice_step(max)),
        None => {
            let step = nice_step(largest * 1.1);
            (((largest * 1.1) / step).ceil().max(1.0) * step, step)
        }
    };
    let n = x_ticks.len().max(1);
    let x_at = |i: usize| left + plot_w * (i as f64 + 0.5) / n as f64;
    let y_at = |v: f64| bottom - PLOT_H * (v / y_max).clamp(0.0, 1.05);

    let _ = writeln!(svg, "<g>");
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="46" text-anchor="middle" font-size="13">{}</text>"#,
        left + plot_w / 2.0,
        escape(&panel.title)
    );
    // Grid and y ticks.
    let mut k = 0;
    while (k as f64) * step <= y_max * (1.0 + 1e-9) {
        let v = k as f64 * step;
        let y = y_at(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            tick_label(v, step)
        );
        k += 1;
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{PLOT_H}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        x0 + 16.0,
        top + PLOT_H / 2.0,
        escape(&panel.y_label)
    );
    // X ticks.
    for (i, label) in x_ticks.iter().enumerate() {
        let x = x_at(i);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{:.1}" stroke="black"/>"#,
            bottom + 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 18.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        bottom + 36.0,
        escape(x_label)
    );
    if let Some(i) = apart_from.filter(|&i| i > 0 && i < n) {
        let x = left + plot_w * i as f64 / n as f64;
        let _ = writeln!(
            svg,
            r##"<line class="apart" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#999999" stroke-dasharray="1 4"/>"##
        );
    }
    if let Some(r) = panel.reference {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#777777" stroke-dasharray="2 3"/>"##,
            left + plot_w,
            y = y_at(r)
        );
    }
    // Series: polylines broken at missing values, with a marker per point.
    for (s, series) in panel.series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<g class="series"><title>{}</title>"#,
            escape(&series.name)
        );
        let mut segment: Vec<String> = Vec::new();
        let flush = |segment: &mut Vec<String>, svg: &mut String| {
            if segment.len() > 1 {
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                    segment.join(" ")
                );
            }
            segment.clear();
        };
        for (i, value) in series.values.iter().enumerate() {
            if Some(i) == apart_from {
                flush(&mut segment, svg);
            }
            match value.filter(|v| v.is_finite()) {
                Some(v) => segment.push(format!("{:.1},{:.1}", x_at(i), y_at(v))),
                None => flush(&mut segment, svg),
            }
        }
        flush(&mut segment, svg);
        for (i, v) in series.values.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                    x_at(i),
                    y_at(v)
                );
            }
        }
        let _ = writeln!(svg, "</g>");
        // Legend entry.
        let ly = bottom + AXIS_H + LEGEND_ROW * s as f64 + 6.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            left + 26.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            left + 32.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// A round step (1, 2 or 5 × 10^k) giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 0.2;
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let factor = if norm <= 1.0 + 1e-9 {
        1.0
    } else if norm <= 2.0 + 1e-9 {
        2.0
    } else if norm <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    factor * magnitude
}

fn tick_label(v: f64, step: f64) -> String {
    let digits = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.digits$}")
}

/// Text safe inside SVG elements and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order (enough XML for a chart we wrote ourselves) and
    /// returns the element names seen.
    fn check_tags(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "`<` inside tag {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let name: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                seen.push(name.clone());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        seen
    }

    #[test]
    fn chart_is_well_formed_and_names_its_series() {
        let panels = vec![
            Panel {
                title: "speedup of spec over target".into(),
                y_label: "speedup (×)".into(),
                series: vec![
                    Series {
                        name: "measured (TPOT)".into(),
                        values: vec![Some(1.2), None, Some(1.9), Some(1.7)],
                        dashed: false,
                    },
                    Series {
                        name: "predicted <Leviathan & al.>".into(),
                        values: vec![Some(1.4), Some(1.8), Some(2.1), Some(f64::NAN)],
                        dashed: true,
                    },
                ],
                y_max: None,
                reference: Some(1.0),
            },
            Panel {
                title: "acceptance".into(),
                y_label: "α".into(),
                series: vec![Series {
                    name: "acceptance rate α".into(),
                    values: vec![Some(0.8), Some(0.7), Some(0.65), Some(0.6)],
                    dashed: false,
                }],
                y_max: Some(1.0),
                reference: None,
            },
        ];
        let ticks: Vec<String> = ["1", "2", "4", "8"].iter().map(|s| s.to_string()).collect();
        let svg = line_chart(
            "γ sweep: pythia-70m → pythia-2.8b",
            "γ",
            &ticks,
            None,
            &panels,
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        let tags = check_tags(&svg);
        assert!(tags.iter().filter(|t| *t == "polyline").count() >= 3);
        assert_eq!(tags.iter().filter(|t| *t == "circle").count(), 10);
        for name in [
            "measured (TPOT)",
            "predicted &lt;Leviathan &amp; al.&gt;",
            "acceptance rate α",
            "γ sweep: pythia-70m → pythia-2.8b",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn categories_apart_are_not_joined() {
        let panel = Panel {
            title: "speedup".into(),
            y_label: "×".into(),
            series: vec![Series {
                name: "measured".into(),
                values: vec![Some(1.2), Some(1.5), Some(1.4), Some(1.6)],
                dashed: false,
            }],
            y_max: None,
            reference: None,
        };
        let ticks: Vec<String> = ["1", "2", "4", "auto (≤ 16)"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let svg = line_chart(
            "γ sweep",
            "γ",
            &ticks,
            Some(3),
            &[panel.clone(), panel.clone()],
        );
        check_tags(&svg);
        // One polyline per panel over the three fixed γ; the fourth point is a lone marker.
        let polylines: Vec<&str> = svg.lines().filter(|l| l.contains("<polyline")).collect();
        assert_eq!(polylines.len(), 2, "{svg}");
        for line in polylines {
            let points = line.split('"').nth(1).unwrap();
            assert_eq!(points.split(' ').count(), 3, "{line}");
        }
        assert_eq!(svg.matches("<circle").count(), 8);
        assert_eq!(svg.matches(r#"class="apart""#).count(), 2);
        assert!(svg.contains(">auto (≤ 16)</text>"));
        // Without the split one line joins all four points.
        let joined = line_chart("γ sweep", "γ", &ticks, None, &[panel]);
        assert!(!joined.contains("apart"));
        let line = joined.lines().find(|l| l.contains("<polyline")).unwrap();
        assert_eq!(line.split('"').nth(1).unwrap().split(' ').count(), 4);
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(1.0), 0.2);
        assert_eq!(nice_step(2.6), 1.0);
        assert_eq!(nice_step(9.0), 2.0);
        assert_eq!(nice_step(0.0), 0.2);
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(4.0, 2.0), "4");
    }
}
