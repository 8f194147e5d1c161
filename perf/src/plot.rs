//! Percentile curves of latency histograms, drawn as SVG: latency (log scale) against
//! the percentile on a "nines" axis (50%, 90%, 99%, 99.9%, ...), so the tail gets as much
//! room as the median. SVG keeps the text as text: no font files or rasterizer needed.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Furthest into the tail the x axis goes: 99.999%.
const MAX_NINES: f64 = 5.0;

/// One curve: a name and a histogram of microseconds.
pub struct Series<'a> {
    pub name: &'a str,
    pub micros: &'a Histogram<u64>,
}

/// Where percentile `q` (0..1) sits on the x axis: the number of nines, 1/(1-q) in log10.
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(10f64.powf(-MAX_NINES))).log10()
}

/// The points of one curve: (nines, milliseconds), one per HDR quantile step.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(1)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()),
                v.value_iterated_to().max(1) as f64 / 1000.0,
            )
        })
        .filter(|(x, _)| *x <= MAX_NINES)
        .collect()
}

/// Writes the curves of the non-empty series to `path` (an SVG file).
pub fn write_svg(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), String> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|s| !s.micros.is_empty())
        .map(|s| (s.name, curve(s.micros)))
        .collect();
    if curves.is_empty() {
        return Err("no latencies recorded".into());
    }
    let ys = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0f64..MAX_NINES,
            ((lo * 0.8).max(0.001)..hi * 1.25).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(MAX_NINES as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let digits = (x.round() as usize).saturating_sub(2);
            format!("{p:.digits$}%")
        })
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_climb_to_the_tail_and_the_svg_names_them() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let c = curve(&h);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let median = c.iter().find(|p| p.0 >= nines(0.5)).unwrap();
        assert!((4.9..=5.1).contains(&median.1), "p50 {median:?}");
        assert!(
            (c.last().unwrap().1 - 10.0).abs() < 0.1,
            "max {:?}",
            c.last()
        );

        let dir = std::env::temp_dir().join(format!("orchd-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let empty = Histogram::<u64>::new(3).unwrap();
        let series = [
            Series {
                name: "time to first token",
                micros: &h,
            },
            Series {
                name: "never recorded",
                micros: &empty,
            },
        ];
        write_svg(&path, "orchd-load", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("time to first token"));
        assert!(!svg.contains("never recorded"));
        assert!(svg.contains("99.9%"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(write_svg(
            &path,
            "x",
            &[Series {
                name: "e",
                micros: &empty
            }]
        )
        .is_err());
    }
}
