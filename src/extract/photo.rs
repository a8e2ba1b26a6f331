//! Photos in: format sniffing, size limits read from the header before any pixel is decoded,
//! EXIF orientation, and the geometry the detectors need (a scaled copy, the four rotations,
//! boxes mapped back to the photo's pixels).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use super::dlib::{FaceBox, Rect, RgbRef};
use crate::error::{Error, Result};

/// Limits checked from the image's header, before it is decoded (decompression bombs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest width or height accepted, in pixels.
    pub max_side: u32,
    /// Largest width × height accepted.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_side: 6000, max_pixels: 40_000_000 }
    }
}

/// A decoded photo, upright (its EXIF orientation applied).
pub struct Photo {
    pub image: RgbImage,
    /// The EXIF orientation the file carried (1: none or upright; 2-8 as EXIF defines them).
    pub orientation: u8,
}

impl Photo {
    pub fn as_ref(&self) -> RgbRef<'_> {
        rgb_ref(&self.image)
    }
}

/// Borrows an image as the packed RGB the models read.
pub fn rgb_ref(image: &RgbImage) -> RgbRef<'_> {
    RgbRef { data: image.as_raw(), width: image.width(), height: image.height() }
}

fn bad_image(message: impl Into<String>) -> Error {
    Error::bad_param("image", message)
}

/// Decodes a JPEG, PNG or WEBP photo. Anything else, a corrupt file, or a size past `limits`
/// (known from the header, before decoding) is a 400 naming the problem.
pub fn decode(bytes: &[u8], limits: ImageLimits) -> Result<Photo> {
    if bytes.is_empty() {
        return Err(bad_image("the image is empty"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad_image(format!("cannot read the image: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(bad_image(format!(
                "unsupported image format {}: send JPEG, PNG or WEBP",
                other.extensions_str().first().unwrap_or(&"?")
            )))
        }
        None => return Err(bad_image("the body is not an image this server reads: send JPEG, PNG or WEBP")),
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| bad_image(format!("the image is corrupt or truncated: its header cannot be read ({e})")))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| bad_image(format!("the image is corrupt or truncated: {e}")))?;
    image.apply_orientation(orientation);
    Ok(Photo { image: image.into_rgb8(), orientation: orientation.to_exif() })
}

fn check_size(width: u32, height: u32, limits: ImageLimits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(bad_image(format!("the image is {width}x{height}: it has no pixels")));
    }
    if width.max(height) > limits.max_side {
        return Err(bad_image(format!(
            "the image is {width}x{height}; its longer side may be at most {} px (max_image_side)",
            limits.max_side
        ))
        .with_value(format!("{width}x{height}")));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(bad_image(format!(
            "the image is {width}x{height} ({} pixels); at most {} pixels are accepted (max_image_pixels)",
            u64::from(width) * u64::from(height),
            limits.max_pixels
        ))
        .with_value(format!("{width}x{height}")));
    }
    Ok(())
}

/// A quarter turn of the photo, clockwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    None,
    Cw90,
    Cw180,
    Cw270,
}

impl Turn {
    pub const ALL: [Turn; 4] = [Turn::None, Turn::Cw90, Turn::Cw180, Turn::Cw270];

    /// The photo turned; `None` for no turn (no copy).
    pub fn apply(self, image: &RgbImage) -> Option<RgbImage> {
        match self {
            Turn::None => None,
            Turn::Cw90 => Some(image::imageops::rotate90(image)),
            Turn::Cw180 => Some(image::imageops::rotate180(image)),
            Turn::Cw270 => Some(image::imageops::rotate270(image)),
        }
    }

    /// A rectangle found in the turned image, in the pixels of the unturned one
    /// (`width` × `height`).
    pub fn unturn(self, r: Rect, width: u32, height: u32) -> Rect {
        let (w, h) = (i64::from(width), i64::from(height));
        let (left, top, right, bottom) = match self {
            Turn::None => (r.left, r.top, r.right, r.bottom),
            // Turned 90° clockwise, (x', y') came from (y', h - 1 - x').
            Turn::Cw90 => (r.top, h - 1 - r.right, r.bottom, h - 1 - r.left),
            Turn::Cw180 => (w - 1 - r.right, h - 1 - r.bottom, w - 1 - r.left, h - 1 - r.top),
            // Turned 270° clockwise, (x', y') came from (w - 1 - y', x').
            Turn::Cw270 => (w - 1 - r.bottom, r.left, w - 1 - r.top, r.right),
        };
        Rect { left, top, right, bottom }
    }
}

/// A copy whose longer side is at most `max_side` (the same image when it already fits), and
/// the factor from its pixels to the original's.
pub fn fit(image: &RgbImage, max_side: u32) -> (Option<RgbImage>, f64) {
    let longer = image.width().max(image.height());
    if longer <= max_side || max_side == 0 {
        return (None, 1.0);
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let width = ((f64::from(image.width()) * scale).round() as u32).max(1);
    let height = ((f64::from(image.height()) * scale).round() as u32).max(1);
    let small = image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle);
    (Some(small), 1.0 / scale)
}

/// `r` multiplied by `factor` (from a scaled copy's pixels to the original's).
pub fn scale_rect(r: Rect, factor: f64) -> Rect {
    if factor == 1.0 {
        return r;
    }
    let scale = |v: i64| (v as f64 * factor).round() as i64;
    Rect { left: scale(r.left), top: scale(r.top), right: scale(r.right), bottom: scale(r.bottom) }
}

/// Intersection over union of two boxes (inclusive corners, as dlib's).
pub fn iou(a: Rect, b: Rect) -> f64 {
    let area = |r: Rect| ((r.right - r.left + 1).max(0) * (r.bottom - r.top + 1).max(0)) as f64;
    let inter = Rect {
        left: a.left.max(b.left),
        top: a.top.max(b.top),
        right: a.right.min(b.right),
        bottom: a.bottom.min(b.bottom),
    };
    let overlap = if inter.right < inter.left || inter.bottom < inter.top { 0.0 } else { area(inter) };
    let union = area(a) + area(b) - overlap;
    if union <= 0.0 {
        0.0
    } else {
        overlap / union
    }
}

/// Keeps, of every group of boxes overlapping with IoU > `threshold`, the best scored one.
/// Returns the indexes kept, best first.
pub fn merge_overlaps(boxes: &[FaceBox], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.iter().all(|&k| iou(boxes[k].rect, boxes[i].rect) <= threshold) {
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        bytes
    }

    #[test]
    fn reads_png_and_jpeg_and_refuses_the_rest() {
        let image = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 7]));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let photo = decode(&encode(&image, format), ImageLimits::default()).unwrap();
            assert_eq!((photo.image.width(), photo.image.height(), photo.orientation), (40, 30, 1));
        }
        let err = decode(b"GIF89a....", ImageLimits::default()).err().unwrap();
        assert_eq!((err.code, err.param.as_deref()), (400, Some("image")));
        let err = decode(b"hello, not an image", ImageLimits::default()).err().unwrap();
        assert!(err.message.contains("JPEG, PNG or WEBP"), "{}", err.message);
        let mut truncated = encode(&image, ImageFormat::Png);
        truncated.truncate(truncated.len() / 2);
        let err = decode(&truncated, ImageLimits::default()).err().unwrap();
        assert!(err.message.contains("corrupt"), "{}", err.message);
        assert!(decode(b"", ImageLimits::default()).err().unwrap().message.contains("empty"));
    }

    #[test]
    fn sizes_past_the_limits_are_refused_from_the_header() {
        let image = RgbImage::new(300, 200);
        let png = encode(&image, ImageFormat::Png);
        let err = decode(&png, ImageLimits { max_side: 299, max_pixels: u64::MAX }).err().unwrap();
        assert!(err.message.contains("max_image_side"), "{}", err.message);
        let err = decode(&png, ImageLimits { max_side: 6000, max_pixels: 59_999 }).err().unwrap();
        assert!(err.message.contains("max_image_pixels"), "{}", err.message);
        assert!(decode(&png, ImageLimits { max_side: 300, max_pixels: 60_000 }).is_ok());
    }

    #[test]
    fn unturning_maps_every_corner_back() {
        let (w, h) = (7u32, 5u32);
        let image = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let r = Rect { left: 1, top: 2, right: 3, bottom: 4 };
        for turn in Turn::ALL {
            let turned = turn.apply(&image).unwrap_or_else(|| image.clone());
            // Find where the original's corner pixels went, as a rect in the turned image.
            let find = |x: u32, y: u32| {
                let (px, py, _) = turned.enumerate_pixels().find(|(_, _, p)| p.0 == [x as u8, y as u8, 0]).unwrap();
                (px as i64, py as i64)
            };
            let (a, b) = (find(1, 2), find(3, 4));
            let turned_rect = Rect { left: a.0.min(b.0), top: a.1.min(b.1), right: a.0.max(b.0), bottom: a.1.max(b.1) };
            assert_eq!(turn.unturn(turned_rect, w, h), r, "{turn:?}");
        }
    }

    #[test]
    fn fit_scales_the_longer_side_and_boxes_back() {
        let image = RgbImage::new(4000, 1000);
        let (small, factor) = fit(&image, 2000);
        let small = small.unwrap();
        assert_eq!((small.width(), small.height()), (2000, 500));
        assert_eq!(factor, 2.0);
        let r = scale_rect(Rect { left: 10, top: 20, right: 30, bottom: 40 }, factor);
        assert_eq!(r, Rect { left: 20, top: 40, right: 60, bottom: 80 });
        assert!(fit(&RgbImage::new(100, 100), 2000).0.is_none());
    }

    #[test]
    fn overlapping_boxes_merge_to_the_best() {
        let b = |left, score| FaceBox { rect: Rect { left, top: 0, right: left + 99, bottom: 99 }, score };
        let boxes = [b(0, 0.5), b(10, 0.9), b(500, 0.1)];
        assert_eq!(merge_overlaps(&boxes, 0.5), vec![1, 2]);
        assert!((iou(boxes[0].rect, boxes[0].rect) - 1.0).abs() < 1e-12);
        assert_eq!(iou(boxes[0].rect, boxes[2].rect), 0.0);
    }
}
