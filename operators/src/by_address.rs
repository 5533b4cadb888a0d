//! Values worked out once per shared object (an entity's labels, a rule), found by the
//! object's address instead of by comparing its contents.
//!
//! The object is held while its entry lives, so its address is not reused for another. An
//! entry whose object nobody else holds any more (an entity given new labels, an edited rule)
//! can never be asked for again: such entries are swept whenever the map has doubled since the
//! last sweep, so it stays within twice what is live however often objects are replaced.

use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Per (object's address, `E`): the object, held, and its value.
pub(crate) struct ByAddress<O, E, V> {
    entries: FxHashMap<(usize, E), (Arc<O>, V)>,
    /// Entries left by the last sweep.
    after_sweep: usize,
}

impl<O, E, V> Default for ByAddress<O, E, V> {
    fn default() -> Self {
        ByAddress {
            entries: FxHashMap::default(),
            after_sweep: 0,
        }
    }
}

/// Whether a collection of `len` objects, of which `after_last_sweep` were left by its last
/// sweep, is due for one: when it has doubled since (and is not small).
pub(crate) fn sweep_due(len: usize, after_last_sweep: usize) -> bool {
    // Below this, no sweep is worth it.
    const SMALL: usize = 64;
    len >= (2 * after_last_sweep).max(SMALL)
}

impl<O, E: Hash + Eq, V> ByAddress<O, E, V> {
    /// The value of (`object`, `extra`), made from them the first time.
    pub(crate) fn get_or_make(
        &mut self,
        object: &Arc<O>,
        extra: E,
        make: impl FnOnce(&O, &E) -> V,
    ) -> &V {
        if sweep_due(self.entries.len(), self.after_sweep) {
            // Only this map holds them: nobody can ask for them again.
            self.entries
                .retain(|_, (held, _)| Arc::strong_count(held) > 1);
            self.after_sweep = self.entries.len();
        }
        let key = (Arc::as_ptr(object) as usize, extra);
        let (_, value) = self
            .entries
            .entry(key)
            .or_insert_with_key(|(_, extra)| (Arc::clone(object), make(object, extra)));
        value
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_per_object_and_forgotten_when_only_the_map_holds_it() {
        let mut made = 0;
        let mut values: ByAddress<String, u8, usize> = ByAddress::default();
        let kept = Arc::new("kept".to_string());
        for _ in 0..3 {
            let value = values.get_or_make(&kept, 1, |object, extra| {
                made += 1;
                object.len() + usize::from(*extra)
            });
            assert_eq!(*value, 5);
        }
        assert_eq!(made, 1);
        // Equal contents at another address are another object.
        values.get_or_make(&Arc::new("kept".to_string()), 1, |_, _| 0);
        assert_eq!(values.len(), 2);
        // Replaced objects (only the map holds them) go at the next sweep; held ones stay.
        for i in 0..200 {
            values.get_or_make(&Arc::new(format!("replaced {i}")), 1, |_, _| 0);
        }
        assert!(values.len() < 130, "{}", values.len());
        assert_eq!(*values.get_or_make(&kept, 1, |_, _| 0), 5);
    }
}
