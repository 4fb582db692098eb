//! The file that hands the workers' API key from `bootstrap-metabase` to `mbprov worker`.
//!
//! Written so a reader never sees half a key and nobody else can read it: owner-only mode from
//! the first byte, a temporary file in the same directory, then an atomic rename.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::metabase::ApiKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "cannot read the API key file {path}: {source}. Check that this user may read it, or remove it to create a new key"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write the API key file {path}: {source}. Check that this user may write to its directory"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The key the file holds; `None` when there is no file or it holds only whitespace.
pub fn read(path: &Path) -> Result<Option<ApiKey>, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(ApiKey::new(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces the file with `key` (mode 0600), creating missing parent directories.
pub fn write(path: &Path, key: &str) -> Result<(), KeyFileError> {
    let fail = |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "api-key".into());
    let tmp = dir.join(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = write_new(&tmp, key).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

fn write_new(tmp: &Path, key: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    // The umask cannot widen 0600, but a restrictive one could narrow it: state it outright.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(key.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/api-key");
        assert!(read(&path).unwrap().is_none());
        write(&path, "mb_first").unwrap();
        write(&path, "mb_second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mb_second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(read(&path).unwrap().is_some());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["api-key"]);
    }

    #[test]
    fn a_blank_file_holds_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-key");
        std::fs::write(&path, " \n").unwrap();
        assert!(read(&path).unwrap().is_none());
    }

    #[test]
    fn an_unreadable_path_is_an_error_not_a_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as a key.
        assert!(read(dir.path()).is_err());
    }
}
