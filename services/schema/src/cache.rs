//! Compiled schemas shared across the hub's tasks, compiled once per subject, version and mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::compiled::{CompiledSchema, compile};
use crate::error::SchemaError;
use crate::formats::FormatMode;
use crate::references::SchemaSource;

type Key = (String, u32, FormatMode);

/// A registered version never changes, so its compiled form is kept for the life of the cache.
/// Failed compilations are not kept: the next request tries again.
#[derive(Debug, Default)]
pub struct ValidatorCache {
    compiled: RwLock<HashMap<Key, Arc<CompiledSchema>>>,
    compilations: AtomicU64,
}

impl ValidatorCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled schema of `subject` at `version` in `mode`, compiling it from `source` (which
    /// also resolves its references) on first use.
    pub fn get(
        &self,
        subject: &str,
        version: u32,
        mode: FormatMode,
        source: &dyn SchemaSource,
    ) -> Result<Arc<CompiledSchema>, SchemaError> {
        let key = (subject.to_string(), version, mode);
        if let Some(found) = self.compiled.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Arc::clone(found));
        }
        // Compile under the write lock so that concurrent first requests compile once; it happens
        // once per version and mode.
        let mut compiled = self.compiled.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = compiled.get(&key) {
            return Ok(Arc::clone(found));
        }
        let schema = source.schema(subject, version).ok_or_else(|| SchemaError::NotFound {
            subject: subject.to_string(),
            version,
        })?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let schema = Arc::new(compile(&schema, source, mode)?);
        compiled.insert(key, Arc::clone(&schema));
        Ok(schema)
    }

    /// The compiled schema if it is already kept, without compiling: lets a caller skip loading
    /// the schema's sources on the hot path.
    pub fn cached(&self, subject: &str, version: u32, mode: FormatMode) -> Option<Arc<CompiledSchema>> {
        let key = (subject.to_string(), version, mode);
        self.compiled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    /// How many times a schema has been compiled (failed attempts included).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// How many compiled schemas are kept.
    pub fn len(&self) -> usize {
        self.compiled.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_once_per_subject_version_and_mode() {
        let mut source = HashMap::new();
        source.insert(
            ("phone".to_string(), 1),
            json!({"type": "string", "format": "cn-mobile"}),
        );
        let cache = ValidatorCache::new();
        let first = cache.get("phone", 1, FormatMode::Strict, &source).expect("compiles");
        let second = cache.get("phone", 1, FormatMode::Strict, &source).expect("cached");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.compilations(), 1);
        cache.get("phone", 1, FormatMode::Lenient, &source).expect("compiles");
        assert_eq!(cache.compilations(), 2);
        assert_eq!(cache.len(), 2);
        let missing = cache.get("phone", 2, FormatMode::Strict, &source).expect_err("refused");
        assert_eq!(
            missing,
            SchemaError::NotFound {
                subject: "phone".into(),
                version: 2
            }
        );
    }
}
