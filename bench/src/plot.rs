//! SVG plots of a dataset's results (`plotters`, SVG backend only).
//!
//! - `recall-qps-<dataset>.svg`: recall@k against queries per second (log scale). facedb's
//!   exact search is a point per mode at client concurrency 1 and at its fastest concurrency
//!   (recall 1.0: there is no index yet); each peer engine is a curve over its `ef` sweep
//!   (FAISS flat is a point).
//! - `latency-<dataset>.svg`: search latency (log scale) against client concurrency, one
//!   colour per mode and workload (top-k, the 10% filter, the searches of the mixed
//!   workload), p50 solid and p99 dashed.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{DatasetReport, Mode, RunRecord};
use crate::workload::{OpKind, Workload};

const SIZE: (u32, u32) = (960, 600);

/// A series of points: a colour, a legend entry (when named), optional point labels.
struct Series {
    name: Option<String>,
    color: usize,
    points: Vec<(f64, f64)>,
    labels: Vec<String>,
    line: Line,
}

/// How a series' points are joined.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    None,
    Solid,
    Dashed,
}

/// The axes of a plot.
struct Axes<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_log: bool,
    /// A line under the plot (e.g. what solid and dashed mean).
    note: Option<&'a str>,
    /// The y axis starts this many times below the lowest point (room for the legend).
    y_room_below: f64,
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

fn plot_error(path: &Path, e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("drawing {}: {e:?}", path.display())
}

/// A number as an axis label: at most 3 decimals, no trailing zeros.
fn tick(v: f64) -> String {
    if v.abs() >= 10.0 {
        return format!("{v:.0}");
    }
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn draw_on<X, Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    path: &Path,
    axes: &Axes<'_>,
    series: &[Series],
    x_range: X,
    y_range: Y,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut builder = ChartBuilder::on(area);
    let mut chart = builder
        .caption(axes.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(&|x| tick(*x))
        .y_label_formatter(&|y| tick(*y))
        .light_line_style(BLACK.mix(0.04))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for s in series {
        let color = Palette99::pick(s.color).to_rgba();
        let points = s.points.iter().copied();
        match s.line {
            Line::Solid if s.points.len() > 1 => {
                chart.draw_series(LineSeries::new(points, color.stroke_width(2))).map_err(|e| plot_error(path, e))?;
            }
            Line::Dashed if s.points.len() > 1 => {
                chart
                    .draw_series(DashedLineSeries::new(points, 8, 5, color.stroke_width(2)))
                    .map_err(|e| plot_error(path, e))?;
            }
            _ => {}
        }
        let drawn = chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| plot_error(path, e))?;
        if let Some(name) = &s.name {
            drawn.label(name.as_str()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (16, 0)], color.stroke_width(2))
                    + Circle::new((8, 0), 4, color.filled())
            });
        }
        chart
            .draw_series(s.points.iter().zip(&s.labels).map(|(&p, label)| {
                EmptyElement::at(p) + Text::new(label.clone(), (6, -14), ("sans-serif", 12).into_font().color(&color))
            }))
            .map_err(|e| plot_error(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    Ok(())
}

fn draw(path: &Path, axes: &Axes<'_>, series: &[Series], x_bounds: (f64, f64)) -> Result<()> {
    let Some((y_lo, y_hi)) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1))) else {
        return Ok(());
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let (area, footer) = root.split_vertically(SIZE.1 - 24);
    if let Some(note) = axes.note {
        footer.draw(&Text::new(note, (20, 2), ("sans-serif", 13).into_font())).map_err(|e| plot_error(path, e))?;
    }
    let y_range: LogCoord<f64> = ((y_lo / axes.y_room_below).max(1e-6)..(y_hi * 2.0)).log_scale().into();
    let (x_lo, x_hi) = x_bounds;
    if axes.x_log {
        let x_range: LogCoord<f64> = (x_lo..x_hi).log_scale().into();
        draw_on(&area, path, axes, series, x_range, y_range)?;
    } else {
        let x_range: RangedCoordf64 = (x_lo..x_hi).into();
        draw_on(&area, path, axes, series, x_range, y_range)?;
    }
    root.present().map_err(|e| anyhow!("writing {}: {e:?}", path.display()))?;
    Ok(())
}

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Http => "HTTP",
        Mode::InProcess => "in-process",
    }
}

/// Writes both plots of a dataset into `dir`.
pub fn dataset_plots(dir: &Path, d: &DatasetReport, k: usize) -> Result<()> {
    let mut recall_qps: Vec<Series> = Vec::new();
    for mode in [Mode::Http, Mode::InProcess] {
        for pinned in [false, true] {
            let runs: Vec<&RunRecord> = d
                .runs
                .iter()
                .filter(|r| r.mode == mode && r.workload == Workload::Search && r.engine_threads.is_some() == pinned)
                .filter(|r| r.recall.is_some() && r.throughput > 0.0)
                .collect();
            // Concurrency 1 and the concurrency with the best throughput: more points would
            // only pile up at recall 1.
            let best = runs.iter().copied().max_by(|a, b| a.throughput.total_cmp(&b.throughput));
            let runs: Vec<&RunRecord> = runs
                .iter()
                .copied()
                .filter(|r| r.concurrency == 1 || best.is_some_and(|b| std::ptr::eq(*r, b)))
                .collect();
            if runs.is_empty() {
                continue;
            }
            let name = if pinned {
                format!("facedb exact, {}, one engine thread", mode_label(mode))
            } else {
                format!("facedb exact, {} (c = client concurrency: 1 and the fastest)", mode_label(mode))
            };
            recall_qps.push(Series {
                name: Some(name),
                color: recall_qps.len(),
                points: runs.iter().map(|r| (r.recall.unwrap_or(0.0), r.throughput)).collect(),
                labels: runs.iter().map(|r| format!("c={}", r.concurrency)).collect(),
                line: Line::None,
            });
        }
    }
    let mut engines: Vec<&str> = d.peers.records.iter().map(|r| r.engine.as_str()).collect();
    engines.sort_unstable();
    engines.dedup();
    for engine in engines {
        let mut records: Vec<_> = d.peers.records.iter().filter(|r| r.engine == engine).collect();
        records.sort_by(|a, b| a.ef().total_cmp(&b.ef()));
        recall_qps.push(Series {
            name: Some(format!("{engine} (one query at a time)")),
            color: recall_qps.len(),
            points: records.iter().map(|r| (r.recall, r.qps)).collect(),
            labels: records
                .iter()
                .map(|r| if r.ef() > 0.0 { format!("ef={}", r.ef()) } else { String::new() })
                .collect(),
            line: Line::Solid,
        });
    }
    let lowest = bounds(recall_qps.iter().flat_map(|s| s.points.iter().map(|p| p.0))).map_or(0.9, |b| b.0);
    let x_lo = lowest.min(0.9) - 0.01;
    let title = format!("{}: recall@{k} vs QPS", d.name);
    let x_desc = format!("recall@{k}");
    let axes = Axes {
        title: &title,
        x_desc: &x_desc,
        y_desc: "queries per second",
        x_log: false,
        note: None,
        y_room_below: 2.0,
    };
    draw(&dir.join(format!("recall-qps-{}.svg", d.name)), &axes, &recall_qps, (x_lo, 1.0 + (1.0 - x_lo) * 0.03))?;

    let mut latency: Vec<Series> = Vec::new();
    let picks: [(&str, Workload, Option<&str>); 3] = [
        ("top-k", Workload::Search, None),
        ("10% filter", Workload::Filtered, Some("sel-10pct")),
        ("mixed, its searches", Workload::Mixed, None),
    ];
    let mut color = 0;
    for mode in [Mode::Http, Mode::InProcess] {
        for (label, workload, filter) in picks {
            let runs: Vec<&RunRecord> = d
                .runs
                .iter()
                .filter(|r| {
                    r.mode == mode
                        && r.workload == workload
                        && r.engine_threads.is_none()
                        && r.filter.as_deref() == filter
                })
                .collect();
            let at = |p99: bool| -> Vec<(f64, f64)> {
                runs.iter()
                    .filter_map(|r| {
                        let l = r.latency.get(&OpKind::Search)?;
                        Some((r.concurrency as f64, if p99 { l.p99_ms } else { l.p50_ms }))
                    })
                    .collect()
            };
            if runs.is_empty() {
                continue;
            }
            let name = Some(format!("{}, {label}", mode_label(mode)));
            latency.push(Series { name, color, points: at(false), labels: Vec::new(), line: Line::Solid });
            latency.push(Series { name: None, color, points: at(true), labels: Vec::new(), line: Line::Dashed });
            color += 1;
        }
    }
    let (c_lo, c_hi) = bounds(latency.iter().flat_map(|s| s.points.iter().map(|p| p.0))).unwrap_or((1.0, 2.0));
    let title = format!("{}: search latency vs client concurrency", d.name);
    let axes = Axes {
        title: &title,
        x_desc: "client concurrency",
        y_desc: "latency (ms)",
        x_log: true,
        note: Some("solid: p50, dashed: p99"),
        y_room_below: 8.0,
    };
    draw(&dir.join(format!("latency-{}.svg", d.name)), &axes, &latency, (c_lo / 1.2, c_hi * 1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(tick(0.9400000000000001), "0.94");
        assert_eq!(tick(1.0), "1");
        assert_eq!(tick(0.05), "0.05");
        assert_eq!(tick(7000.0), "7000");
    }
}
