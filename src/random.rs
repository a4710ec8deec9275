//! Bytes from the operating system's CSPRNG (ring's `SystemRandom`): the one source of key
//! material, noise seeds, dataset splits, ids and temporary-file names. Never seeded by a user.
//!
//! A leaf module (it imports nothing from the crate), so that the workspace (temporary names,
//! workspace ids) and the keys (which the workspace's files hold) can both use it without
//! importing each other. [`crate::keys::try_random_bytes`] wraps it with a coded error.

use ring::rand::{SecureRandom, SystemRandom};

/// The OS random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RngError;

/// `N` bytes from the OS CSPRNG.
///
/// # Panics
/// Only if the OS random source fails, which ring treats as fatal for key generation too;
/// use [`try_random_bytes`] where a recoverable error is wanted.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    try_random_bytes().expect("invariant: the OS random number generator works")
}

/// `N` bytes from the OS CSPRNG.
///
/// # Errors
/// [`RngError`] if the OS random source fails.
pub fn try_random_bytes<const N: usize>() -> Result<[u8; N], RngError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| RngError)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ() {
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
        assert_eq!(try_random_bytes::<0>().unwrap(), [0u8; 0]);
    }
}
