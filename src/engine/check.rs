//! Checking a write before it is logged.
//!
//! A write is checked against the gallery *as it will be* once every write already checked
//! (and logged, or about to be) is applied: the stored faces overlaid with [`Pending`]. So a
//! refusal never reaches the log, and every logged write applies. [`Engine::apply`] runs the
//! same checks against the stored faces alone ([`Pending::none`]): at that moment every earlier
//! write is applied, so they pass for every write checked here, and at recovery they tell a
//! log that does not belong to the state it is replayed onto.
//!
//! [`Engine::apply`]: super::Engine::apply

use std::sync::LazyLock;

use foldhash::{HashMap, HashSet, HashSetExt};

use super::error::{Error, Result};
use crate::schema::{FieldType, MetaValue};
use crate::store::{Face, FaceUpdate, Gallery};

/// Faces that checked writes will add or delete once applied.
///
/// Each write marks the ids it adds (`exists`) or deletes; applying it settles its marks. An
/// id's mark says what the latest pending write does to it, and counts the pending writes that
/// marked it: it is cleared when the last of them is applied. Writes are applied in the order
/// they were checked, so every write settles exactly the marks it made. Ids are hashed with
/// foldhash, as in the gallery's id map: a few ns per id.
#[derive(Debug, Default)]
pub struct Pending {
    ids: HashMap<u64, (bool, u32)>,
}

impl Pending {
    /// No pending write: the overlay of [`Engine::apply`](super::Engine::apply)'s checks.
    pub fn none() -> &'static Pending {
        static NONE: LazyLock<Pending> = LazyLock::new(Pending::default);
        &NONE
    }

    /// Whether `id` will exist once the pending writes are applied, if one of them touches it.
    pub fn exists(&self, id: u64) -> Option<bool> {
        self.ids.get(&id).map(|&(exists, _)| exists)
    }

    /// Marks `ids` as added (`exists`) or deleted by the next write.
    pub fn mark(&mut self, ids: impl Iterator<Item = u64>, exists: bool) {
        for id in ids {
            let mark = self.ids.entry(id).or_insert((exists, 0));
            *mark = (exists, mark.1 + 1);
        }
    }

    /// Settles the marks of a write now applied (or abandoned); returns how many of its ids
    /// were marked: all of them for a write checked here, none for one replayed at recovery.
    pub fn settle(&mut self, ids: impl Iterator<Item = u64>) -> usize {
        let mut settled = 0;
        for id in ids {
            if let Some(mark) = self.ids.get_mut(&id) {
                settled += 1;
                mark.1 -= 1;
                if mark.1 == 0 {
                    self.ids.remove(&id);
                }
            }
        }
        settled
    }
}

/// Whether face `id` exists once the `pending` writes are applied.
fn will_exist(gallery: &Gallery, id: u64, pending: &Pending) -> bool {
    pending.exists(id).unwrap_or_else(|| gallery.contains(id))
}

/// Whether `faces` can be added after the `pending` writes: well-formed, no id stored or
/// twice in the batch.
pub fn check_add(gallery: &Gallery, faces: &[Face], pending: &Pending) -> Result<()> {
    let fields = gallery.schema().fields().len();
    let mut seen = HashSet::with_capacity(faces.len());
    for face in faces {
        check_vector(gallery, face.id, &face.vector)?;
        if face.meta.len() != fields {
            let message = format!("face {}: {} meta values for {fields} schema fields", face.id, face.meta.len());
            return Err(Error::invalid("meta", message, face.id));
        }
        for (position, value) in face.meta.iter().enumerate() {
            check_meta(gallery, face.id, position, value)?;
        }
        if will_exist(gallery, face.id, pending) {
            return Err(Error::FaceExists(face.id));
        }
        if !seen.insert(face.id) {
            return Err(Error::FaceTwice(face.id));
        }
    }
    Ok(())
}

/// Whether every face exists after the `pending` writes.
pub fn check_delete(gallery: &Gallery, ids: &[u64], pending: &Pending) -> Result<()> {
    match ids.iter().find(|&&id| !will_exist(gallery, id, pending)) {
        Some(&missing) => Err(Error::FaceNotFound(missing)),
        None => Ok(()),
    }
}

/// Whether every face exists after the `pending` writes, none is named twice, and the new
/// values fit.
pub fn check_update(gallery: &Gallery, updates: &[FaceUpdate], pending: &Pending) -> Result<()> {
    let mut seen = HashSet::with_capacity(updates.len());
    for update in updates {
        if let Some(vector) = &update.vector {
            check_vector(gallery, update.id, vector)?;
        }
        for (position, value) in &update.meta {
            check_meta(gallery, update.id, *position, value)?;
        }
        if !will_exist(gallery, update.id, pending) {
            return Err(Error::FaceNotFound(update.id));
        }
        if !seen.insert(update.id) {
            let message = format!("face {} appears twice in the request", update.id);
            return Err(Error::invalid("id", message, update.id));
        }
    }
    Ok(())
}

/// The wire layer builds faces that pass these checks; they guard the library API and the log.
fn check_vector(gallery: &Gallery, id: u64, vector: &[f32]) -> Result<()> {
    let dim = gallery.dim();
    // Without an early exit the test of every component vectorises: it runs twice per face
    // written (check and apply), on the commit thread the second time.
    let finite = vector.iter().fold(true, |finite, x| finite & x.is_finite());
    if vector.len() != dim || !finite {
        let message = format!("face {id}: a facen is {dim} finite float32 values, got {}", vector.len());
        return Err(Error::invalid("facen", message, id));
    }
    Ok(())
}

fn check_meta(gallery: &Gallery, id: u64, position: usize, value: &MetaValue) -> Result<()> {
    let field = gallery.schema().fields().get(position);
    let fits = field.is_some_and(|field| {
        matches!(
            (field.field_type, value),
            (FieldType::String, MetaValue::String(_))
                | (FieldType::Unsigned, MetaValue::Unsigned(_))
                | (FieldType::StringSet, MetaValue::StringSet(_))
                | (FieldType::UnsignedSet, MetaValue::UnsignedSet(_))
        )
    });
    if fits {
        return Ok(());
    }
    let param = field.map_or_else(|| format!("meta[{position}]"), |f| format!("meta.{}", f.name));
    Err(Error::invalid(param, format!("face {id}: {value:?} does not fit the schema field"), id))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::schema::Schema;

    fn gallery() -> Gallery {
        let schema = Schema::from_yaml("- {id: 1, name: cam, field_type: string, default: ''}\n", "test").unwrap();
        Gallery::new(Arc::new(schema), 2)
    }

    fn face(id: u64) -> Face {
        Face { id, vector: vec![id as f32, 1.0], meta: vec![MetaValue::String(format!("cam{}", id % 3))] }
    }

    #[test]
    fn bad_batches_are_refused_naming_what_is_wrong() {
        let mut gallery = gallery();
        gallery.insert(&[face(1), face(2)]);
        let none = Pending::none();
        assert_eq!(check_add(&gallery, &[face(3), face(1)], none), Err(Error::FaceExists(1)));
        assert_eq!(check_add(&gallery, &[face(4), face(4)], none), Err(Error::FaceTwice(4)));
        assert_eq!(check_delete(&gallery, &[1, 7], none), Err(Error::FaceNotFound(7)));
        let param = |result: Result<()>| match result {
            Err(Error::Invalid { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        let short = Face { id: 5, vector: vec![1.0], meta: face(5).meta };
        assert_eq!(param(check_add(&gallery, &[short], none)), "facen");
        let mistyped = Face { id: 6, vector: vec![1.0, 2.0], meta: vec![MetaValue::Unsigned(3)] };
        assert_eq!(param(check_add(&gallery, &[mistyped], none)), "meta.cam");
        let update = FaceUpdate { id: 1, vector: None, meta: vec![(0, MetaValue::Unsigned(1))] };
        assert_eq!(param(check_update(&gallery, &[update], none)), "meta.cam");
        let update = FaceUpdate { id: 9, vector: None, meta: vec![] };
        assert_eq!(check_update(&gallery, &[update], none), Err(Error::FaceNotFound(9)));
        let twice = FaceUpdate { id: 1, vector: None, meta: vec![] };
        assert_eq!(param(check_update(&gallery, &[twice.clone(), twice], none)), "id");
    }

    #[test]
    fn pending_marks_say_what_the_latest_write_does_until_the_last_is_settled() {
        let mut gallery = gallery();
        gallery.insert(&[face(7)]);
        let mut pending = Pending::default();
        pending.mark([7].into_iter(), false);
        assert_eq!(check_delete(&gallery, &[7], &pending), Err(Error::FaceNotFound(7)));
        assert!(check_add(&gallery, &[face(7)], &pending).is_ok());
        pending.mark([7].into_iter(), true);
        assert_eq!(check_add(&gallery, &[face(7)], &pending), Err(Error::FaceExists(7)));
        // The delete is applied: the add still pending keeps the mark.
        assert_eq!(pending.settle([7].into_iter()), 1);
        assert_eq!(pending.exists(7), Some(true));
        assert_eq!(pending.settle([7].into_iter()), 1);
        assert_eq!(pending.exists(7), None);
        // A replayed write settles nothing.
        assert_eq!(pending.settle([7, 8].into_iter()), 0);
    }
}
