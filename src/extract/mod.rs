//! The detection and extraction front-end: photo in, faces with boxes and feature vectors out.
//!
//! dlib's models ([`dlib`]) run on a pool of worker threads, one set of models per thread
//! (they are `Send`, not `Sync`), fed by a bounded queue: when it is full a request gets 503
//! `OVER_CAPACITY` at once instead of waiting without bound. A job does all the heavy work of a
//! photo on its worker: decoding ([`photo`]), detection on a copy scaled to at most
//! `detect_max_side`, then for each face the 5 landmarks, the aligned 150×150 chip and the
//! 128-d descriptor, all on the full-size photo. What was found is kept in the
//! [`cache::DetectionCache`] under a detection id.

pub mod cache;
pub mod dlib;
pub mod fetch;
pub mod photo;
pub mod uploads;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use ipnet::IpNet;
use parking_lot::Mutex;

use self::cache::{CacheConfig, CachedFace, DetectionCache};
use self::dlib::{FaceBox, Models, Rect, CHIP_SIZE};
use self::fetch::{DenyList, FetchConfig, Fetcher};
use self::photo::{rgb_ref, ImageLimits, Photo, Turn};
use crate::error::{Error, ErrorKind, Result};

/// The default listen address of `facedb extract` (the original's extraction API port).
pub const DEFAULT_EXTRACT_LISTEN: &str = "127.0.0.1:18666";

/// Cosine similarity that matches dlib's same-person rule (Euclidean distance < 0.6 between raw
/// descriptors): descriptors of norm n are 0.6 apart at cosine 1 − 0.36 / (2n²), and the test
/// photos' descriptors have norms 1.36–1.41 (median 1.39: 0.907). See docs/detection.md.
pub const SAME_PERSON_SCORE: f32 = 0.907;

/// Everything the extractor runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractConfig {
    /// The directory holding the model files under their original names.
    pub models_dir: PathBuf,
    /// Worker threads, each with its own models.
    pub workers: usize,
    /// Photos waiting for a worker at most; more get 503 `OVER_CAPACITY`.
    pub queue: usize,
    /// Detection runs on a copy whose longer side is at most this.
    pub detect_max_side: u32,
    pub image_limits: ImageLimits,
    /// Largest photo accepted in a request body or fetched from a URL, in bytes.
    pub body_image_length: usize,
    pub url_length: usize,
    pub deny_networks: Vec<IpNet>,
    pub fetch_timeout: Duration,
    /// Whether `return_facen=true` may put facens in detect responses.
    pub allow_return_facen: bool,
    pub cache: CacheConfig,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            models_dir: PathBuf::from("models"),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 32,
            detect_max_side: 2000,
            image_limits: ImageLimits::default(),
            body_image_length: 32 << 20,
            url_length: 4096,
            deny_networks: fetch::parse_networks(fetch::DEFAULT_DENY_NETWORKS).expect("the default list parses"),
            fetch_timeout: Duration::from_secs(30),
            allow_return_facen: false,
            cache: CacheConfig::default(),
        }
    }
}

/// Which detector finds the faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// dlib's HOG + linear SVM frontal face detector: fast, frontal faces.
    Hog,
    /// dlib's CNN (MMOD) detector: slower, finds turned and small faces too.
    Cnn,
    /// No detection: the photo already is an aligned face chip (as the video worker sends).
    Normalized,
}

impl Detector {
    pub fn parse(text: &str) -> Option<Detector> {
        match text {
            "hog" => Some(Detector::Hog),
            // `nnd` is the original's neural detector: ours is the CNN.
            "cnn" | "nnd" => Some(Detector::Cnn),
            "normalized" => Some(Detector::Normalized),
            _ => None,
        }
    }

    /// Upsampling when the request gives none: HOG misses faces under ~80 px without it; the
    /// CNN finds faces from ~40 px at 1× and costs four times as much per upsampling.
    pub fn default_upsample(self) -> u32 {
        match self {
            Detector::Hog => 1,
            Detector::Cnn | Detector::Normalized => 0,
        }
    }
}

/// What a detect request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectOptions {
    pub detector: Detector,
    pub upsample: u32,
    /// Extract each face's facen (and cache it with the chip).
    pub facen: bool,
    /// Look for faces in the four quarter turns of the photo too.
    pub autorotate: bool,
}

/// Milliseconds spent in each stage of a photo, summed over its faces.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub queue: f64,
    pub decode: f64,
    pub detect: f64,
    pub landmarks: f64,
    pub chip: f64,
    pub descriptor: f64,
    pub total: f64,
}

/// A face found in a photo, cached under `id`.
#[derive(Debug, Clone)]
pub struct DetectedFace {
    pub id: String,
    pub bbox: Rect,
    pub score: f64,
    pub facen: Option<Arc<Vec<f32>>>,
}

/// The answer to a photo.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The photo's EXIF orientation (1: upright or none).
    pub orientation: u8,
    pub faces: Vec<DetectedFace>,
    pub timings: Timings,
}

type Job = Box<dyn FnOnce(&mut Models) + Send>;

/// The extractor: model workers, their queue, the detection cache and the URL fetcher.
pub struct Extractor {
    jobs: SyncSender<Job>,
    cache: DetectionCache,
    fetcher: Fetcher,
    config: ExtractConfig,
}

impl Extractor {
    /// Starts the workers; each loads its models first, and a model that fails to load fails
    /// the start with the file named.
    pub fn start(config: ExtractConfig) -> anyhow::Result<Arc<Extractor>> {
        let workers = config.workers.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(config.queue.max(1));
        let queue = Arc::new(Mutex::new(queue));
        let (ready_tx, ready_rx) = mpsc::channel();
        for n in 0..workers {
            let queue = queue.clone();
            let ready = ready_tx.clone();
            let dir = config.models_dir.clone();
            std::thread::Builder::new().name(format!("extract-{n}")).spawn(move || match Models::load(&dir, true) {
                Ok(mut models) => {
                    let _ = ready.send(Ok(()));
                    work(&queue, &mut models);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })?;
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e @ dlib::ModelError::NotBuilt)) => anyhow::bail!("{e}"),
                Ok(Err(e)) => anyhow::bail!("cannot load the face models: {e} (tools/setup.sh fetches them)"),
                Err(_) => anyhow::bail!("an extraction worker stopped while loading its models"),
            }
        }
        let fetcher = Fetcher::new(FetchConfig {
            deny: DenyList::new(config.deny_networks.clone()),
            url_length: config.url_length,
            max_bytes: config.body_image_length,
            timeout: config.fetch_timeout,
            connect_timeout: config.fetch_timeout.min(Duration::from_secs(5)),
        })?;
        tracing::info!(workers, queue = config.queue, models = %config.models_dir.display(), "face models loaded");
        Ok(Arc::new(Extractor { jobs, cache: DetectionCache::new(config.cache), fetcher, config }))
    }

    pub fn config(&self) -> &ExtractConfig {
        &self.config
    }

    /// Fetches a photo by URL under the deny-list and limits.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>> {
        self.fetcher.fetch(url).await
    }

    /// A cached detection.
    pub fn detection(&self, id: &str) -> Option<CachedFace> {
        self.cache.get(id)
    }

    /// Finds the faces of a photo (and their facens when asked) on a worker, and caches them.
    pub async fn detect(&self, bytes: Vec<u8>, options: DetectOptions) -> Result<Detection> {
        let queued = Instant::now();
        let limits = self.config.image_limits;
        let max_side = self.config.detect_max_side;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |models: &mut Models| {
            let mut timings = Timings { queue: ms(queued.elapsed()), ..Timings::default() };
            let result = run(models, &bytes, options, limits, max_side, &mut timings);
            timings.total = ms(queued.elapsed());
            let _ = tx.send(result.map(|found| (found, timings)));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Error::new(
                    503,
                    ErrorKind::OverCapacity,
                    format!("the extraction queue is full ({} photos waiting); try again later", self.config.queue),
                ))
            }
            Err(TrySendError::Disconnected(_)) => return Err(Error::internal("the extraction workers are gone")),
        }
        let ((orientation, found), timings) =
            rx.await.map_err(|_| Error::internal("an extraction worker failed on this photo"))??;
        let faces = found
            .into_iter()
            .map(|f| {
                let facen = f.facen.map(|v| Arc::new(v.to_vec()));
                let cached = CachedFace { bbox: f.bbox, score: f.score, facen: facen.clone(), chip_png: f.chip_png };
                DetectedFace { id: self.cache.insert(cached), bbox: f.bbox, score: f.score, facen }
            })
            .collect();
        Ok(Detection { orientation, faces, timings })
    }
}

fn work(queue: &Mutex<Receiver<Job>>, models: &mut Models) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let job = queue.lock().recv();
        match job {
            Ok(job) => job(models),
            Err(_) => return,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A face found on a worker, before it is cached.
struct Found {
    bbox: Rect,
    score: f64,
    facen: Option<[f32; dlib::DESCRIPTOR_LEN]>,
    chip_png: Option<Arc<Vec<u8>>>,
}

fn model_error(e: dlib::ModelError) -> Error {
    Error::new(500, ErrorKind::ExtractionError, e.to_string())
}

/// Everything done for one photo, on a worker.
fn run(
    models: &mut Models,
    bytes: &[u8],
    options: DetectOptions,
    limits: ImageLimits,
    max_side: u32,
    timings: &mut Timings,
) -> Result<(u8, Vec<Found>)> {
    let start = Instant::now();
    let photo = photo::decode(bytes, limits)?;
    timings.decode = ms(start.elapsed());
    if options.detector == Detector::Normalized {
        return Ok((photo.orientation, vec![normalized(models, &photo, timings)?]));
    }
    let (width, height) = (photo.image.width(), photo.image.height());
    let turns: &[Turn] = if options.autorotate { &Turn::ALL } else { &[Turn::None] };
    // Every face of every turn, in the photo's pixels, with where it was found.
    let mut candidates: Vec<(Turn, Rect, FaceBox)> = Vec::new();
    let mut turned_images: Vec<(Turn, Option<RgbImage>)> = Vec::new();
    for &turn in turns {
        let turned = turn.apply(&photo.image);
        let image = turned.as_ref().unwrap_or(&photo.image);
        let started = Instant::now();
        let (small, factor) = photo::fit(image, max_side);
        let target = rgb_ref(small.as_ref().unwrap_or(image));
        let boxes = match options.detector {
            Detector::Hog => models.detect_hog(target, options.upsample),
            _ => models.detect_cnn(target, options.upsample),
        }
        .map_err(model_error)?;
        timings.detect += ms(started.elapsed());
        for b in boxes {
            let rect = clamp(photo::scale_rect(b.rect, factor), image.width(), image.height());
            let upright = FaceBox { rect: turn.unturn(rect, width, height), score: b.score };
            candidates.push((turn, rect, upright));
        }
        turned_images.push((turn, turned));
    }
    let upright: Vec<FaceBox> = candidates.iter().map(|c| c.2).collect();
    let kept = if options.autorotate {
        photo::merge_overlaps(&upright, 0.5)
    } else {
        let mut all: Vec<usize> = (0..upright.len()).collect();
        all.sort_by(|&a, &b| upright[b].score.total_cmp(&upright[a].score));
        all
    };
    let mut found = Vec::with_capacity(kept.len());
    for i in kept {
        let (turn, rect, face) = candidates[i];
        let (facen, chip_png) = if options.facen {
            let image = turned_images.iter().find(|t| t.0 == turn).and_then(|t| t.1.as_ref()).unwrap_or(&photo.image);
            let (facen, chip) = describe(models, image, rect, timings)?;
            (Some(facen), Some(chip))
        } else {
            (None, None)
        };
        found.push(Found { bbox: face.rect, score: face.score, facen, chip_png });
    }
    Ok((photo.orientation, found))
}

/// Keeps a box inside the image (dlib's boxes may reach past its edges).
fn clamp(r: Rect, width: u32, height: u32) -> Rect {
    let (w, h) = (i64::from(width) - 1, i64::from(height) - 1);
    Rect { left: r.left.clamp(0, w), top: r.top.clamp(0, h), right: r.right.clamp(0, w), bottom: r.bottom.clamp(0, h) }
}

/// Landmarks, aligned chip and descriptor of the face in `rect`.
fn describe(
    models: &mut Models,
    image: &RgbImage,
    rect: Rect,
    timings: &mut Timings,
) -> Result<([f32; dlib::DESCRIPTOR_LEN], Arc<Vec<u8>>)> {
    let started = Instant::now();
    let landmarks = models.landmarks(rgb_ref(image), rect).map_err(model_error)?;
    let landmarked = Instant::now();
    timings.landmarks += ms(landmarked - started);
    let chip = models.chip(rgb_ref(image), &landmarks).map_err(model_error)?;
    let chipped = Instant::now();
    timings.chip += ms(chipped - landmarked);
    let facen = models.descriptor(&chip).map_err(model_error)?;
    timings.descriptor += ms(chipped.elapsed());
    Ok((facen, Arc::new(encode_chip(chip)?)))
}

/// The photo is a chip already: scaled to the chip size if it is not, and described.
fn normalized(models: &mut Models, photo: &Photo, timings: &mut Timings) -> Result<Found> {
    let image = &photo.image;
    let started = Instant::now();
    let chip = if image.width() == CHIP_SIZE && image.height() == CHIP_SIZE {
        image.as_raw().clone()
    } else {
        image::imageops::resize(image, CHIP_SIZE, CHIP_SIZE, image::imageops::FilterType::Triangle).into_raw()
    };
    timings.chip = ms(started.elapsed());
    let described = Instant::now();
    let facen = models.descriptor(&chip).map_err(model_error)?;
    timings.descriptor = ms(described.elapsed());
    let whole = Rect { left: 0, top: 0, right: i64::from(image.width()) - 1, bottom: i64::from(image.height()) - 1 };
    Ok(Found { bbox: whole, score: 1.0, facen: Some(facen), chip_png: Some(Arc::new(encode_chip(chip)?)) })
}

fn encode_chip(chip: Vec<u8>) -> Result<Vec<u8>> {
    let image = RgbImage::from_raw(CHIP_SIZE, CHIP_SIZE, chip)
        .ok_or_else(|| Error::internal("a face chip has the wrong size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::internal(format!("cannot encode a face chip: {e}")))?;
    Ok(png)
}
