//! Tenants (issue 19): who owns a task, session or artifact, and the share and limits
//! each one has.
//!
//! A tenant's ids are its own. Inside orchd a task or session is known by
//! [`scoped`]`(tenant, id)`, a digest of both, so every map keyed by id (the task
//! directory, sessions, an owner's tasks) is keyed by (tenant, id) without knowing about
//! tenants, and the same id sent by two tenants names two tasks. The ids a client sent
//! travel beside the scoped ones ([`crate::task::ClientIds`]) for what is shown to it:
//! responses, transcripts, log lines. Scoped ids never leave the server.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Role;

/// The name of the tenant of `server.api_keys`, and of the one implicit tenant when no
/// key is configured at all (loopback only).
pub const DEFAULT_TENANT: &str = "default";

/// At most this many tenants (each has its own metric series).
pub const MAX_TENANTS: usize = 1000;

/// A tenant's index in [`crate::Config::tenants`]: what tasks, queues and probes carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u16);

impl TenantId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A tenant as the server uses it: name, role, key digests, share and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    pub role: Role,
    pub digests: Vec<[u8; 32]>,
    /// Its share of a contended pool's slots, relative to the other tenants' weights.
    pub weight: u32,
    /// The most of its tasks queued in one pool at once (0: no limit beyond the pool's).
    pub max_queued: u32,
    /// The most slots of one pool its tasks hold at once (0: no limit).
    pub max_running: u32,
    /// Prompt plus completion tokens per minute over all pools (0: no limit).
    pub tokens_per_minute: u64,
}

impl Tenant {
    /// The implicit tenant: `server.api_keys` (or no key at all), an operator with
    /// weight 1 and no limits.
    pub fn default_operator(digests: Vec<[u8; 32]>) -> Tenant {
        Tenant {
            name: DEFAULT_TENANT.to_string(),
            role: Role::Operator,
            digests,
            weight: 1,
            max_queued: 0,
            max_running: 0,
            tokens_per_minute: 0,
        }
    }
}

/// The id by which `tenant`'s `id` is known inside orchd: the first 128 bits of
/// SHA-256 over both (as a version-8 UUID). Another tenant cannot name it: its own
/// requests are scoped by its own name.
pub fn scoped(tenant: &str, id: Uuid) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"orchd tenant scope v1\0");
    h.update(tenant.as_bytes());
    h.update(b"\0");
    h.update(id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_two_tenants_two_keys() {
        let id = Uuid::from_u128(7);
        let (a, b) = (scoped("team-a", id), scoped("team-b", id));
        assert_ne!(a, b);
        assert_eq!(a, scoped("team-a", id), "stable");
        assert_ne!(a, id);
        assert_eq!(a.get_version_num(), 8);
        // The separator keeps ("ab", x) and ("a", "b"...) apart.
        assert_ne!(scoped("ab", id), scoped("a", id));
    }
}
