//! Device names, validated as Linux's `dev_valid_name` (`net/core/dev.c`) does.

/// Why a name is not a device name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("the name is empty")]
    Empty,
    /// Longer than 15 bytes (`IFNAMSIZ` is 16 with the NUL).
    #[error("the name is {0} bytes long (at most 15)")]
    TooLong(usize),
    /// `.` or `..`.
    #[error("the name cannot be . or ..")]
    Dot,
    /// A `/`, a `:`, a NUL or whitespace.
    #[error("the name contains {0:?}")]
    BadChar(char),
}

/// The longest name, in bytes (`IFNAMSIZ - 1`).
pub const MAX_NAME: usize = 15;

/// Checks `name`: 1 to 15 bytes, not `.` or `..`, no `/`, `:`, NUL or whitespace (`:` is
/// refused as Linux refuses it: it was the alias separator).
///
/// # Errors
/// The first rule the name breaks.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if name == "." || name == ".." {
        return Err(NameError::Dot);
    }
    match name
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}
