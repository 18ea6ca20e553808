//! Small host-side helpers: atomic file writes, bounded reads of settings files.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed and synced, then
/// renamed over the target, so a crash leaves either the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::file(d, e))?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = match dir {
        Some(d) => d.join(tmp_name),
        None => tmp_name.into(),
    };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, e)
    })
}

/// Reads a settings file (config, model, experiment) as text: a regular file of at most 4 MiB,
/// so that a path such as /dev/zero gives an error instead of reading forever.
pub fn read_settings(path: &Path) -> Result<String> {
    const MAX: u64 = 4 << 20;
    let meta =
        std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::file(path, "not a regular file"));
    }
    if meta.len() > MAX {
        return Err(Error::file(
            path,
            format!(
                "{} bytes is too large for a settings file (at most {MAX})",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}
