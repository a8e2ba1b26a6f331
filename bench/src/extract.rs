//! `facedb-bench extract`: latency of face detection and extraction (issue 6).
//!
//! Makes a 640×480 photo with one face from a test photo (the face found by HOG, cropped around
//! it at a third of the frame's height, scaled to 640×480, saved as JPEG), then:
//!
//! 1. **Stages, in-process, one thread**: JPEG decode, HOG detection (upsample 0 and 1), CNN
//!    detection (upsample 0), 5 landmarks, aligned chip, descriptor, the chip's PNG encoding.
//! 2. **Whole photo, in-process**: decode + detect + landmarks + chip + descriptor, as a worker
//!    runs it, for HOG (upsample 1, the server's default) and CNN (upsample 0).
//! 3. **Whole photo over HTTP**: `POST /v2/detect?facen=true` to a `facedb extract` started with
//!    one worker, for both detectors, client-side wall time; then the same with
//!    `--keep-buffers`.
//!
//! Medians (and p90) of `--runs` runs after one warm-up each; Markdown on stdout and in
//! `--out`/extract.md, JSON in `--out`/extract.json.

use std::io::{BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use facedb::extract::dlib::{Models, Rect};
use facedb::extract::photo::{self, rgb_ref, ImageLimits};
use image::{ImageFormat, RgbImage};

use crate::machine;

#[derive(Args)]
pub struct ExtractArgs {
    /// A photo with one face (default: obama.jpg of the test photos).
    #[arg(long, value_name = "FILE", default_value = "tests/images/obama.jpg")]
    photo: PathBuf,
    /// The model files.
    #[arg(long, value_name = "DIR", default_value = "models")]
    models_dir: PathBuf,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// The `facedb` binary for the HTTP runs [default: next to this one].
    #[arg(long, value_name = "FILE")]
    bin: Option<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = "target/bench-extract")]
    out: PathBuf,
}

/// Milliseconds of each run of one measurement.
struct Series {
    name: String,
    ms: Vec<f64>,
}

impl Series {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// Times `f` `runs` times after one untimed warm-up.
fn time<T>(name: &str, runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<Series> {
    f()?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f()?);
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Series { name: name.to_owned(), ms })
}

fn model<T>(r: Result<T, facedb::extract::dlib::ModelError>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// A 640×480 JPEG of the photo's one face: a 4:3 crop three face-heights tall, scaled.
fn frame_640x480(models: &mut Models, path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {} (tools/setup.sh fetches it)", path.display()))?;
    let original = photo::decode(&bytes, ImageLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))?.image;
    let faces = model(models.detect_hog(rgb_ref(&original), 1))?;
    let [face] = faces.as_slice() else { bail!("{} has {} faces by HOG, not one", path.display(), faces.len()) };
    let Rect { left, top, right, bottom } = face.rect;
    let (cx, cy) = ((left + right) / 2, (top + bottom) / 2);
    let height = ((bottom - top) * 3).min(i64::from(original.height())).min(i64::from(original.width()) * 3 / 4);
    let width = height * 4 / 3;
    let x = (cx - width / 2).clamp(0, i64::from(original.width()) - width);
    let y = (cy - height / 2).clamp(0, i64::from(original.height()) - height);
    let crop = image::imageops::crop_imm(&original, x as u32, y as u32, width as u32, height as u32).to_image();
    let frame = image::imageops::resize(&crop, 640, 480, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    frame.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)?;
    Ok(jpeg)
}

/// Everything a worker does for a photo with the given detector.
fn whole(models: &mut Models, jpeg: &[u8], cnn: bool, upsample: u32) -> Result<usize> {
    let image = photo::decode(jpeg, ImageLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))?.image;
    let faces = if cnn {
        model(models.detect_cnn(rgb_ref(&image), upsample))?
    } else {
        model(models.detect_hog(rgb_ref(&image), upsample))?
    };
    for face in &faces {
        let landmarks = model(models.landmarks(rgb_ref(&image), face.rect))?;
        let chip = model(models.chip(rgb_ref(&image), &landmarks))?;
        model(models.descriptor(&chip))?;
    }
    Ok(faces.len())
}

fn in_process(args: &ExtractArgs, models: &mut Models, jpeg: &[u8]) -> Result<Vec<Series>> {
    let image: RgbImage = photo::decode(jpeg, ImageLimits::default()).map_err(|e| anyhow::anyhow!("{e}"))?.image;
    let faces = model(models.detect_hog(rgb_ref(&image), 1))?;
    let [face] = faces.as_slice() else { bail!("the 640x480 frame has {} faces by HOG, not one", faces.len()) };
    let landmarks = model(models.landmarks(rgb_ref(&image), face.rect))?;
    let chip = model(models.chip(rgb_ref(&image), &landmarks))?;
    let runs = args.runs;
    let mut series = vec![
        time("decode JPEG 640x480", runs, || {
            photo::decode(jpeg, ImageLimits::default()).map_err(|e| anyhow::anyhow!("{e}")).map(|_| ())
        })?,
        time("detect HOG, upsample 0", runs, || model(models.detect_hog(rgb_ref(&image), 0)))?,
        time("detect HOG, upsample 1 (default)", runs, || model(models.detect_hog(rgb_ref(&image), 1)))?,
        time("detect CNN, upsample 0 (default)", runs.min(10), || model(models.detect_cnn(rgb_ref(&image), 0)))?,
        time("landmarks (5 points)", runs, || model(models.landmarks(rgb_ref(&image), face.rect)))?,
        time("aligned chip 150x150", runs, || model(models.chip(rgb_ref(&image), &landmarks)))?,
        time("descriptor (ResNet, 128-d)", runs, || model(models.descriptor(&chip)))?,
        time("chip PNG encoding", runs, || {
            let mut png = Vec::new();
            RgbImage::from_raw(150, 150, chip.clone())
                .unwrap()
                .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
            Ok(png)
        })?,
    ];
    series.push(time("whole photo, HOG (in-process)", runs, || whole(models, jpeg, false, 1))?);
    series.push(time("whole photo, CNN (in-process)", runs.min(10), || whole(models, jpeg, true, 0))?);
    Ok(series)
}

/// `facedb extract` on a free port with one worker; killed on drop.
struct Extractor {
    child: Child,
    base: String,
}

impl Drop for Extractor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_extract(bin: &Path, models_dir: &Path, keep_buffers: bool) -> Result<Extractor> {
    let mut child = Command::new(bin)
        .args(["extract", "--listen", "127.0.0.1:0", "--extract-workers", "1", "--models-dir"])
        .arg(models_dir)
        .args(keep_buffers.then_some("--keep-buffers"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(address) = line.trim().strip_prefix("facedb listening on ") else {
        let _ = child.kill();
        bail!("facedb extract did not start (it printed {line:?})");
    };
    Ok(Extractor { base: address.to_owned(), child })
}

fn over_http(args: &ExtractArgs, jpeg: &[u8]) -> Result<Vec<Series>> {
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("facedb"),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let post = |server: &Extractor, detector: &str| -> Result<()> {
        let url = format!("{}/v2/detect?facen=true&detector={detector}", server.base);
        let mut response = agent.post(&url).header("content-type", "image/jpeg").send(jpeg)?;
        let body = response.body_mut().read_to_string()?;
        if response.status() != 200 || !body.contains("\"id\"") {
            bail!("detect gave {}: {body}", response.status());
        }
        Ok(())
    };
    let server = start_extract(&bin, &args.models_dir, false)?;
    let mut series = vec![
        time("whole photo, HOG, over HTTP", args.runs, || post(&server, "hog"))?,
        time("whole photo, CNN, over HTTP", args.runs.min(10), || post(&server, "cnn"))?,
    ];
    drop(server);
    let server = start_extract(&bin, &args.models_dir, true)?;
    series.push(time("whole photo, HOG, over HTTP, extract --keep-buffers", args.runs, || post(&server, "hog"))?);
    series
        .push(time("whole photo, CNN, over HTTP, extract --keep-buffers", args.runs.min(10), || post(&server, "cnn"))?);
    Ok(series)
}

fn describe(m: &machine::Machine) -> String {
    format!(
        "{} cores ({}), {:.0} GiB, Linux {}; {}",
        m.nproc,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_bytes.unwrap_or(0) as f64 / f64::from(1u32 << 30),
        m.kernel.as_deref().unwrap_or("?"),
        machine::now_utc()
    )
}

pub fn run(args: ExtractArgs, command_line: String) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let mut models =
        model(Models::load(&args.models_dir, true)).context("loading the models (tools/setup.sh fetches them)")?;
    let jpeg = frame_640x480(&mut models, &args.photo)?;
    std::fs::write(args.out.join("frame-640x480.jpg"), &jpeg)?;
    let mut series = in_process(&args, &mut models, &jpeg)?;
    drop(models);
    series.extend(over_http(&args, &jpeg)?);
    let mut md = format!(
        "# Detection and extraction latency\n\n`{command_line}`\n\n{}\n\nA 640×480 JPEG with one face (from {}), \
         OPENBLAS_NUM_THREADS={}.\n\n| stage | runs | median ms | p90 ms |\n|---|---:|---:|---:|\n",
        describe(&machine::Machine::describe()),
        args.photo.display(),
        std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
    );
    let mut json = Vec::new();
    for s in &series {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} |\n",
            s.name,
            s.ms.len(),
            s.percentile(0.5),
            s.percentile(0.9)
        ));
        json.push(serde_json::json!({"stage": s.name, "runs": s.ms.len(), "median_ms": s.percentile(0.5), "p90_ms": s.percentile(0.9)}));
    }
    print!("{md}");
    std::fs::write(args.out.join("extract.md"), &md)?;
    std::fs::write(args.out.join("extract.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
