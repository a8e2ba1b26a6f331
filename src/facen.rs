//! Feature vectors ("facens") on the wire: base64 of little-endian float32 components, or
//! (from clients, for convenience) a JSON array of numbers. Answers always give base64.
//!
//! A facen is stored as the float32 values it decodes to and encoded again on the way out,
//! so that a client gets back exactly the bytes it sent. Scores are cosine similarities:
//! the engine keeps each vector's inverse norm beside it and normalises the query once.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};

/// Standard alphabet; padding is written on output and optional on input.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a facen of `dim` float32 components. The error says what is wrong with it;
/// the caller says whose facen it was.
pub fn decode(text: &str, dim: usize) -> Result<Vec<f32>, String> {
    let bytes = base64_bytes(text)?;
    if bytes.len() != dim * 4 {
        return Err(format!(
            "facen has {} bytes, expected {} ({dim} float32 values, little-endian, base64-encoded)",
            bytes.len(),
            dim * 4
        ));
    }
    floats(&bytes)
}

/// Reads a facen given as JSON: a base64 string, or an array of `dim` numbers (each read as
/// the nearest float32, which must be finite).
pub fn from_json(value: &serde_json::Value, dim: usize) -> Result<Vec<f32>, String> {
    match value {
        serde_json::Value::String(text) => decode(text, dim),
        serde_json::Value::Array(items) => {
            if items.len() != dim {
                return Err(format!("facen has {} numbers, expected {dim}", items.len()));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item.as_f64().map(|x| x as f32) {
                    Some(x) if x.is_finite() => Ok(x),
                    _ => Err(format!("facen component {i} is {item}, expected a finite float32 number")),
                })
                .collect()
        }
        _ => Err(format!("facen must be a base64 string or an array of {dim} numbers")),
    }
}

/// Decodes a facen of any length (a whole number of float32 values).
pub fn decode_any(text: &str) -> Result<Vec<f32>, String> {
    let bytes = base64_bytes(text)?;
    if bytes.len() % 4 != 0 {
        return Err(format!("facen has {} bytes, not a whole number of float32 values", bytes.len()));
    }
    floats(&bytes)
}

fn base64_bytes(text: &str) -> Result<Vec<u8>, String> {
    BASE64.decode(text.trim()).map_err(|e| format!("facen is not valid base64 ({e})"))
}

fn floats(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let vector: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        return Err(format!("facen component {i} is {}, expected a finite number", vector[i]));
    }
    Ok(vector)
}

pub fn encode(vector: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    BASE64.encode(bytes)
}

/// 1/|v|, or 0 for the zero vector (which then scores 0 against everything).
pub fn inverse_norm(vector: &[f32]) -> f64 {
    let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        1.0 / norm
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_facen_is_base64_or_an_array_of_numbers() {
        let v = [0.5f32, -1.25, 3.0];
        assert_eq!(from_json(&serde_json::json!(encode(&v)), 3).unwrap(), v);
        assert_eq!(from_json(&serde_json::json!([0.5, -1.25, 3]), 3).unwrap(), v);
        assert_eq!(from_json(&serde_json::json!([0.5, -1.25]), 3).unwrap_err(), "facen has 2 numbers, expected 3");
        assert!(from_json(&serde_json::json!([0.5, "x", 3]), 3).unwrap_err().contains("component 1"));
        assert!(from_json(&serde_json::json!([0.5, 1e300, 3]), 3).unwrap_err().contains("component 1"));
        assert!(from_json(&serde_json::json!(7), 3).unwrap_err().contains("base64 string or an array of 3"));
    }

    #[test]
    fn round_trip_is_byte_identical() {
        let v = [1.5f32, -0.0, f32::MIN_POSITIVE / 4.0, 3.4e38];
        let text = encode(&v);
        let back = decode(&text, 4).unwrap();
        assert_eq!(encode(&back), text);
        assert_eq!(back[1].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn rejects_wrong_length_bad_base64_and_non_finite() {
        assert!(decode(&encode(&[1.0, 2.0]), 4).unwrap_err().contains("has 8 bytes, expected 16"));
        assert!(decode("@@@", 4).unwrap_err().contains("not valid base64"));
        assert!(decode(&encode(&[1.0, f32::NAN, 0.0, 0.0]), 4).unwrap_err().contains("component 1 is NaN"));
        assert!(decode(&encode(&[f32::INFINITY, 0.0, 0.0, 0.0]), 4).unwrap_err().contains("inf"));
    }
}
