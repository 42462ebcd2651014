//! The declarations the protocol's tables are written in: `policy!` (a nest's attribute
//! numbers and types), `record!` (a typed struct over a nest, with its [`super::attr::Body`])
//! and `wire_enum!` (a `u8` enumeration that keeps unknown values).

/// Declares a nest's attributes: a module with one `u16` constant per attribute and its
/// `NEST` policy, checked at compile time.
macro_rules! policy {
    ($(
        $(#[$m:meta])*
        pub mod $module:ident = $pname:literal {
            $( $(#[$am:meta])* $name:ident = $kind:literal : $ty:expr ),* $(,)?
        }
    )*) => {$(
        $(#[$m])*
        pub mod $module {
            #[allow(unused_imports)]
            use $crate::attr::AttrType::*;
            $( $(#[$am])* pub const $name: u16 = $kind; )*
            /// The nest's policy.
            pub const NEST: $crate::attr::Policy = $crate::attr::Policy {
                name: $pname,
                attrs: &[$(
                    $crate::attr::AttrSpec { kind: $kind, name: stringify!($name), ty: $ty }
                ),*],
            };
            const _: () = NEST.check();
        }
    )*};
}
pub(crate) use policy;

/// Declares a record: a struct whose fields are attributes of one policy (`req` required,
/// `opt` optional, `list` a possibly empty array), with its [`Body`] and [`Value`] (as a nest)
/// implementations.
macro_rules! record {
    ($(
        $(#[$m:meta])*
        pub struct $name:ident: $policy:ident {
            $( $(#[$fm:meta])* $how:ident $field:ident: $ty:ty = $kind:ident ),* $(,)?
        }
    )*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $crate::attr::record!(@ty $how $ty), )*
        }

        impl $crate::attr::Body for $name {
            const POLICY: &'static $crate::attr::Policy = &$policy::NEST;
            const KINDS: &'static [u16] = &[$($policy::$kind),*];

            #[allow(unused_variables)]
            fn emit(
                &self,
                e: &mut $crate::nl::Encoder<'_>,
            ) -> Result<(), $crate::error::Full> {
                #[allow(unused_imports)]
                use $crate::attr::Value as _;
                $( $crate::attr::record!(@put $how e, $policy::$kind, &self.$field); )*
                Ok(())
            }

            #[allow(unused_variables)]
            fn read(
                t: &$crate::attr::Table<'_>,
            ) -> Result<Self, $crate::error::DecodeError> {
                Ok(Self {
                    $( $field: $crate::attr::record!(@take $how t, $policy::$kind, $ty), )*
                })
            }
        }

        impl $crate::attr::Value for $name {
            fn put(
                &self,
                e: &mut $crate::nl::Encoder<'_>,
                kind: u16,
            ) -> Result<(), $crate::error::Full> {
                e.nested(kind, |e| $crate::attr::Body::emit(self, e))
            }
            fn take(
                t: &$crate::attr::Table<'_>,
                a: $crate::attr::Attr<'_>,
            ) -> Result<Self, $crate::error::DecodeError> {
                $crate::attr::take_body(t, a)
            }
        }
    )*};
    (@ty req $ty:ty) => { $ty };
    (@ty opt $ty:ty) => { Option<$ty> };
    (@ty list $ty:ty) => { Vec<$ty> };
    (@put req $e:ident, $k:expr, $v:expr) => { $v.put($e, $k)? };
    (@put opt $e:ident, $k:expr, $v:expr) => { if let Some(v) = $v { v.put($e, $k)?; } };
    (@put list $e:ident, $k:expr, $v:expr) => { if !$v.is_empty() { $v.put($e, $k)?; } };
    (@take req $t:ident, $k:expr, $ty:ty) => {
        match $t.get($k) {
            Some(a) => <$ty as $crate::attr::Value>::take($t, a)?,
            None => return Err($t.missing($k)),
        }
    };
    (@take opt $t:ident, $k:expr, $ty:ty) => {
        match $t.get($k) {
            Some(a) => Some(<$ty as $crate::attr::Value>::take($t, a)?),
            None => None,
        }
    };
    (@take list $t:ident, $k:expr, $ty:ty) => {
        match $t.get($k) {
            Some(a) => <Vec<$ty> as $crate::attr::Value>::take($t, a)?,
            None => Vec::new(),
        }
    };
}
pub(crate) use record;

/// Declares a `u8` enum of the protocol with an `Unknown(raw)` variant (values from a newer
/// peer survive a round trip), its names and its [`Value`] implementation.
macro_rules! wire_enum {
    ($(
        $(#[$m:meta])*
        pub enum $name:ident { $( $(#[$vm:meta])* $var:ident = $val:literal => $text:literal ),* $(,)? }
    )*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vm])* $var, )*
            /// A value this side does not know.
            Unknown(u8),
        }

        impl $name {
            /// Every known value.
            pub const ALL: &'static [Self] = &[$(Self::$var),*];

            /// The wire value.
            pub fn raw(self) -> u8 {
                match self { $(Self::$var => $val,)* Self::Unknown(v) => v }
            }

            /// The value of a wire byte.
            pub fn from_raw(v: u8) -> Self {
                match v { $($val => Self::$var,)* v => Self::Unknown(v) }
            }

            /// The name the CLI shows and accepts.
            pub fn name(self) -> &'static str {
                match self { $(Self::$var => $text,)* Self::Unknown(_) => "unknown" }
            }

            /// Parses a name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$var),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    Self::Unknown(v) => write!(f, "unknown({v})"),
                    k => f.write_str(k.name()),
                }
            }
        }

        impl $crate::attr::Value for $name {
            fn put(
                &self,
                e: &mut $crate::nl::Encoder<'_>,
                kind: u16,
            ) -> Result<(), $crate::error::Full> {
                e.u8(kind, self.raw())
            }
            fn take(
                t: &$crate::attr::Table<'_>,
                a: $crate::attr::Attr<'_>,
            ) -> Result<Self, $crate::error::DecodeError> {
                Ok(Self::from_raw(<u8 as $crate::attr::Value>::take(t, a)?))
            }
        }
    )*};
}
pub(crate) use wire_enum;
