//! What a run leaves behind: the table on stdout, `results.json`, and one SVG plot per
//! scenario (latency per second, a percentile curve, or consumer lag for ingestion).

use super::ScenarioResult;
use plotters::prelude::*;
use serde_json::{Value, json};
use std::path::Path;

fn num(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

pub fn table(context: &Value, results: &[ScenarioResult]) {
    println!(
        "\ncommit {}  MongoDB on {}  {} cores  {:.1} GiB",
        context["commit"].as_str().unwrap_or("?"),
        context["mongo_placement"].as_str().unwrap_or("?"),
        context["machine"]["cores"],
        context["machine"]["memory_gib"].as_f64().unwrap_or(0.0),
    );
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  notes",
        "scenario", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "ok", "errors"
    );
    for r in results.iter().filter(|r| r.name != "memory") {
        let f = &r.figures;
        let latency = &f["latency_ms"];
        let errors: Vec<String> = f["errors"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let notes: Vec<&str> = f["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  {}",
            r.name,
            num(&f["rate"], 0),
            num(&latency["p50"], 1),
            num(&latency["p95"], 1),
            num(&latency["p99"], 1),
            num(&latency["max"], 1),
            f["ok"].as_u64().map_or("-".into(), |n| n.to_string()),
            if errors.is_empty() {
                "0".into()
            } else {
                errors.join(",")
            },
            notes.join("; "),
        );
    }
    // CPU% and peak RSS per process, one row per scenario.
    let with_processes: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.name != "memory" && r.figures["processes"].is_array())
        .collect();
    if let Some(first) = with_processes.first() {
        let names: Vec<&str> = first.figures["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        println!("\nCPU % / peak RSS MiB per process");
        print!("{:<32}", "scenario");
        for name in &names {
            print!(" {:>18}", name);
        }
        println!();
        for r in with_processes {
            print!("{:<32}", r.name);
            for p in r.figures["processes"].as_array().into_iter().flatten() {
                print!(
                    " {:>18}",
                    format!("{}% / {}", num(&p["cpu_pct"], 0), num(&p["rss_mib_max"], 0))
                );
            }
            println!();
        }
    }
    if let Some(memory) = results.iter().find(|r| r.name == "memory") {
        println!("\nmemory: RSS MiB idle -> peak during the scenarios' load");
        for p in memory.figures["processes"].as_array().into_iter().flatten() {
            println!(
                "  {:<20} {:>8} -> {:>8}",
                p["name"].as_str().unwrap_or("?"),
                num(&p["rss_mib_idle"], 1),
                num(&p["rss_mib_peak"], 1)
            );
        }
    }
}

pub fn write_json(dir: &Path, context: &Value, results: &[ScenarioResult]) -> anyhow::Result<()> {
    let scenarios: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut f = r.figures.clone();
            f["series"] = json!(r.series.iter().map(|s| json!({
                "at_secs": s.at_secs, "count": s.count, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
            })).collect::<Vec<_>>());
            f
        })
        .collect();
    let mut all = context.clone();
    all["scenarios"] = Value::Array(scenarios);
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&all)?)?;
    Ok(())
}

/// One plot per scenario row; a plot that fails is reported and skipped, never fatal.
pub fn plots(dir: &Path, results: &[ScenarioResult]) {
    for r in results {
        let file = dir.join(format!(
            "{}.svg",
            r.name
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        ));
        let lines: Vec<(&str, Vec<(f64, f64)>)>;
        let (x_desc, y_desc);
        if r.name == "ingest" {
            let lag = r.figures["lag"].as_array().cloned().unwrap_or_default();
            let point = |key: &str| {
                lag.iter()
                    .filter_map(|s| Some((s["at_secs"].as_f64()?, s[key].as_f64()?)))
                    .collect()
            };
            lines = vec![
                ("consumer lag", point("lag")),
                ("consumed/s", point("processed_per_sec")),
            ];
            (x_desc, y_desc) = ("seconds", "messages");
        } else if r.series.len() >= 2 {
            lines = vec![
                (
                    "p50",
                    r.series.iter().map(|s| (s.at_secs, s.p50_ms)).collect(),
                ),
                (
                    "p99",
                    r.series.iter().map(|s| (s.at_secs, s.p99_ms)).collect(),
                ),
            ];
            (x_desc, y_desc) = ("seconds", "latency ms (per second)");
        } else {
            let curve: Vec<(f64, f64)> = r.figures["percentiles_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                .collect();
            lines = vec![("latency", curve)];
            (x_desc, y_desc) = ("percentile", "latency ms");
        }
        if lines.iter().all(|(_, l)| l.is_empty()) {
            continue;
        }
        if let Err(e) = plot(&file, &r.name, x_desc, y_desc, &lines) {
            eprintln!("[bench] plot {} failed: {e}", file.display());
        }
    }
}

fn plot(
    file: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let points = lines.iter().flat_map(|(_, l)| l.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(file, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    let colours = [BLUE, RED, GREEN];
    for (i, (label, line)) in lines.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(
                line.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
