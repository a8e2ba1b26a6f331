//! [`Models`] of a build without the `detect` feature: no dlib is linked, so no models ever
//! load. The type has no values; its methods exist so that the extraction pipeline compiles the
//! same in both builds, and none of them can be called.

use std::path::Path;

use super::{FaceBox, Landmarks, ModelError, Rect, RgbRef, DESCRIPTOR_LEN};

/// No models: [`Models::load`] always fails with [`ModelError::NotBuilt`].
pub enum Models {}

impl Models {
    /// Always [`ModelError::NotBuilt`].
    pub fn load(_dir: &Path, _cnn: bool) -> Result<Models, ModelError> {
        Err(ModelError::NotBuilt)
    }

    pub fn has_cnn(&self) -> bool {
        match *self {}
    }

    pub fn detect_hog(&mut self, _image: RgbRef<'_>, _upsample: u32) -> Result<Vec<FaceBox>, ModelError> {
        match *self {}
    }

    pub fn detect_cnn(&mut self, _image: RgbRef<'_>, _upsample: u32) -> Result<Vec<FaceBox>, ModelError> {
        match *self {}
    }

    pub fn landmarks(&mut self, _image: RgbRef<'_>, _rect: Rect) -> Result<Landmarks, ModelError> {
        match *self {}
    }

    pub fn chip(&mut self, _image: RgbRef<'_>, _landmarks: &Landmarks) -> Result<Vec<u8>, ModelError> {
        match *self {}
    }

    pub fn descriptor(&mut self, _chip: &[u8]) -> Result<[f32; DESCRIPTOR_LEN], ModelError> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_says_the_build_has_no_detection() {
        match Models::load(Path::new("models"), true) {
            Err(e) => assert!(e.to_string().starts_with("this facedb was built without the `detect` feature"), "{e}"),
            Ok(models) => match models {},
        }
    }
}
