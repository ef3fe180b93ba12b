//! Array names: the only client-chosen string that ever becomes part of a path.

/// Longest allowed name, in bytes (a file name on Linux may have 255).
pub const MAX_NAME_LEN: usize = 255;

/// A name that is not allowed, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid array name {name:?}: {reason}")]
#[non_exhaustive]
pub struct NameError {
    /// The name as given (lossily decoded if it was not UTF-8).
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks that `name` is 1 to 255 bytes of `[A-Za-z0-9_.-]` and does not start with `.`.
///
/// Such a name can never be `.`, `..`, contain `/` or NUL, or collide with mmshare's own
/// temporary (`.tmp-*`) and quarantined (`*.corrupt`) files, so it is safe to join to a directory.
///
/// # Errors
/// [`NameError`] naming the input and the rule it breaks.
///
/// # Example
/// ```
/// assert!(mmshare::validate_name("camera.frames-1").is_ok());
/// assert!(mmshare::validate_name("../etc/passwd").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let err = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return err("it is longer than 255 bytes");
    }
    if name.starts_with('.') {
        return err("it starts with '.'");
    }
    if name.ends_with(".corrupt") {
        return err("names ending in '.corrupt' are reserved for quarantined files");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return err("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_and_odd_names_are_refused() {
        let long = "a".repeat(300);
        for bad in [
            "", ".", "..", "../x", "a/b", "a\0b", ".hidden", "sp ace", "é", &long,
        ] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.name, bad);
        }
        assert!(validate_name(&"a".repeat(255)).is_ok());
        assert!(validate_name("frames_0.v-2").is_ok());
    }
}
