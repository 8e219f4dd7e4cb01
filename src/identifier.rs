//! Identifiers of the entities that own a mailbox (agents and clients), and
//! the base32 form of a UUID used in Redis keys.
//!
//! Equality and hashing use the UUID and the role only; the name is for display.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Whether an entity is an agent (serves actions) or a client (only calls them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// An agent: runs a behavior and serves its actions.
    Agent,
    /// A client: calls agents but serves nothing.
    Client,
}

/// The untyped identifier of any entity with a mailbox.
///
/// ```
/// use actix_academy::{ClientId, EntityId};
/// let client = ClientId::new(Some("alice"));
/// let id: &EntityId = &client;
/// assert_eq!(id.to_string(), "ClientId<alice>");
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct EntityId {
    uid: Uuid,
    role: Role,
    name: Option<Arc<str>>,
}

impl EntityId {
    /// An identifier with a fresh random (v4) UUID.
    pub fn new(role: Role, name: Option<&str>) -> Self {
        Self::from_parts(Uuid::new_v4(), role, name)
    }

    /// An identifier from its parts.
    pub fn from_parts(uid: Uuid, role: Role, name: Option<&str>) -> Self {
        Self { uid, role, name: name.map(Arc::from) }
    }

    /// The UUID that identifies the entity.
    pub fn uid(&self) -> Uuid {
        self.uid
    }

    /// Agent or client.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The human-readable name, if one was given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The UUID in the base32 form used in Redis keys.
    pub fn base32(&self) -> String {
        uuid_to_base32(self.uid)
    }
}

impl PartialEq for EntityId {
    fn eq(&self, other: &Self) -> bool {
        self.uid == other.uid && self.role == other.role
    }
}

impl Eq for EntityId {}

impl Hash for EntityId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uid.hash(state);
        self.role.hash(state);
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.role {
            Role::Agent => "AgentId",
            Role::Client => "ClientId",
        };
        match &self.name {
            Some(name) => write!(f, "{kind}<{name}>"),
            None => write!(f, "{kind}<{}>", &self.uid.simple().to_string()[..8]),
        }
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}({})", self.uid)
    }
}

/// The identifier of an agent whose behavior is `B`.
///
/// The type parameter is what lets a handle made from this id offer exactly
/// the actions `B` handles. It costs nothing at run time.
pub struct AgentId<B> {
    id: EntityId,
    _behavior: PhantomData<fn() -> B>,
}

impl<B> AgentId<B> {
    /// A fresh agent identifier.
    pub fn new(name: Option<&str>) -> Self {
        Self::wrap(EntityId::new(Role::Agent, name))
    }

    fn wrap(id: EntityId) -> Self {
        Self { id, _behavior: PhantomData }
    }

    /// Types an untyped identifier; fails unless it names an agent.
    pub fn from_entity(id: EntityId) -> Result<Self, IdError> {
        match id.role {
            Role::Agent => Ok(Self::wrap(id)),
            Role::Client => Err(IdError::NotAnAgent(id)),
        }
    }

    /// The untyped identifier.
    pub fn entity(&self) -> &EntityId {
        &self.id
    }
}

/// Parses an agent id from its UUID (`67e55044-10b1-426f-9247-bb680e5fe0c8`)
/// or its base32 form (as in the Redis keys), to serve or call an agent
/// again under the same identity, from another process.
///
/// ```
/// use actix_academy::AgentId;
/// struct Counter;
/// let id = AgentId::<Counter>::new(Some("counter"));
/// let again: AgentId<Counter> = id.uid().to_string().parse().unwrap();
/// assert_eq!(again, id);
/// assert_eq!(id.base32().parse::<AgentId<Counter>>().unwrap(), id);
/// ```
impl<B> std::str::FromStr for AgentId<B> {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        let uid = match Uuid::parse_str(text) {
            Ok(uid) => uid,
            Err(_) => base32_to_uuid(text)?,
        };
        Ok(Self::wrap(EntityId::from_parts(uid, Role::Agent, None)))
    }
}

impl<B> Deref for AgentId<B> {
    type Target = EntityId;
    fn deref(&self) -> &EntityId {
        &self.id
    }
}

impl<B> Clone for AgentId<B> {
    fn clone(&self) -> Self {
        Self::wrap(self.id.clone())
    }
}

impl<B> PartialEq for AgentId<B> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<B> Eq for AgentId<B> {}

impl<B> Hash for AgentId<B> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl<B> fmt::Display for AgentId<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
    }
}

impl<B> fmt::Debug for AgentId<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
    }
}

impl<B> From<AgentId<B>> for EntityId {
    fn from(id: AgentId<B>) -> Self {
        id.id
    }
}

impl<B> Serialize for AgentId<B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.id.serialize(s)
    }
}

impl<'de, B> Deserialize<'de> for AgentId<B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_entity(EntityId::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The identifier of a client.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ClientId(EntityId);

impl ClientId {
    /// A fresh client identifier.
    pub fn new(name: Option<&str>) -> Self {
        Self(EntityId::new(Role::Client, name))
    }
}

impl Deref for ClientId {
    type Target = EntityId;
    fn deref(&self) -> &EntityId {
        &self.0
    }
}

impl From<ClientId> for EntityId {
    fn from(id: ClientId) -> Self {
        id.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = EntityId::deserialize(d)?;
        match id.role {
            Role::Client => Ok(Self(id)),
            Role::Agent => Err(serde::de::Error::custom(format!("{id} is not a client"))),
        }
    }
}

/// An identifier that does not parse, or is of the wrong kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// A string that is not the 26-character base32 form of a UUID.
    #[error("{0:?} is not a base32-encoded UUID")]
    InvalidBase32(String),
    /// An agent id was expected and a client id was given.
    #[error("{0} is not an agent")]
    NotAnAgent(EntityId),
}

const BASE32: base32::Alphabet = base32::Alphabet::Rfc4648 { padding: false };

/// Encodes a UUID as RFC 4648 base32, upper case, padding stripped (26 characters).
///
/// ```
/// use actix_academy::wire::{base32_to_uuid, uuid_to_base32};
/// let uid = uuid::Uuid::new_v4();
/// let text = uuid_to_base32(uid);
/// assert_eq!(text.len(), 26);
/// assert_eq!(base32_to_uuid(&text).unwrap(), uid);
/// ```
pub fn uuid_to_base32(uid: Uuid) -> String {
    base32::encode(BASE32, uid.as_bytes())
}

/// Parses the form written by [`uuid_to_base32`]; anything else is an error,
/// so that a decoded key always re-encodes to itself.
pub fn base32_to_uuid(text: &str) -> Result<Uuid, IdError> {
    let invalid = || IdError::InvalidBase32(text.to_owned());
    if text.len() != 26 {
        return Err(invalid());
    }
    let bytes = base32::decode(BASE32, text).ok_or_else(invalid)?;
    let uid = Uuid::from_slice(&bytes).map_err(|_| invalid())?;
    if uuid_to_base32(uid) != text {
        return Err(invalid());
    }
    Ok(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter;

    #[test]
    fn base32_round_trips_and_rejects_bad_input() {
        for _ in 0..1000 {
            let uid = Uuid::new_v4();
            let text = uuid_to_base32(uid);
            assert_eq!(text.len(), 26);
            assert!(!text.contains('='));
            assert_eq!(text, text.to_uppercase());
            assert_eq!(base32_to_uuid(&text).unwrap(), uid);
        }
        let good = uuid_to_base32(Uuid::new_v4());
        for bad in [
            "",
            "ABC",
            &good[..25],
            &format!("{good}A"),
            &good.to_lowercase(),
            "0000000000000000000000000!",
            &format!("{good}======"),
        ] {
            assert!(matches!(base32_to_uuid(bad), Err(IdError::InvalidBase32(_))), "{bad:?}");
        }
    }

    #[test]
    fn equality_ignores_the_name_but_not_the_role() {
        let uid = Uuid::new_v4();
        let a = EntityId::from_parts(uid, Role::Agent, Some("x"));
        let b = EntityId::from_parts(uid, Role::Agent, None);
        let c = EntityId::from_parts(uid, Role::Client, Some("x"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let set: std::collections::HashSet<_> = [a, b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn display_uses_name_or_short_uuid() {
        let named = AgentId::<Counter>::new(Some("counter"));
        assert_eq!(named.to_string(), "AgentId<counter>");
        let anon = ClientId::new(None);
        let expected = format!("ClientId<{}>", &anon.uid().simple().to_string()[..8]);
        assert_eq!(anon.to_string(), expected);
    }

    #[test]
    fn typed_ids_check_the_role_when_decoded() {
        let client = ClientId::new(Some("c"));
        let bytes = rmp_serde::to_vec(&client).unwrap();
        assert!(rmp_serde::from_slice::<AgentId<Counter>>(&bytes).is_err());
        let back: ClientId = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, client);
        assert_eq!(back.name(), Some("c"));
        let agent = AgentId::<Counter>::new(None);
        let bytes = rmp_serde::to_vec(&agent).unwrap();
        assert_eq!(rmp_serde::from_slice::<AgentId<Counter>>(&bytes).unwrap(), agent);
        assert!(rmp_serde::from_slice::<ClientId>(&bytes).is_err());
    }
}
