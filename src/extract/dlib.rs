//! dlib's face models through a thin C++ shim of our own over Debian's `libdlib-dev`.
//!
//! The shim (`shim.cpp`, C API in `shim.h`, compiled by `build.rs`) holds dlib's objects behind
//! an opaque handle: the HOG frontal face detector, the 5-point shape predictor, the ResNet face
//! encoder and optionally the MMOD CNN face detector. Every shim call catches C++ exceptions and
//! returns a code and a message; the binding checks buffer lengths before calling, so a wrong
//! buffer is a [`ModelError::Run`], never undefined behaviour.
//!
//! The pipeline of one face: [`Models::detect_hog`] or [`Models::detect_cnn`] → [`Models::landmarks`]
//! → [`Models::chip`] (aligned, [`CHIP_SIZE`]² RGB) → [`Models::descriptor`] (128 floats, dlib's
//! raw output, norm ≈ 1.4). Two descriptors of the same person are usually closer than 0.6
//! (euclidean), dlib's rule.
//!
//! dlib's networks keep per-call buffers, so a [`Models`] is used by one thread at a time: it is
//! `Send`, not `Sync`; run one per worker. dlib's matrix products go through BLAS: the shim asks
//! OpenBLAS for one thread (the workers are the parallelism; more threads would fight over the
//! cores).
//!
//! The shim is built only with the cargo feature `detect` (on by default), so that the rest of
//! the crate builds and tests on a machine without libdlib-dev. Without it, [`Models`] is a type
//! with no values whose [`Models::load`] always fails with [`ModelError::NotBuilt`]: the
//! extractor then does not start, and the server answers detection requests with that reason,
//! as it does when the model files are missing. This file holds what both builds share;
//! `dlib/native.rs` is the binding over the shim, `dlib/absent.rs` the stand-in.

#[cfg(not(feature = "detect"))]
mod absent;
#[cfg(feature = "detect")]
mod native;

#[cfg(not(feature = "detect"))]
pub use self::absent::Models;
#[cfg(feature = "detect")]
pub use self::native::Models;

/// A packed 8-bit RGB image, row-major, `width * height * 3` bytes, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RgbRef<'a> {
    /// The pixels, `width * height * 3` bytes (checked by every call that reads them).
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A rectangle in pixels, dlib's convention: `right` and `bottom` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Leftmost column.
    pub left: i64,
    /// Top row.
    pub top: i64,
    /// Rightmost column (inclusive).
    pub right: i64,
    /// Bottom row (inclusive).
    pub bottom: i64,
}

/// A detected face: its box and the detector's score (HOG: SVM margin; CNN: MMOD confidence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    /// The face's box in the pixels of the image given to the detector (it may stick out of it).
    pub rect: Rect,
    /// The detector's score; boxes are only returned above the detector's own threshold.
    pub score: f64,
}

/// The 5 landmarks of `shape_predictor_5_face_landmarks.dat`, as (x, y) pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Landmarks(pub [(f64, f64); 5]);

/// Side of the aligned face chip, in pixels (`get_face_chip_details(shape, 150, 0.25)`).
pub const CHIP_SIZE: u32 = 150;
/// Components of a descriptor of `dlib_face_recognition_resnet_model_v1.dat`.
pub const DESCRIPTOR_LEN: usize = 128;

/// File name of the face encoder (ResNet, 128-d descriptors). The three model file names are
/// those of the PyPI package `face_recognition_models` 0.3.0.
pub const ENCODER_FILE: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// The MMOD CNN face detector (optional).
pub const CNN_DETECTOR_FILE: &str = "mmod_human_face_detector.dat";
/// The 5-point shape predictor.
pub const LANDMARKS_FILE: &str = "shape_predictor_5_face_landmarks.dat";

/// Errors of loading or running a model; the message comes from dlib where it failed there.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file is missing or dlib could not deserialize it; `path` is the file's full path.
    #[error("model file {path}: {message}")]
    Load { path: String, message: String },
    /// A call was given bad input, or dlib failed running a model.
    #[error("dlib failed: {0}")]
    Run(String),
    /// This build has no dlib: the `detect` feature was off.
    #[error(
        "this facedb was built without the `detect` feature, so it has no face detection \
         (build it with default features, which need libdlib-dev: tools/setup.sh installs it)"
    )]
    NotBuilt,
}
