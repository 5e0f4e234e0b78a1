//! Crash-safe changes to the data directory: a new segment directory appears
//! whole or not at all, a file is replaced whole, a removed directory vanishes
//! at once, and what a crash can leave behind is listed for the startup sweep.
//!
//! A new directory is built in a hidden staging sibling `.<name>.tmp`, its
//! files and the staging directory are synced, the staging directory is
//! renamed into place and the parent synced, so a crash leaves either no
//! directory or a complete one. A single file is replaced through
//! `<name>.tmp` in the same directory. Removal first renames the directory to
//! a hidden `.<name>.del` sibling.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use super::{context, invalid_input};

/// Suffix of temporary files and staging directories; never read as data.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Creates directory `dir` atomically: `fill` writes (and syncs) its files in
/// the staging sibling, which is then synced and renamed to `dir`, and the
/// parent synced. Parents are created as needed. `dir` must not exist, except
/// as a directory holding only `*.tmp` leftovers of a crashed write, which is
/// replaced. On failure the staging directory is removed (best effort).
pub(super) fn write_dir_atomically<T>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let (parent, staging) = hidden_sibling(dir, TEMP_SUFFIX)?;
    create_dir_all_durable(&parent)?;
    clear_leftovers_in(dir)?;
    remove_dir_if_present(&staging)?;
    fs::create_dir(&staging).map_err(context("creating directory", &staging))?;

    let result = fill(&staging).and_then(|filled| {
        sync_dir(&staging)?;
        fs::rename(&staging, dir).map_err(context("renaming staging directory to", dir))?;
        sync_dir(&parent)?;
        Ok(filled)
    });
    if result.is_err() {
        // Best effort: a leftover staging dir is also removed by the next write.
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Refuses to overwrite an existing segment; removes a directory holding
/// only `*.tmp` leftovers so the staging directory can take its place.
fn clear_leftovers_in(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(context("listing", dir)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(context("listing", dir))?;
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(TEMP_SUFFIX) {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "segment directory {} already holds {}",
                    dir.display(),
                    name.to_string_lossy()
                ),
            ));
        }
    }
    remove_dir_if_present(dir)
}

/// Replaces `dir/<name>` atomically: `write` creates (and syncs) the file at
/// the path it is given, `dir/<name>.tmp`, which is then renamed over the
/// final name, and `dir` synced. `dir` must exist.
pub(super) fn replace_file<T>(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let final_path = dir.join(name);
    let temp_path = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let written = write(&temp_path)?;
    fs::rename(&temp_path, &final_path).map_err(context("renaming to", &final_path))?;
    sync_dir(dir)?;
    Ok(written)
}

/// Removes a segment directory (and any staging leftover of it). The
/// directory is first renamed to a hidden `.<name>.del` sibling so it
/// disappears atomically. A missing directory is not an error.
pub fn remove_segment_dir(dir: &Path) -> io::Result<()> {
    let (parent, trash) = hidden_sibling(dir, ".del")?;
    let (_, staging) = hidden_sibling(dir, TEMP_SUFFIX)?;
    remove_dir_if_present(&trash)?;
    match fs::rename(dir, &trash) {
        Ok(()) => {
            sync_dir(&parent)?;
            remove_dir_if_present(&trash)?;
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(context("removing segment directory", dir)(err)),
    }
    remove_dir_if_present(&staging)
}

/// Segment directories under `<data_dir>/db/tables/`, as `(table_id,
/// segment_id, path)`, plus the hidden staging (`.tmp`) and removal (`.del`)
/// leftovers a crash can leave, as `leftovers`.
pub struct SegmentDirs {
    pub segments: Vec<(String, String, PathBuf)>,
    pub leftovers: Vec<PathBuf>,
}

/// Lists what is on disk under `<data_dir>/db/tables/` (missing = empty).
pub fn list_segment_dirs(data_dir: &Path) -> io::Result<SegmentDirs> {
    let mut out = SegmentDirs {
        segments: Vec::new(),
        leftovers: Vec::new(),
    };
    let tables = data_dir.join("db").join("tables");
    let table_entries = match fs::read_dir(&tables) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for table in table_entries {
        let table = table?;
        if !table.file_type()?.is_dir() {
            continue;
        }
        let table_id = table.file_name().to_string_lossy().into_owned();
        for entry in fs::read_dir(table.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && (name.ends_with(TEMP_SUFFIX) || name.ends_with(".del")) {
                out.leftovers.push(entry.path());
            } else if entry.file_type()?.is_dir() {
                out.segments.push((table_id.clone(), name, entry.path()));
            }
        }
    }
    Ok(out)
}

/// Splits a segment directory into its parent and a sibling path named
/// `.<name><suffix>`, used for staging and for removal.
fn hidden_sibling(dir: &Path, suffix: &str) -> io::Result<(PathBuf, PathBuf)> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(invalid_input(format!(
            "segment directory {} has no parent or name",
            dir.display()
        )));
    };
    let mut hidden = OsString::from(".");
    hidden.push(name);
    hidden.push(suffix);
    Ok((parent.to_path_buf(), parent.join(hidden)))
}

/// Flushes a directory's entries (new, renamed or removed files) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(context("syncing directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `create_dir_all` that also syncs the parent of every directory it creates.
fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path);
        current = path.parent();
    }
    for path in missing.into_iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(err) => return Err(context("creating directory", path)(err)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != ErrorKind::NotFound => {
            Err(context("removing directory", dir)(err))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{float_vectors, test_dir};
    use super::super::{read_segment, write_deleted_docs, write_segment};
    use super::*;
    use tempfile::TempDir;

    #[test]
    fn crashed_staging_dir_is_ignored_and_replaced() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        let (_, staging) = hidden_sibling(&dir, TEMP_SUFFIX).unwrap();
        // A crash mid-write: staging holds a partial .rv, no segment dir.
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("1.rv"), b"MSHS partial").unwrap();
        assert_eq!(
            read_segment(&dir, "1", 2).unwrap_err().kind(),
            ErrorKind::NotFound
        );

        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        assert!(!staging.exists());
        assert_eq!(read_segment(&dir, "1", 2).unwrap().ids, vec![1, 2]);
    }

    #[test]
    fn temp_files_in_segment_dir_are_ignored_and_overwritten() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        // Leftover temp file only, no final files: the next write takes over.
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1.rv.tmp"), b"garbage").unwrap();
        assert_eq!(
            read_segment(&dir, "1", 2).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        assert!(!dir.join("1.rv.tmp").exists());

        // A crashed deletes write: the tmp is ignored, then replaced.
        let temp = dir.join("deleted_docs.1.tmp");
        fs::write(&temp, b"garbage").unwrap();
        assert!(read_segment(&dir, "1", 2).unwrap().deleted.is_empty());
        write_deleted_docs(&dir, &[1]).unwrap();
        assert!(!temp.exists());
        assert_eq!(read_segment(&dir, "1", 1).unwrap().deleted.offsets(), &[1]);
    }

    #[test]
    fn existing_segment_is_not_overwritten() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        let err = write_segment(&dir, "1", &float_vectors(1, 2), &[3]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        assert_eq!(read_segment(&dir, "1", 2).unwrap().ids, vec![1, 2]);
    }

    #[test]
    fn remove_segment_dir_removes_and_tolerates_missing() {
        let root = TempDir::new().unwrap();
        let dir = test_dir(&root);
        write_segment(&dir, "1", &float_vectors(2, 2), &[1, 2]).unwrap();
        remove_segment_dir(&dir).unwrap();
        assert!(!dir.exists());
        let table_dir = dir.parent().unwrap();
        assert_eq!(fs::read_dir(table_dir).unwrap().count(), 0, "no trash left");
        remove_segment_dir(&dir).unwrap();
        remove_segment_dir(&root.path().join("never/existed")).unwrap();
    }
}
