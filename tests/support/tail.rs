//! A file read as it grows, line by line, across renames of it: the API
//! server rotates its audit log (`tail -F` style).

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

pub struct Tail {
    path: PathBuf,
    /// The file being read and its inode (a new inode at `path` means it
    /// was rotated).
    file: Option<(File, u64)>,
    /// Bytes of a line not complete yet: a read may end inside one, or
    /// inside a character.
    partial: Vec<u8>,
}

impl Tail {
    /// Everything in the file, then what is written to it.
    pub fn from_start(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    /// Only what is written from now on.
    pub fn from_end(path: PathBuf) -> Self {
        let mut tail = Self::from_start(path);
        tail.file = open(&tail.path);
        if let Some((file, _)) = &mut tail.file {
            file.seek(SeekFrom::End(0)).unwrap();
        }
        tail
    }

    /// The complete lines written since the last call.
    pub fn lines(&mut self) -> Vec<String> {
        loop {
            if self.file.is_none() {
                self.file = open(&self.path);
            }
            let Some((file, inode)) = &mut self.file else {
                break;
            };
            file.read_to_end(&mut self.partial).unwrap();
            match std::fs::metadata(&self.path) {
                Ok(meta) if meta.ino() != *inode => {
                    // Rotated: whatever reached the old file before the
                    // rename, then on to the new one.
                    file.read_to_end(&mut self.partial).unwrap();
                    self.file = None;
                }
                _ => break,
            }
        }
        let complete = self
            .partial
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |end| end + 1);
        let rest = self.partial.split_off(complete);
        let lines = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&lines)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn open(path: &Path) -> Option<(File, u64)> {
    let file = File::open(path).ok()?;
    let inode = file.metadata().ok()?.ino();
    Some((file, inode))
}
