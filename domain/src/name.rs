//! Shared immutable names for the ledger's movements.
//!
//! A day of a large fleet is hundreds of thousands of movements that repeat a handful of
//! strings (the provider, the customer, the computer, the resource, the journal), so each
//! movement holds reference-counted names, interned by the state, instead of its own
//! copies: about half the memory per movement. Serialized as a plain string.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Arc::from(s))
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Name(Arc::from(String::deserialize(d)?)))
    }
}

/// One shared copy of each name in use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner(HashSet<Name>);

impl Interner {
    pub(crate) fn get(&mut self, s: &str) -> Name {
        if let Some(name) = self.0.get(s) {
            return name.clone();
        }
        let name = Name::from(s);
        self.0.insert(name.clone());
        name
    }

    /// The shared copy of a name read from storage.
    pub(crate) fn share(&mut self, name: Name) -> Name {
        self.get(&name)
    }
}
