//! The payload of a segment file as a slice of values: viewed in place in a
//! memory map of the file when the host is little-endian and the payload is
//! aligned for the value type, else decoded into an owned copy.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// Values of a segment file (`f32`, `u8` or `i64`), owned or mapped.
#[derive(Clone)]
pub struct Values<T: bytemuck::Pod> {
    repr: Repr<T>,
}

#[derive(Clone)]
enum Repr<T> {
    Owned(Vec<T>),
    /// `len` values starting at byte `start` of the map, checked at
    /// construction to be in bounds and aligned for `T`.
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

/// Decodes one little-endian value.
pub trait LeValue: bytemuck::Pod {
    fn from_le(bytes: &[u8]) -> Self;
}

impl LeValue for f32 {
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl LeValue for i64 {
    fn from_le(b: &[u8]) -> Self {
        i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl LeValue for u8 {
    fn from_le(b: &[u8]) -> Self {
        b[0]
    }
}

impl<T: LeValue> Values<T> {
    /// `len` values at byte `start` of `map`: a view into the map when the
    /// bytes can be reinterpreted in place (little-endian host, aligned),
    /// else a decoded copy. `None` if the range is out of the map.
    pub fn from_map(map: &Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(size_of::<T>())?;
        let end = start.checked_add(bytes)?;
        let payload = map.get(start..end)?;
        if cfg!(target_endian = "little") && bytemuck::try_cast_slice::<u8, T>(payload).is_ok() {
            return Some(Self {
                repr: Repr::Mapped {
                    map: map.clone(),
                    start,
                    len,
                },
            });
        }
        let copied = payload
            .chunks_exact(size_of::<T>())
            .map(T::from_le)
            .collect();
        Some(Self {
            repr: Repr::Owned(copied),
        })
    }
}

impl<T: bytemuck::Pod> Values<T> {
    /// True when the values are viewed in a memory map (not copied).
    pub fn is_mapped(&self) -> bool {
        matches!(self.repr, Repr::Mapped { .. })
    }
}

/// Maps a whole segment file read-only.
///
/// Safety of the mapping rests on the files never changing once published:
/// `.rv` and `.uid` files are written in a staging directory, synced and
/// renamed into place (`atomic_io::write_dir_atomically`, which refuses to
/// write into an existing segment), and never opened for writing again;
/// removal renames the directory and unlinks, which leaves an existing map
/// intact. Only a foreign process truncating the file could invalidate it
/// (the kernel would then raise SIGBUS), which no part of mishards does.
#[allow(unsafe_code)] // memmap2's `map` is unsafe because the file could change under the map; see above.
pub fn map_file(file: &File) -> io::Result<Arc<Mmap>> {
    // SAFETY: the file is immutable once published (see the doc comment).
    let map = unsafe { Mmap::map(file) }?;
    Ok(Arc::new(map))
}

impl<T: bytemuck::Pod> Deref for Values<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.repr {
            Repr::Owned(v) => v,
            // In bounds and aligned: checked in `from_map`, and the map's
            // address never moves.
            Repr::Mapped { map, start, len } => {
                bytemuck::cast_slice(&map[*start..*start + *len * size_of::<T>()])
            }
        }
    }
}

impl<T: bytemuck::Pod> From<Vec<T>> for Values<T> {
    fn from(v: Vec<T>) -> Self {
        Self {
            repr: Repr::Owned(v),
        }
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq for Values<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq<Vec<T>> for Values<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        **self == **other
    }
}

impl<T: bytemuck::Pod + fmt::Debug> fmt::Debug for Values<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: bytemuck::Pod> Default for Values<T> {
    fn default() -> Self {
        Vec::new().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mapped(bytes: &[u8]) -> Arc<Mmap> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        map_file(&f).unwrap()
    }

    #[test]
    fn aligned_payload_is_viewed_in_place() {
        let mut bytes = vec![0u8; 24];
        for v in [1.5f32, -2.0, 3.25] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let map = mapped(&bytes);
        let values = Values::<f32>::from_map(&map, 24, 3).unwrap();
        assert_eq!(cfg!(target_endian = "little"), values.is_mapped());
        assert_eq!(&*values, &[1.5, -2.0, 3.25]);
        assert!(
            Values::<f32>::from_map(&map, 24, 4).is_none(),
            "past the end"
        );
        assert!(Values::<f32>::from_map(&map, usize::MAX, 1).is_none());
    }

    #[test]
    fn unaligned_payload_is_copied() {
        let mut bytes = vec![0u8; 3];
        for v in [7i64, -9] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let map = mapped(&bytes);
        let values = Values::<i64>::from_map(&map, 3, 2).unwrap();
        assert!(!values.is_mapped());
        assert_eq!(values, vec![7, -9]);
    }
}
