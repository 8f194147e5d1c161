//! API keys and the tenants they belong to (SPEC section 1, `[[tenants]]`): compared in
//! constant time, never logged.
//!
//! Keys are kept only as SHA-256 digests, each with its tenant. A presented key is
//! hashed and compared with every digest without early exit (the tenant of a match is
//! picked with a constant-time select), so neither the position of a match nor the
//! length of a stored key shows in the timing.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use orchd_engine::config::{Role, Tenant};
use orchd_engine::tenant::TenantId;
use orchd_engine::{ApiError, ErrorClass, ErrorKind};

pub(crate) struct Keys {
    /// Every key's digest and the index of its tenant.
    digests: Vec<([u8; 32], u32)>,
    /// Every tenant, in [`TenantId`] order; with no key configured, the one implicit
    /// `default` operator is every request's caller.
    tenants: Vec<Caller>,
}

/// Who is calling: a tenant's id, name and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub id: TenantId,
    pub name: String,
    pub role: Role,
}

impl Keys {
    /// `tenants` as [`orchd_engine::Config::tenants`] lists them (never empty).
    pub fn new(tenants: &[Tenant]) -> Keys {
        let mut digests = Vec::new();
        let mut callers = Vec::with_capacity(tenants.len());
        for (i, t) in tenants.iter().enumerate() {
            digests.extend(t.digests.iter().map(|d| (*d, i as u32)));
            callers.push(Caller {
                id: TenantId(i as u16),
                name: t.name.clone(),
                role: t.role,
            });
        }
        assert!(!callers.is_empty(), "Config::tenants is never empty");
        Keys {
            digests,
            tenants: callers,
        }
    }

    /// Every tenant's name, in [`TenantId`] order (metric labels).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tenants.iter().map(|c| c.name.as_str())
    }

    /// Auth is off when no key is configured (allowed on loopback only).
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The caller when auth is off: the implicit operator `default` (the one tenant
    /// there is). With keys configured it is only the stand-in the router passes to
    /// routes exempt from auth, which never look at their caller.
    pub fn keyless(&self) -> &Caller {
        &self.tenants[0]
    }

    /// The tenant of one presented key (an `X-API-Key` value or a Bearer token):
    /// missing is 401, unknown is 403.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<&Caller, ApiError> {
        let Some(presented) = presented else {
            return Err(ApiError::new(
                ErrorClass::Unauthenticated,
                ErrorKind::InvalidParams,
                "missing X-API-Key header",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        let mut tenant = 0u32;
        for (d, t) in &self.digests {
            let eq = d.ct_eq(&digest);
            found |= eq;
            tenant = u32::conditional_select(&tenant, t, eq);
        }
        if bool::from(found) {
            Ok(&self.tenants[tenant as usize])
        } else {
            Err(ApiError::new(
                ErrorClass::Forbidden,
                ErrorKind::InvalidParams,
                "unknown API key",
            ))
        }
    }
}

/// Refuses a caller whose role may not do `what` (403, naming the role it needs).
pub(crate) fn require_operator(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller.role {
        Role::Operator => Ok(()),
        Role::Client => Err(ApiError::new(
            ErrorClass::Forbidden,
            ErrorKind::InvalidParams,
            format!(
                "{what} needs a key of a tenant with role operator; tenant {:?} has role {}",
                caller.name,
                caller.role.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, role: Role, keys: &[&str]) -> Tenant {
        Tenant {
            role,
            name: name.into(),
            ..Tenant::default_operator(
                keys.iter()
                    .map(|k| orchd_engine::config::key_digest(k))
                    .collect(),
            )
        }
    }

    #[test]
    fn missing_unknown_and_known_with_their_tenant() {
        let keys = Keys::new(&[
            tenant("ops", Role::Operator, &["alpha"]),
            tenant("team-b", Role::Client, &["beta", "gamma"]),
        ]);
        assert!(keys.enabled());
        assert_eq!(
            keys.check(None).unwrap_err().class,
            ErrorClass::Unauthenticated
        );
        assert_eq!(
            keys.check(Some(b"delta")).unwrap_err().class,
            ErrorClass::Forbidden
        );
        assert_eq!(
            keys.check(Some(b"alph")).unwrap_err().class,
            ErrorClass::Forbidden
        );
        assert_eq!(keys.check(Some(b"alpha")).unwrap().name, "ops");
        assert_eq!(keys.check(Some(b"beta")).unwrap().name, "team-b");
        let gamma = keys.check(Some(b"gamma")).unwrap();
        assert_eq!(
            (gamma.id, gamma.name.as_str(), gamma.role),
            (TenantId(1), "team-b", Role::Client)
        );
    }

    #[test]
    fn only_operators_drain() {
        let ops = Caller {
            id: TenantId(0),
            name: "ops".into(),
            role: Role::Operator,
        };
        let client = Caller {
            id: TenantId(1),
            name: "team-b".into(),
            role: Role::Client,
        };
        require_operator(&ops, "pool drain").unwrap();
        let e = require_operator(&client, "pool drain").unwrap_err();
        assert_eq!(e.class, ErrorClass::Forbidden);
        assert!(e.message.contains("role operator") && e.message.contains("team-b"));
    }

    #[test]
    fn no_keys_means_auth_off() {
        let keys = Keys::new(&orchd_engine::Config::default().tenants());
        assert!(!keys.enabled());
        let c = keys.keyless();
        assert_eq!(
            (c.id, c.name.as_str(), c.role),
            (TenantId(0), "default", Role::Operator)
        );
    }
}
