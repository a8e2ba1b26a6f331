//! [`Models`] over the C++ shim (`src/extract/shim.cpp`, C API in `shim.h`), which `build.rs`
//! compiles and links against Debian's libdlib when the `detect` feature is on.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;
use std::ptr::{self, NonNull};

use super::{
    FaceBox, Landmarks, ModelError, Rect, RgbRef, CHIP_SIZE, CNN_DETECTOR_FILE, DESCRIPTOR_LEN, ENCODER_FILE,
    LANDMARKS_FILE,
};

/// The C API of shim.h, by hand (it is small): keep the two in step.
mod ffi {
    use std::ffi::{c_char, c_int};
    use std::marker::{PhantomData, PhantomPinned};

    pub const OK: c_int = 0;

    /// `facedb_models`, opaque.
    #[repr(C)]
    pub struct RawModels {
        _data: [u8; 0],
        _marker: PhantomData<(*mut u8, PhantomPinned)>,
    }

    /// `facedb_box`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct RawBox {
        pub left: i64,
        pub top: i64,
        pub right: i64,
        pub bottom: i64,
        pub score: f64,
    }

    pub type DetectFn = unsafe extern "C" fn(
        models: *mut RawModels,
        rgb: *const u8,
        width: u32,
        height: u32,
        upsample: u32,
        out: *mut *mut RawBox,
        n_out: *mut usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;

    pub type LoadFn =
        unsafe extern "C" fn(models: *mut RawModels, path: *const c_char, err: *mut c_char, err_len: usize) -> c_int;

    extern "C" {
        pub fn facedb_models_new(out: *mut *mut RawModels, err: *mut c_char, err_len: usize) -> c_int;
        pub fn facedb_models_free(models: *mut RawModels);
        pub fn facedb_load_landmarks(
            models: *mut RawModels,
            path: *const c_char,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn facedb_load_encoder(
            models: *mut RawModels,
            path: *const c_char,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn facedb_load_cnn(models: *mut RawModels, path: *const c_char, err: *mut c_char, err_len: usize) -> c_int;
        pub fn facedb_detect_hog(
            models: *mut RawModels,
            rgb: *const u8,
            width: u32,
            height: u32,
            upsample: u32,
            out: *mut *mut RawBox,
            n_out: *mut usize,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn facedb_detect_cnn(
            models: *mut RawModels,
            rgb: *const u8,
            width: u32,
            height: u32,
            upsample: u32,
            out: *mut *mut RawBox,
            n_out: *mut usize,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn facedb_free_boxes(boxes: *mut RawBox);
        pub fn facedb_landmarks(
            models: *mut RawModels,
            rgb: *const u8,
            width: u32,
            height: u32,
            left: i64,
            top: i64,
            right: i64,
            bottom: i64,
            out_xy: *mut f64,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn facedb_chip(
            rgb: *const u8,
            width: u32,
            height: u32,
            xy: *const f64,
            out_chip: *mut u8,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn facedb_descriptor(
            models: *mut RawModels,
            chip: *const u8,
            out: *mut f32,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
    }
}

/// Room for the shim's error messages (longer ones are truncated).
const ERR_LEN: usize = 1024;

/// Calls the shim with an error buffer; a non-zero code becomes the buffer's message.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut err = [0u8; ERR_LEN];
    if f(err.as_mut_ptr().cast(), ERR_LEN) == ffi::OK {
        return Ok(());
    }
    let message = CStr::from_bytes_until_nul(&err).map_or_else(|_| "unknown error".into(), |m| m.to_string_lossy());
    Err(if message.is_empty() { "unknown error".into() } else { message.into_owned() })
}

/// Checks that `image.data` holds exactly `width * height * 3` bytes.
fn check_image(image: &RgbRef<'_>) -> Result<(), ModelError> {
    let expected = (image.width as usize).checked_mul(image.height as usize).and_then(|n| n.checked_mul(3));
    if expected == Some(image.data.len()) {
        Ok(())
    } else {
        Err(ModelError::Run(format!(
            "an image of {}x{} needs {} bytes of RGB, got {}",
            image.width,
            image.height,
            expected.map_or_else(|| "more than usize".into(), |n| n.to_string()),
            image.data.len()
        )))
    }
}

/// One set of models: `Send`, not `Sync` (one per worker thread).
pub struct Models {
    raw: NonNull<ffi::RawModels>,
    cnn: bool,
}

// SAFETY: the shim's objects hold no thread-affine state (no thread-locals, no locks held across
// calls); dlib's networks just must not run from two threads at once. `Models` is not `Sync` (the
// raw pointer keeps it so) and every call takes `&mut self`, so one thread at a time uses it.
unsafe impl Send for Models {}

impl Drop for Models {
    fn drop(&mut self) {
        // SAFETY: `raw` came from facedb_models_new and is freed only here.
        unsafe { ffi::facedb_models_free(self.raw.as_ptr()) }
    }
}

impl Models {
    /// Loads the HOG detector (built into dlib), the 5-point shape predictor and the encoder
    /// from `dir`, and the CNN detector too when `cnn`.
    ///
    /// Every file is checked to exist before any is read; a missing or unreadable one is a
    /// [`ModelError::Load`] naming it (with dlib's message when deserializing failed).
    pub fn load(dir: &Path, cnn: bool) -> Result<Models, ModelError> {
        let mut files: Vec<(&str, ffi::LoadFn)> =
            vec![(LANDMARKS_FILE, ffi::facedb_load_landmarks), (ENCODER_FILE, ffi::facedb_load_encoder)];
        if cnn {
            files.push((CNN_DETECTOR_FILE, ffi::facedb_load_cnn));
        }
        for (name, _) in &files {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(ModelError::Load {
                    path: path.display().to_string(),
                    message: format!(
                        "no such file in {} (tools/setup.sh, or tools/fetch-models.sh, downloads the models)",
                        dir.display()
                    ),
                });
            }
        }

        let mut raw = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; the error buffer is provided by `call`.
        call(|err, len| unsafe { ffi::facedb_models_new(&mut raw, err, len) }).map_err(ModelError::Run)?;
        let raw = NonNull::new(raw).ok_or_else(|| ModelError::Run("the shim returned no models".into()))?;
        // From here on, Drop frees the handle whatever happens.
        let models = Models { raw, cnn };

        for (name, load) in files {
            let path = dir.join(name);
            let load_error = |message: String| ModelError::Load { path: path.display().to_string(), message };
            let c_path = CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| load_error("the path contains a NUL byte".into()))?;
            // SAFETY: the handle is live, `c_path` is NUL-terminated and outlives the call.
            call(|err, len| unsafe { load(models.raw.as_ptr(), c_path.as_ptr(), err, len) }).map_err(load_error)?;
        }
        Ok(models)
    }

    /// Whether the CNN detector was loaded (`load(dir, true)`).
    pub fn has_cnn(&self) -> bool {
        self.cnn
    }

    /// HOG detection, the image upsampled `upsample` times first (dlib's pyramid_up);
    /// boxes in the given image's pixels.
    ///
    /// Scores are the SVM margin, positive (dlib's threshold 0). An empty image has no faces;
    /// an upsampled image past 2^28 pixels, or `upsample` > 8, is an error.
    pub fn detect_hog(&mut self, image: RgbRef<'_>, upsample: u32) -> Result<Vec<FaceBox>, ModelError> {
        self.detect(ffi::facedb_detect_hog, image, upsample)
    }

    /// CNN (MMOD) detection; an error when the CNN model was not loaded.
    ///
    /// Upsampling and coordinates as in [`Models::detect_hog`]; scores are MMOD confidences
    /// (above dlib's threshold 0). The detector's window is 80×80: an (upsampled) image with a
    /// side shorter than that has no faces (and is not handed to dlib, which mishandles tiny
    /// images).
    pub fn detect_cnn(&mut self, image: RgbRef<'_>, upsample: u32) -> Result<Vec<FaceBox>, ModelError> {
        if !self.cnn {
            return Err(ModelError::Run("the CNN face detector was not loaded".into()));
        }
        self.detect(ffi::facedb_detect_cnn, image, upsample)
    }

    fn detect(&mut self, detect: ffi::DetectFn, image: RgbRef<'_>, upsample: u32) -> Result<Vec<FaceBox>, ModelError> {
        check_image(&image)?;
        let mut out: *mut ffi::RawBox = ptr::null_mut();
        let mut n = 0usize;
        // SAFETY: the handle is live and used by this thread only (&mut self); `image.data` holds
        // width*height*3 bytes (checked above); `out` and `n` are valid out-pointers.
        call(|err, len| unsafe {
            detect(
                self.raw.as_ptr(),
                image.data.as_ptr(),
                image.width,
                image.height,
                upsample,
                &mut out,
                &mut n,
                err,
                len,
            )
        })
        .map_err(ModelError::Run)?;
        if out.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: on success the shim returns a malloc'd array of `n` boxes, ours to free.
        let boxes = unsafe { std::slice::from_raw_parts(out, n) }
            .iter()
            .map(|b| FaceBox {
                rect: Rect { left: b.left, top: b.top, right: b.right, bottom: b.bottom },
                score: b.score,
            })
            .collect();
        // SAFETY: `out` came from the shim's malloc and is not used after this.
        unsafe { ffi::facedb_free_boxes(out) };
        Ok(boxes)
    }

    /// The 5 landmarks of the face in `rect`.
    ///
    /// An error for an empty image or an empty (or absurdly large) rectangle.
    pub fn landmarks(&mut self, image: RgbRef<'_>, rect: Rect) -> Result<Landmarks, ModelError> {
        check_image(&image)?;
        let mut xy = [0f64; 10];
        // SAFETY: live handle, one thread (&mut self); image length checked; `xy` has the 10
        // doubles the shim writes.
        call(|err, len| unsafe {
            ffi::facedb_landmarks(
                self.raw.as_ptr(),
                image.data.as_ptr(),
                image.width,
                image.height,
                rect.left,
                rect.top,
                rect.right,
                rect.bottom,
                xy.as_mut_ptr(),
                err,
                len,
            )
        })
        .map_err(ModelError::Run)?;
        Ok(Landmarks(std::array::from_fn(|i| (xy[2 * i], xy[2 * i + 1]))))
    }

    /// The aligned chip, `CHIP_SIZE`² packed RGB.
    ///
    /// An error for an empty image and for landmarks that are not finite, absurdly far out, or
    /// all in one point.
    pub fn chip(&mut self, image: RgbRef<'_>, landmarks: &Landmarks) -> Result<Vec<u8>, ModelError> {
        check_image(&image)?;
        let xy: [f64; 10] =
            std::array::from_fn(|i| if i % 2 == 0 { landmarks.0[i / 2].0 } else { landmarks.0[i / 2].1 });
        let mut chip = vec![0u8; CHIP_SIZE as usize * CHIP_SIZE as usize * 3];
        // SAFETY: image length checked; `xy` has 10 doubles; `chip` has the CHIP_SIZE²·3 bytes
        // the shim writes.
        call(|err, len| unsafe {
            ffi::facedb_chip(image.data.as_ptr(), image.width, image.height, xy.as_ptr(), chip.as_mut_ptr(), err, len)
        })
        .map_err(ModelError::Run)?;
        Ok(chip)
    }

    /// The descriptor of an aligned chip (`CHIP_SIZE`² packed RGB), as dlib gives it (norm ≈ 1.4).
    pub fn descriptor(&mut self, chip: &[u8]) -> Result<[f32; DESCRIPTOR_LEN], ModelError> {
        let expected = CHIP_SIZE as usize * CHIP_SIZE as usize * 3;
        if chip.len() != expected {
            return Err(ModelError::Run(format!(
                "a chip is {CHIP_SIZE}x{CHIP_SIZE} RGB, {expected} bytes; got {}",
                chip.len()
            )));
        }
        let mut out = [0f32; DESCRIPTOR_LEN];
        // SAFETY: live handle, one thread (&mut self); `chip` length checked; `out` has the
        // DESCRIPTOR_LEN floats the shim writes.
        call(|err, len| unsafe {
            ffi::facedb_descriptor(self.raw.as_ptr(), chip.as_ptr(), out.as_mut_ptr(), err, len)
        })
        .map_err(ModelError::Run)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! On the real models (`models/`, or `FACEDB_MODELS_DIR`) and the photos of the PyPI package
    //! face_recognition 1.3.0 (`tests/images/`), both fetched by tools/setup.sh.

    use std::path::PathBuf;
    use std::time::Instant;

    use image::RgbImage;

    use super::*;
    use crate::test_dir::TestDir;

    // `Models` is Send...
    const _: fn() = || {
        fn send<T: Send>() {}
        send::<Models>();
    };
    // ...and not Sync: were it Sync, both impls would apply and the call below be ambiguous.
    const _: fn() = || {
        trait AmbiguousIfSync<A> {
            fn some_item() {}
        }
        impl<T: ?Sized> AmbiguousIfSync<()> for T {}
        impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
        let _ = <Models as AmbiguousIfSync<_>>::some_item;
    };

    fn models_dir() -> PathBuf {
        let dir = std::env::var_os("FACEDB_MODELS_DIR")
            .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), PathBuf::from);
        for name in [LANDMARKS_FILE, ENCODER_FILE, CNN_DETECTOR_FILE] {
            assert!(
                dir.join(name).is_file(),
                "model {name} is missing from {}: run tools/setup.sh (it fetches the models)",
                dir.display()
            );
        }
        dir
    }

    fn load(cnn: bool) -> Models {
        let started = Instant::now();
        let models = Models::load(&models_dir(), cnn).expect("loading the models");
        eprintln!("load (cnn: {cnn}): {:?}", started.elapsed());
        models
    }

    fn photo(name: &str) -> RgbImage {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images").join(name);
        assert!(path.is_file(), "test photo {} is missing: run tools/setup.sh (it fetches them)", path.display());
        image::open(&path).unwrap_or_else(|e| panic!("decoding {}: {e}", path.display())).to_rgb8()
    }

    fn rgb(image: &RgbImage) -> RgbRef<'_> {
        crate::extract::photo::rgb_ref(image)
    }

    /// A plausible face box of `image`: inside it, not tiny, not the whole photo.
    fn assert_plausible(face: &FaceBox, image: &RgbImage) {
        let r = face.rect;
        let (w, h) = (i64::from(image.width()), i64::from(image.height()));
        assert!(r.left >= 0 && r.top >= 0 && r.right < w && r.bottom < h, "{r:?} outside {w}x{h}");
        let (fw, fh) = (r.right - r.left + 1, r.bottom - r.top + 1);
        assert!(fw >= 40 && fh >= 40 && fw < w && fh < h, "implausible size {fw}x{fh} in {w}x{h}");
        assert!(face.score > 0.0, "score {}", face.score);
    }

    fn norm(d: &[f32]) -> f32 {
        d.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    fn distance(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
    }

    /// The descriptor of the best HOG face of a photo (upsample 1, as face_recognition does),
    /// printing each stage's time.
    fn describe(models: &mut Models, name: &str) -> [f32; DESCRIPTOR_LEN] {
        let image = photo(name);
        let t = Instant::now();
        let faces = models.detect_hog(rgb(&image), 1).unwrap();
        let t_detect = t.elapsed();
        let face =
            faces.iter().max_by(|a, b| a.score.total_cmp(&b.score)).unwrap_or_else(|| panic!("no face in {name}"));
        let t = Instant::now();
        let landmarks = models.landmarks(rgb(&image), face.rect).unwrap();
        let t_landmarks = t.elapsed();
        let t = Instant::now();
        let chip = models.chip(rgb(&image), &landmarks).unwrap();
        let t_chip = t.elapsed();
        let t = Instant::now();
        let descriptor = models.descriptor(&chip).unwrap();
        let t_descriptor = t.elapsed();
        eprintln!(
            "{name} {}x{}: {} face(s), best {:?} score {:.3}; hog(up 1) {t_detect:?}, landmarks {t_landmarks:?}, \
             chip {t_chip:?}, descriptor {t_descriptor:?}, norm {:.4}",
            image.width(),
            image.height(),
            faces.len(),
            face.rect,
            face.score,
            norm(&descriptor)
        );
        descriptor
    }

    #[test]
    fn hog_finds_the_one_face_of_obama() {
        let mut models = load(false);
        let image = photo("obama.jpg");
        let t = Instant::now();
        let faces = models.detect_hog(rgb(&image), 0).unwrap();
        eprintln!("hog {}x{} (up 0): {:?}, {faces:?}", image.width(), image.height(), t.elapsed());
        assert_eq!(faces.len(), 1, "{faces:?}");
        assert_plausible(&faces[0], &image);

        // The landmarks fall in (or right around) the box, and the chip is the size promised.
        let r = faces[0].rect;
        let landmarks = models.landmarks(rgb(&image), r).unwrap();
        let margin = (r.right - r.left) as f64 * 0.2;
        for (x, y) in landmarks.0 {
            assert!(
                x >= r.left as f64 - margin
                    && x <= r.right as f64 + margin
                    && y >= r.top as f64 - margin
                    && y <= r.bottom as f64 + margin,
                "landmark ({x}, {y}) far from {r:?}"
            );
        }
        let chip = models.chip(rgb(&image), &landmarks).unwrap();
        assert_eq!(chip.len(), (CHIP_SIZE * CHIP_SIZE * 3) as usize);
    }

    #[test]
    fn cnn_finds_the_one_face_of_obama() {
        let mut models = load(true);
        assert!(models.has_cnn());
        let image = photo("obama.jpg");
        let t = Instant::now();
        let faces = models.detect_cnn(rgb(&image), 0).unwrap();
        eprintln!("cnn {}x{} (up 0): {:?}, {faces:?}", image.width(), image.height(), t.elapsed());
        assert_eq!(faces.len(), 1, "{faces:?}");
        assert_plausible(&faces[0], &image);
        // The same face as HOG's.
        let hog = models.detect_hog(rgb(&image), 0).unwrap();
        assert!(crate::extract::photo::iou(hog[0].rect, faces[0].rect) > 0.3, "hog {hog:?} vs cnn {faces:?}");
    }

    #[test]
    fn upsampled_detections_stay_in_the_input_pixels() {
        let mut models = load(true);
        let image = photo("obama.jpg");
        let t = Instant::now();
        let up1 = models.detect_hog(rgb(&image), 1).unwrap();
        eprintln!("hog (up 1): {:?}, {up1:?}", t.elapsed());
        let up0 = models.detect_hog(rgb(&image), 0).unwrap();
        assert_eq!(up1.len(), 1, "{up1:?}");
        assert_plausible(&up1[0], &image);
        assert!(crate::extract::photo::iou(up0[0].rect, up1[0].rect) > 0.5, "up 0 {up0:?} vs up 1 {up1:?}");

        // CNN likewise, on a half-size copy to keep the test quick.
        let small = image::imageops::resize(
            &image,
            image.width() / 2,
            image.height() / 2,
            image::imageops::FilterType::Triangle,
        );
        let t = Instant::now();
        let up1 = models.detect_cnn(rgb(&small), 1).unwrap();
        eprintln!("cnn {}x{} (up 1): {:?}, {up1:?}", small.width(), small.height(), t.elapsed());
        let up0 = models.detect_cnn(rgb(&small), 0).unwrap();
        assert_eq!(up1.len(), 1, "{up1:?}");
        assert_eq!(up0.len(), 1, "{up0:?}");
        assert_plausible(&up1[0], &small);
        assert!(crate::extract::photo::iou(up0[0].rect, up1[0].rect) > 0.5, "up 0 {up0:?} vs up 1 {up1:?}");

        assert!(matches!(models.detect_hog(rgb(&image), 9), Err(ModelError::Run(_))));
    }

    #[test]
    fn no_face_in_flat_noise_or_empty_images() {
        let mut models = load(true);
        let grey = RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
        // A fixed xorshift: noise without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise = RgbImage::from_fn(320, 240, |_, _| {
            let mut px = [0u8; 3];
            for c in &mut px {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *c = (state >> 56) as u8;
            }
            image::Rgb(px)
        });
        for (what, image) in [("grey", &grey), ("noise", &noise)] {
            for upsample in [0, 1] {
                assert_eq!(models.detect_hog(rgb(image), upsample).unwrap(), vec![], "hog, {what}, up {upsample}");
                assert_eq!(models.detect_cnn(rgb(image), upsample).unwrap(), vec![], "cnn, {what}, up {upsample}");
            }
        }

        // Empty and tiny images: no faces, no crash; landmarks and chips of nothing are errors.
        // Narrow ones too: dlib's CNN input pyramid corrupts the heap under 10 pixels wide.
        for (w, h) in [(0, 0), (0, 7), (7, 0), (1, 1), (3, 2), (20, 20), (3, 500), (9, 300), (500, 3), (79, 400)] {
            let data = vec![90u8; (w * h * 3) as usize];
            let image = RgbRef { data: &data, width: w, height: h };
            for upsample in [0, 2] {
                assert_eq!(models.detect_hog(image, upsample).unwrap(), vec![], "hog {w}x{h}");
                assert_eq!(models.detect_cnn(image, upsample).unwrap(), vec![], "cnn {w}x{h}");
            }
        }
        let empty = RgbRef { data: &[], width: 0, height: 0 };
        let rect = Rect { left: 0, top: 0, right: 10, bottom: 10 };
        assert!(matches!(models.landmarks(empty, rect), Err(ModelError::Run(_))));
        let landmarks = Landmarks([(1.0, 1.0), (5.0, 1.0), (9.0, 1.0), (7.0, 1.0), (5.0, 8.0)]);
        assert!(matches!(models.chip(empty, &landmarks), Err(ModelError::Run(_))));
    }

    #[test]
    fn descriptors_follow_dlibs_same_person_rule() {
        let mut models = load(false);
        let obama = describe(&mut models, "obama.jpg");
        let obama2 = describe(&mut models, "obama2.jpg");
        let obama3 = describe(&mut models, "obama3.jpg");
        let biden = describe(&mut models, "biden.jpg");
        for d in [&obama, &obama2, &obama3, &biden] {
            assert!((1.3..1.6).contains(&norm(d)), "norm {}", norm(d));
        }
        let (d2, d3, db) = (distance(&obama, &obama2), distance(&obama, &obama3), distance(&obama, &biden));
        eprintln!(
            "distances: obama-obama2 {d2:.4}, obama-obama3 {d3:.4}, obama-biden {db:.4}, obama2-obama3 {:.4}, \
             obama2-biden {:.4}, obama3-biden {:.4}",
            distance(&obama2, &obama3),
            distance(&obama2, &biden),
            distance(&obama3, &biden)
        );
        assert!(d2 < 0.6 && d3 < 0.6, "same person: {d2}, {d3}");
        assert!(db > 0.6, "different people: {db}");

        // The same photo gives the same descriptor (no state carried between calls).
        let again = distance(&describe(&mut models, "obama.jpg"), &obama);
        assert!(again < 1e-4, "{again}");
    }

    #[test]
    fn loading_names_the_missing_or_broken_file() {
        let empty = TestDir::new("dlib-empty");
        match Models::load(&empty.0, false) {
            Err(ModelError::Load { path, message }) => {
                assert!(path.ends_with(LANDMARKS_FILE), "{path}");
                assert!(message.contains(&empty.0.display().to_string()), "{message}");
            }
            Err(e) => panic!("expected a Load error, got {e}"),
            Ok(_) => panic!("loaded models from an empty directory"),
        }

        // All but the CNN model: fine without it, an error naming it with it.
        let models = models_dir();
        let partial = TestDir::new("dlib-partial");
        for name in [LANDMARKS_FILE, ENCODER_FILE] {
            std::os::unix::fs::symlink(models.join(name), partial.0.join(name)).unwrap();
        }
        match Models::load(&partial.0, true) {
            Err(ModelError::Load { path, .. }) => assert!(path.ends_with(CNN_DETECTOR_FILE), "{path}"),
            Err(e) => panic!("expected a Load error, got {e}"),
            Ok(_) => panic!("loaded a CNN detector that is not there"),
        }
        let mut without_cnn = Models::load(&partial.0, false).unwrap();
        assert!(!without_cnn.has_cnn());
        let grey = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        assert!(matches!(without_cnn.detect_cnn(rgb(&grey), 0), Err(ModelError::Run(_))));

        // Files that are not models: dlib's deserialize error, attributed to the file.
        let broken = TestDir::new("dlib-broken");
        for name in [LANDMARKS_FILE, ENCODER_FILE, CNN_DETECTOR_FILE] {
            std::fs::write(broken.0.join(name), b"not a dlib model").unwrap();
        }
        match Models::load(&broken.0, true) {
            Err(ModelError::Load { path, message }) => {
                eprintln!("dlib on a broken file: {message}");
                assert!(path.ends_with(LANDMARKS_FILE), "{path}");
                assert!(!message.is_empty());
            }
            Err(e) => panic!("expected a Load error, got {e}"),
            Ok(_) => panic!("loaded models from garbage"),
        }
        // A real model of the wrong kind: the encoder file read as the shape predictor.
        let swapped = TestDir::new("dlib-swapped");
        std::os::unix::fs::symlink(models.join(ENCODER_FILE), swapped.0.join(LANDMARKS_FILE)).unwrap();
        std::os::unix::fs::symlink(models.join(ENCODER_FILE), swapped.0.join(ENCODER_FILE)).unwrap();
        match Models::load(&swapped.0, false) {
            Err(ModelError::Load { path, message }) => {
                eprintln!("dlib on the wrong model: {message}");
                assert!(path.ends_with(LANDMARKS_FILE), "{path}");
            }
            Err(e) => panic!("expected a Load error, got {e}"),
            Ok(_) => panic!("loaded the encoder as a shape predictor"),
        }
    }

    #[test]
    fn wrong_buffers_are_errors_not_ub() {
        let mut models = load(false);
        for len in [0, 1, (CHIP_SIZE * CHIP_SIZE * 3 - 1) as usize, (CHIP_SIZE * CHIP_SIZE * 3 + 3) as usize] {
            let chip = vec![0u8; len];
            assert!(matches!(models.descriptor(&chip), Err(ModelError::Run(_))), "chip of {len} bytes");
        }
        let data = vec![0u8; 100 * 100 * 3 - 1];
        let short = RgbRef { data: &data, width: 100, height: 100 };
        let huge = RgbRef { data: &data, width: u32::MAX, height: u32::MAX };
        let rect = Rect { left: 10, top: 10, right: 60, bottom: 60 };
        let landmarks = Landmarks([(40.0, 30.0), (30.0, 30.0), (10.0, 30.0), (20.0, 30.0), (25.0, 50.0)]);
        for image in [short, huge] {
            assert!(matches!(models.detect_hog(image, 0), Err(ModelError::Run(_))));
            assert!(matches!(models.landmarks(image, rect), Err(ModelError::Run(_))));
            assert!(matches!(models.chip(image, &landmarks), Err(ModelError::Run(_))));
        }

        // Nonsense geometry is refused by the shim rather than handed to dlib.
        let data = vec![0u8; 100 * 100 * 3];
        let image = RgbRef { data: &data, width: 100, height: 100 };
        let inverted = Rect { left: 60, top: 10, right: 10, bottom: 60 };
        let far = Rect { left: i64::MIN, top: 0, right: i64::MAX, bottom: 10 };
        for rect in [inverted, far] {
            assert!(matches!(models.landmarks(image, rect), Err(ModelError::Run(_))), "{rect:?}");
        }
        let point = Landmarks([(5.0, 5.0); 5]);
        let nan = Landmarks([(f64::NAN, 1.0), (5.0, 1.0), (9.0, 1.0), (7.0, 1.0), (5.0, 8.0)]);
        let infinite = Landmarks([(f64::INFINITY, 1.0), (5.0, 1.0), (9.0, 1.0), (7.0, 1.0), (5.0, 8.0)]);
        for landmarks in [point, nan, infinite] {
            assert!(matches!(models.chip(image, &landmarks), Err(ModelError::Run(_))), "{landmarks:?}");
        }
        // A face partly outside the image is fine (the chip is padded black).
        let landmarks = Landmarks([(95.0, 30.0), (80.0, 30.0), (40.0, 30.0), (55.0, 30.0), (68.0, 70.0)]);
        let chip = models.chip(image, &landmarks).unwrap();
        assert_eq!(models.descriptor(&chip).unwrap().len(), DESCRIPTOR_LEN);
    }
}
