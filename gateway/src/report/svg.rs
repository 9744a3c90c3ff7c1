//! Small, dependency-free SVG charts for the run report: horizontal grouped bars and line series.
//! Plain SVG 1.1 that any browser or Markdown viewer renders.

use std::fmt::Write as _;

const PALETTE: [&str; 4] = ["#4C78A8", "#F58518", "#54A24B", "#B279A2"];
const FONT: &str = "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\"";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn legend(out: &mut String, series: &[&str], x: f64, y: f64) {
    for (i, name) in series.iter().enumerate() {
        let x = x + i as f64 * 150.0;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" {FONT}>{}</text>",
            y - 10.0,
            PALETTE[i % PALETTE.len()],
            x + 16.0,
            y,
            escape(name)
        );
    }
}

/// One row per label, one bar per series; values are drawn as given (rates or counts).
pub fn grouped_bars(
    title: &str,
    labels: &[String],
    series: &[&str],
    values: &[Vec<f64>],
    percent: bool,
) -> String {
    let (left, top, bar_h, gap, width) = (170.0, 50.0, 14.0, 10.0, 420.0);
    let group_h = bar_h * series.len() as f64 + gap;
    let height = top + group_h * labels.len().max(1) as f64 + 30.0;
    let max = values
        .iter()
        .flatten()
        .copied()
        .fold(0.0_f64, f64::max)
        .max(if percent { 0.01 } else { 1.0 });
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"10\" y=\"20\" {FONT} font-weight=\"bold\">{}</text>",
        left + width + 80.0,
        left + width + 80.0,
        escape(title)
    );
    legend(&mut out, series, left, 40.0);
    for (row, label) in labels.iter().enumerate() {
        let y0 = top + row as f64 * group_h;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\">{}</text>",
            left - 8.0,
            y0 + group_h / 2.0,
            escape(label)
        );
        for (s, series_values) in values.iter().enumerate() {
            let v = series_values.get(row).copied().unwrap_or(0.0);
            let w = (v / max * width).max(0.0);
            let y = y0 + s as f64 * bar_h;
            let text = if percent {
                format!("{:.1}%", v * 100.0)
            } else {
                format!("{v}")
            };
            let _ = write!(
                out,
                "<rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\" {FONT}>{text}</text>",
                bar_h - 2.0,
                PALETTE[s % PALETTE.len()],
                left + w + 4.0,
                y + bar_h - 4.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Line series over a shared x axis (training steps).
pub fn lines(title: &str, series: &[(&str, Vec<(f64, f64)>)], x_label: &str) -> String {
    let (left, top, width, height) = (60.0, 50.0, 480.0, 220.0);
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|(_, p)| p).collect();
    let (x_max, y_max) = points
        .iter()
        .fold((1.0_f64, 0.0_f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let y_max = if y_max <= 0.0 { 1.0 } else { y_max * 1.05 };
    let sx = |x: f64| left + x / x_max * width;
    let sy = |y: f64| top + height - y / y_max * height;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"320\" viewBox=\"0 0 600 320\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"10\" y=\"20\" {FONT} font-weight=\"bold\">{}</text>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"middle\">{}</text><text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\">{y_max:.2}</text>\
         <text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\">0</text><text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\">{x_max}</text>",
        escape(title),
        top + height,
        left + width,
        top + height,
        top + height,
        left + width / 2.0,
        top + height + 35.0,
        escape(x_label),
        left - 4.0,
        top + 4.0,
        left - 4.0,
        top + height,
        left + width,
        top + height + 15.0,
    );
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut out, &names, left, 40.0);
    for (i, (_, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (x, y) in pts {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>",
                sx(*x),
                sy(*y)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_escaped_labels() {
        let bars = grouped_bars(
            "Errors <before>",
            &["a&b".into(), "c".into()],
            &["teacher", "revised"],
            &[vec![0.5, 0.25], vec![0.1, 0.0]],
            true,
        );
        assert!(bars.starts_with("<svg") && bars.trim_end().ends_with("</svg>"));
        assert!(
            bars.contains("a&amp;b")
                && bars.contains("Errors &lt;before&gt;")
                && bars.contains("50.0%")
        );
        assert_eq!(
            bars.matches("<rect").count(),
            1 + 2 + 4,
            "background, legend, one bar per value"
        );
        let chart = lines(
            "Loss",
            &[("train", vec![(1.0, 2.0), (2.0, 1.0)]), ("eval", vec![])],
            "step",
        );
        assert_eq!(chart.matches("<polyline").count(), 1);
    }
}
