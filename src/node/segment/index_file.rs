//! The index file of an INDEX `TableFiles` row: the bytes of a built vector
//! index, stored in the directory of the segment it indexes (on the shared
//! storage, so read-only nodes load it too) as `<file_id>.idx`, written
//! whole or not at all.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{atomic_io, context, invalid_input};

/// `<segment_dir>/<file_id>.idx`; `file_id` is the index row's own
/// generated id (a plain number), never a user string.
pub fn index_file_path(segment_dir: &Path, file_id: &str) -> io::Result<PathBuf> {
    let plain = !file_id.is_empty() && file_id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !plain {
        return Err(invalid_input(format!("invalid index file id {file_id:?}")));
    }
    Ok(segment_dir.join(index_file_name(file_id)))
}

fn index_file_name(file_id: &str) -> String {
    format!("{file_id}.idx")
}

/// Writes the index file atomically (temporary file, synced, renamed,
/// directory synced); returns its size in bytes. The segment directory must
/// exist.
pub fn write_index_file(segment_dir: &Path, file_id: &str, bytes: &[u8]) -> io::Result<u64> {
    index_file_path(segment_dir, file_id)?;
    atomic_io::replace_file(segment_dir, &index_file_name(file_id), |temp| {
        let mut f = File::create(temp).map_err(context("creating", temp))?;
        f.write_all(bytes).map_err(context("writing", temp))?;
        f.sync_all().map_err(context("syncing", temp))?;
        Ok(bytes.len() as u64)
    })
}

/// Reads a whole index file.
pub fn read_index_file(segment_dir: &Path, file_id: &str) -> io::Result<Vec<u8>> {
    let path = index_file_path(segment_dir, file_id)?;
    fs::read(&path).map_err(context("reading index file", &path))
}

/// Removes an index file (and a leftover temporary of it); a missing file is
/// not an error.
pub fn remove_index_file(segment_dir: &Path, file_id: &str) -> io::Result<()> {
    let path = index_file_path(segment_dir, file_id)?;
    let temp = segment_dir.join(format!(
        "{}{}",
        index_file_name(file_id),
        atomic_io::TEMP_SUFFIX
    ));
    for p in [path, temp] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(context("removing index file", &p)(e))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let size = write_index_file(dir.path(), "42", b"index bytes").unwrap();
        assert_eq!(size, 11);
        assert_eq!(read_index_file(dir.path(), "42").unwrap(), b"index bytes");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["42.idx".to_string()]);
        remove_index_file(dir.path(), "42").unwrap();
        remove_index_file(dir.path(), "42").unwrap();
        assert!(read_index_file(dir.path(), "42").is_err());
    }

    #[test]
    fn refuses_ids_that_are_not_plain_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(write_index_file(dir.path(), bad, b"x").is_err(), "{bad}");
        }
    }
}
