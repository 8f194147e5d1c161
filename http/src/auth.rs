//! API keys (SPEC section 1): compared in constant time, never logged.
//!
//! Keys are kept only as SHA-256 digests. A presented key is hashed and compared with
//! every digest without early exit, so neither the position of a match nor the length
//! of a stored key shows in the timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use orchd_engine::{ApiError, ErrorClass, ErrorKind};

pub(crate) struct Keys {
    digests: Vec<[u8; 32]>,
}

impl Keys {
    pub fn new<'a>(keys: impl Iterator<Item = &'a str>) -> Keys {
        Keys {
            digests: keys.map(|k| Sha256::digest(k.as_bytes()).into()).collect(),
        }
    }

    /// Auth is off when no key is configured (allowed on loopback only).
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Checks an `X-API-Key` header value: missing is 401, unknown is 403.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(presented) = presented else {
            return Err(ApiError::new(
                ErrorClass::Unauthenticated,
                ErrorKind::InvalidParams,
                "missing X-API-Key header",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        for d in &self.digests {
            found |= d.ct_eq(&digest);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorClass::Forbidden,
                ErrorKind::InvalidParams,
                "unknown API key",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_unknown_and_known() {
        let keys = Keys::new(["alpha", "beta"].into_iter());
        assert_eq!(
            keys.check(None).unwrap_err().class,
            ErrorClass::Unauthenticated
        );
        assert_eq!(
            keys.check(Some(b"gamma")).unwrap_err().class,
            ErrorClass::Forbidden
        );
        assert_eq!(
            keys.check(Some(b"alph")).unwrap_err().class,
            ErrorClass::Forbidden
        );
        keys.check(Some(b"beta")).unwrap();
        keys.check(Some(b"alpha")).unwrap();
    }

    #[test]
    fn no_keys_means_auth_off() {
        let keys = Keys::new(std::iter::empty());
        keys.check(None).unwrap();
    }
}
