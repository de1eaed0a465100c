//! User-facing output. Commands write through a [`Printer`], never with stray `println!`, so `--quiet` and
//! tests see one place.

use std::io::Write;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub quiet: bool,
}

impl Printer {
    /// A line of the command's result (suppressed by --quiet).
    pub fn line(&self, s: &str) {
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
        }
    }

    /// Machine-readable output: always printed.
    pub fn data(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
    }
}

/// "1 dataset", "3 datasets": the one plural helper, shared with the engine's webhook line.
pub use dobsob_engine::report::count;

/// "3h 12m ago" style ages.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h ago", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Lays out rows as aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        line.trim_end().to_string()
    };
    let mut out = vec![fmt_row(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| fmt_row(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_tables() {
        assert_eq!(count(1, "dataset"), "1 dataset");
        assert_eq!(count(0, "dataset"), "0 datasets");
        assert_eq!(age(5), "5s ago");
        assert_eq!(age(3 * 3600 + 12 * 60), "3h 12m ago");
        assert_eq!(age(2 * 86_400 + 3600), "2d 1h ago");
        assert_eq!(
            table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]),
            "A    BB\nxyz  1"
        );
    }
}
