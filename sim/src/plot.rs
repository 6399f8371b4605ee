//! SVG figures: latency CDF per policy, per-vCPU share, sweep curves.

use crate::metrics::Metrics;
use crate::report::{policy_label, Report};
use crate::sweep::SweepPoint;
use evroute_model::Policy;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const COLOURS: [RGBColor; 3] = [RGBColor(200, 60, 40), RGBColor(30, 110, 200), RGBColor(40, 150, 70)];

fn colour(policy: &str) -> RGBColor {
    let i = Policy::ALL.iter().position(|p| p.option_name() == policy).unwrap_or(0);
    COLOURS[i]
}

fn label(policy: &str) -> &'static str {
    policy_label(Policy::from_option(policy).expect("own name"))
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String {
    let path = path.to_path_buf();
    move |e| format!("{}: {e}", path.display())
}

/// `latency-cdf.svg`: fraction of events handled within x µs, log x.
pub fn latency_cdf(dir: &Path, r: &Report, ms: &[Metrics]) -> Res<PathBuf> {
    let path = dir.join("latency-cdf.svg");
    let e = err(&path);
    let max_us = ms.iter().map(|m| m.handler.hist.max()).max().unwrap_or(1).max(1000) as f64 / 1e3;
    let root = SVGBackend::new(&path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Raise to handler start: {}", r.scenario), ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((1.0f64..max_us * 1.2).log_scale(), 0.0f64..1.0)
        .map_err(&e)?;
    chart.configure_mesh().x_desc("latency (µs, log scale)").y_desc("fraction of events").draw().map_err(&e)?;
    for (p, m) in r.policies.iter().zip(ms) {
        let c = colour(p.policy);
        let pts: Vec<(f64, f64)> = m
            .handler
            .hist
            .iter_log(1_000, 1.05)
            .map(|v| (v.value_iterated_to() as f64 / 1e3, v.quantile_iterated_to()))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(&e)?
            .label(format!("{}  p99 {:.0} µs", label(p.policy), p.handler.p99_us))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;

    Ok(path.clone())
}

/// `vcpu-share.svg`: share of handler runs on each vCPU, per policy.
pub fn vcpu_share(dir: &Path, r: &Report) -> Res<PathBuf> {
    let path = dir.join("vcpu-share.svg");
    let e = err(&path);
    let n = r.policies.first().map_or(0, |p| p.handled_per_vcpu.len());
    let k = r.policies.len().max(1);
    let root = SVGBackend::new(&path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Share of events handled per vCPU (Jain's index in the legend)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0f64..n as f64, 0.0f64..1.0)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 && (*x as usize) < n {
                format!("vCPU {}", *x as usize)
            } else {
                String::new()
            }
        })
        .x_desc("vCPU of the guest (bars start at the label)")
        .y_desc("share of handler runs")
        .draw()
        .map_err(&e)?;
    for (i, p) in r.policies.iter().enumerate() {
        let c = colour(p.policy);
        let total: u64 = p.handled_per_vcpu.iter().sum::<u64>().max(1);
        let w = 0.8 / k as f64;
        chart
            .draw_series(p.handled_per_vcpu.iter().enumerate().map(|(v, &h)| {
                let x0 = v as f64 + 0.1 + i as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w, h as f64 / total as f64)], c.filled())
            }))
            .map_err(&e)?
            .label(format!("{}  Jain {:.3}", label(p.policy), p.jain))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw().map_err(&e)?;
    root.present().map_err(&e)?;

    Ok(path.clone())
}

/// `sweep-p99.svg`: p99 against overcommit, one panel per event rate.
pub fn sweep(dir: &Path, points: &[SweepPoint]) -> Res<PathBuf> {
    let path = dir.join("sweep-p99.svg");
    let e = err(&path);
    let mut rates: Vec<f64> = points.iter().map(|p| p.rate_per_s).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let cols = rates.len().clamp(1, 5);
    let rows = rates.len().div_ceil(cols).max(1);
    let root = SVGBackend::new(&path, (300 * cols as u32, 260 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (title, body) = root.split_vertically(40);
    title
        .draw_text(
            "p99 raise-to-handler (µs, log) against overcommit (vCPUs / pCPUs); red off, blue running, green balanced",
            &("sans-serif", 16).into_text_style(&title),
            (10, 12),
        )
        .map_err(&e)?;
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.overcommit), b.max(p.overcommit)));
    let ymax = points.iter().flat_map(|p| p.policies.iter().map(|q| q.p99_us)).fold(10.0, f64::max) * 1.5;
    for (panel, &rate) in body.split_evenly((rows, cols)).iter().zip(&rates) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{rate:.0} events/s"), ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(45)
            .build_cartesian_2d(x0..x1.max(x0 + 0.01), (1.0f64..ymax).log_scale())
            .map_err(&e)?;
        chart.configure_mesh().x_labels(5).y_labels(4).draw().map_err(&e)?;
        for pol in Policy::ALL {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.rate_per_s == rate)
                .filter_map(|p| {
                    p.policies.iter().find(|q| q.policy == pol.option_name()).map(|q| (p.overcommit, q.p99_us.max(1.0)))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart.draw_series(LineSeries::new(pts, colour(pol.option_name()).stroke_width(2))).map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;

    Ok(path.clone())
}
