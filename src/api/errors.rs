//! The one place where the engine's and the database's errors become the API's: an HTTP
//! status, a kind, and the parameter and value at fault.

use crate::durable;
use crate::engine;
use crate::error::{Error, ErrorKind};

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Error {
        match e {
            engine::Error::GalleryNotFound(name) => Error::gallery_not_found(&name),
            engine::Error::GalleryExists(name) => {
                Error::conflict("gallery already exists").with_param("name").with_value(name)
            }
            engine::Error::FaceNotFound(id) => Error::face_not_found(id),
            engine::Error::FaceExists(id) => {
                Error::conflict(format!("face {id} already exists")).with_param("id").with_value(id)
            }
            engine::Error::FaceTwice(id) => {
                Error::conflict(format!("face {id} appears twice in the request")).with_param("id").with_value(id)
            }
            engine::Error::Invalid { param, message, value } => Error::bad_param(param, message).with_value(value),
            engine::Error::MemoryLimit { message, limit } => {
                Error::new(507, ErrorKind::InsufficientStorage, message).with_param("memory_limit").with_value(limit)
            }
            engine::Error::Unfit(message) => Error::internal(message),
        }
    }
}

impl From<durable::Error> for Error {
    fn from(e: durable::Error) -> Error {
        match e {
            durable::Error::Refused(refused) => refused.into(),
            other => Error::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_status_kind_param_and_value() {
        let cases: Vec<(engine::Error, u16, ErrorKind, &str, serde_json::Value)> = vec![
            (engine::Error::GalleryNotFound("g".into()), 404, ErrorKind::GalleryNotFound, "name", "g".into()),
            (engine::Error::GalleryExists("g".into()), 409, ErrorKind::Conflict, "name", "g".into()),
            (engine::Error::FaceNotFound(7), 404, ErrorKind::NotFound, "id", 7.into()),
            (engine::Error::FaceExists(7), 409, ErrorKind::Conflict, "id", 7.into()),
            (engine::Error::FaceTwice(7), 409, ErrorKind::Conflict, "id", 7.into()),
            (engine::Error::invalid("meta.cam", "no", 7), 400, ErrorKind::BadParam, "meta.cam", 7.into()),
            (
                engine::Error::MemoryLimit { message: "full".into(), limit: 10 },
                507,
                ErrorKind::InsufficientStorage,
                "memory_limit",
                10.into(),
            ),
        ];
        for (refused, code, kind, param, value) in cases {
            let message = refused.to_string();
            let error = Error::from(durable::Error::Refused(refused));
            assert_eq!(error, Error::new(code, kind, message).with_param(param).with_value(value));
        }
        let failed = Error::from(durable::Error::Stopped("the log failed".into()));
        assert_eq!((failed.code, failed.kind), (500, ErrorKind::UnknownError));
    }
}
