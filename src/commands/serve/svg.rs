//! The dashboard's charts as inline SVG, drawn by hand: a sparkline, a row-count chart with its axis
//! labels, and a run's timeline. Colours come from the page's CSS classes; every chart has a text
//! alternative (`<title>` and `aria-label`), and the numbers it shows are also in the page's tables.

use super::pages::esc;

/// A small line of `values` (oldest first), `w` x `h` pixels; empty for fewer than two values.
pub fn sparkline(values: &[f64], w: f64, h: f64, label: &str) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let (lo, hi) = bounds(values);
    let n = values.len() as f64 - 1.0;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 / n * (w - 2.0) + 1.0,
                y_of(*v, lo, hi, h - 2.0) + 1.0
            )
        })
        .collect();
    let last = points.last().cloned().unwrap_or_default();
    let (lx, ly) = last.split_once(',').unwrap_or(("0", "0"));
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"{l}\"><title>{l}</title><polyline points=\"{}\"/><circle cx=\"{lx}\" cy=\"{ly}\" \
         r=\"1.8\"/></svg>",
        points.join(" "),
        l = esc(label)
    )
}

fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

/// Top is high: the y of `v` in a band `h` high.
fn y_of(v: f64, lo: f64, hi: f64, h: f64) -> f64 {
    h - (v - lo) / (hi - lo) * h
}

/// A chart of row counts over time: `points` are (label, value), oldest first, drawn as a line with
/// dots, the smallest and largest counts on the left and the first and last dates below.
pub fn rows_chart(points: &[(String, i64)], label: &str) -> String {
    if points.is_empty() {
        return String::new();
    }
    let (w, h, left, bottom, top) = (640.0, 180.0, 78.0, 24.0, 10.0);
    let values: Vec<f64> = points.iter().map(|(_, v)| *v as f64).collect();
    let (lo, hi) = bounds(&values);
    let plot_h = h - bottom - top;
    let plot_w = w - left - 10.0;
    let n = (points.len() as f64 - 1.0).max(1.0);
    let x = |i: usize| {
        left + if points.len() == 1 {
            plot_w / 2.0
        } else {
            i as f64 / n * plot_w
        }
    };
    let y = |v: f64| top + y_of(v, lo, hi, plot_h);
    let mut s = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{l}\"><title>{l}</title>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <text class=\"tick\" x=\"{tx}\" y=\"{yt}\" text-anchor=\"end\">{hi}</text>\
         <text class=\"tick\" x=\"{tx}\" y=\"{yb}\" text-anchor=\"end\">{lo}</text>",
        l = esc(label),
        b = h - bottom,
        r = w - 10.0,
        tx = left - 6.0,
        yt = y(hi) + 4.0,
        yb = y(lo) + 4.0,
        hi = thousands(hi.round() as i64),
        lo = thousands(lo.round() as i64),
    );
    let line: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    if line.len() > 1 {
        s.push_str(&format!("<polyline points=\"{}\"/>", line.join(" ")));
    }
    for (i, (when, v)) in points.iter().enumerate() {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{}: {} rows</title></circle>",
            x(i),
            y(*v as f64),
            esc(when),
            thousands(*v)
        ));
    }
    let first = points.first().map(|p| short_date(&p.0)).unwrap_or_default();
    let last = points.last().map(|p| short_date(&p.0)).unwrap_or_default();
    s.push_str(&format!(
        "<text class=\"tick\" x=\"{left}\" y=\"{}\">{}</text>",
        h - 6.0,
        esc(&first)
    ));
    if points.len() > 1 {
        s.push_str(&format!(
            "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            w - 10.0,
            h - 6.0,
            esc(&last)
        ));
    }
    s.push_str("</svg>");
    s
}

/// One bar of a run's timeline.
pub struct Bar {
    pub label: String,
    /// Seconds from the run's start.
    pub start: f64,
    pub end: f64,
    /// The CSS class of its outcome (ok, failed, ...).
    pub class: String,
    pub title: String,
}

/// A run's timeline: one row per dataset, a bar from its start to its end on a common time axis of
/// `total` seconds.
pub fn timeline(bars: &[Bar], total: f64, label: &str) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let (w, row, left, top) = (720.0, 22.0, 170.0, 18.0);
    let h = top + row * bars.len() as f64 + 8.0;
    let plot_w = w - left - 12.0;
    let total = total.max(0.001);
    let x = |t: f64| left + (t / total).clamp(0.0, 1.0) * plot_w;
    let mut s = format!(
        "<svg class=\"chart timeline\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{l}\"><title>{l}</title>\
         <text class=\"tick\" x=\"{left}\" y=\"12\">0s</text>\
         <text class=\"tick\" x=\"{r}\" y=\"12\" text-anchor=\"end\">{t}</text>",
        l = esc(label),
        r = w - 12.0,
        t = esc(&seconds(total)),
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let (x0, x1) = (x(b.start), x(b.end.max(b.start)));
        s.push_str(&format!(
            "<text class=\"label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"bar {}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"2\">\
             <title>{}</title></rect>",
            left - 8.0,
            y + row * 0.68,
            esc(&b.label),
            esc(&b.class),
            y + 3.0,
            (x1 - x0).max(2.0),
            row - 6.0,
            esc(&b.title)
        ));
    }
    s.push_str("</svg>");
    s
}

/// "1,234,567".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// "12.3s", "4m 05s", "2h 03m".
pub fn seconds(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// "2026-12-07 02:30" of an RFC 3339 time (the text as is if it is not one).
pub fn short_date(t: &str) -> String {
    if t.len() >= 16 && t.as_bytes()[10] == b'T' {
        format!("{} {}", &t[..10], &t[11..16])
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(seconds(12.34), "12.3s");
        assert_eq!(seconds(245.0), "4m 05s");
        assert_eq!(seconds(7380.0), "2h 03m");
        assert_eq!(short_date("2026-12-07T02:30:00.000Z"), "2026-12-07 02:30");
    }

    #[test]
    fn charts_escape_their_labels_and_scale_into_the_box() {
        let s = sparkline(&[1.0, 5.0, 3.0], 80.0, 20.0, "rows <x>");
        assert!(s.contains("rows &lt;x&gt;") && !s.contains("<x>"), "{s}");
        for p in s
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
        {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (0.0..=80.0).contains(&x) && (0.0..=20.0).contains(&y),
                "{p}"
            );
        }
        assert_eq!(sparkline(&[1.0], 80.0, 20.0, "one"), "");
        let t = timeline(
            &[Bar {
                label: "a&b".into(),
                start: 0.0,
                end: 2.0,
                class: "ok".into(),
                title: "t".into(),
            }],
            4.0,
            "run",
        );
        assert!(
            t.contains("a&amp;b") && t.contains("class=\"bar ok\""),
            "{t}"
        );
    }
}
