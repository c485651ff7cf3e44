//! `--plot FILE`: the run as a picture, written as SVG after the report.
//!
//! Three panels sharing one page: latency over time (per-second p50, p99 and max, log scale),
//! replies per second on the same time axis, and the distribution of all latencies (log
//! scale, 10 bins per decade) with the run's p50, p99 and max marked.
//!
//! Drawn with plotters' SVG backend alone: text becomes SVG `<text>` that the viewer renders,
//! so no font files or font libraries are needed. PNG would need a rasterizer with fonts
//! (fontconfig/freetype or a bundled font), so it is refused; convert the SVG instead.

mod draw;

use std::path::Path;

use crate::report::Report;
use anyhow::{bail, Context, Result};

/// Refuses, before the run, a file the plot cannot be written as.
pub fn check_path(path: &Path) -> Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => Ok(()),
        Some("png") => bail!(
            "--plot {}: PNG is not supported (it would need font libraries to draw text); \
             write .svg and convert it if needed, e.g. `rsvg-convert -o plot.png plot.svg`",
            path.display()
        ),
        _ => bail!("--plot {}: the file name must end in .svg", path.display()),
    }
}

/// Draws the report's plot data into an SVG file.
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let svg = draw::render(report).context("drawing the plot")?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_svg_file_names_are_accepted() {
        for (name, accepted, says) in [
            ("run.svg", true, ""),
            ("/tmp/RUN.SVG", true, ""),
            ("run.png", false, "PNG is not supported"),
            ("run.txt", false, "must end in .svg"),
            ("run", false, "must end in .svg"),
        ] {
            let result = check_path(Path::new(name));
            assert_eq!(result.is_ok(), accepted, "{name}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains(says), "{name}: {e}");
            }
        }
    }
}
