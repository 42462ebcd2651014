//! Attribute policies and the validating parser, in the manner of the kernel's `nla_parse`
//! with an `nla_policy` table.
//!
//! Every nest (a message's top-level attributes, or a nested attribute) has a [`Policy`]: for
//! each type number from 1 up, a name and an [`AttrType`]. [`Table::parse`] walks the
//! attributes once, checks each known one against its type (sizes, strings, nests recursively
//! up to [`MAX_DEPTH`]) and files it by type; typed readers then take values from the table
//! without further length checks. Unknown attributes are skipped, or refused with their offset
//! under strict checking ([`Ctx::strict`]), as `NETLINK_GET_STRICT_CHK` makes the kernel do.
//!
//! The policies are the protocol's reference: `docs/protocol.md` lists each of them and a test
//! compares the two.

use std::{fmt, net::IpAddr};

use super::{
    error::{AttrRef, DecodeError, Full},
    nl::{Encoder, NLA_F_NESTED, NLA_HDRLEN, NLA_TYPE_MASK, align},
};

/// How deep attributes may sit: the message's own attributes are level 1, a nest's children one
/// level more. The protocol's deepest path is 3 (a bond's members' entries); the kernel's
/// policy walker stops at 10 (`MAX_POLICY_RECURSION_DEPTH`).
pub const MAX_DEPTH: usize = 8;

/// The most attribute types one nest may define (the table is a fixed array).
pub const MAX_ATTRS: usize = 32;

/// The type of an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// One byte.
    U8,
    /// Two bytes, host order.
    U16,
    /// Four bytes, host order.
    U32,
    /// Eight bytes, host order, 4-byte aligned.
    U64,
    /// Four bytes, host order, signed.
    I32,
    /// No value: presence is the information.
    Flag,
    /// UTF-8 text of at most this many bytes, NUL-terminated on the wire (a missing NUL is
    /// accepted).
    Str(u16),
    /// Opaque bytes, at most this many.
    Bytes(u16),
    /// An Ethernet address, 6 bytes.
    Mac,
    /// An IPv4 (4 bytes) or IPv6 (16 bytes) address, network order.
    Ip,
    /// Attributes of the given policy.
    Nested(&'static Policy),
    /// A list: a nest whose entries all have type 1 and the given type (the layout of
    /// `IFLA_VF_LIST`).
    Array(&'static AttrType),
}

impl fmt::Display for AttrType {
    /// The name `docs/protocol.md` uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::U8 => f.write_str("u8"),
            Self::U16 => f.write_str("u16"),
            Self::U32 => f.write_str("u32"),
            Self::U64 => f.write_str("u64"),
            Self::I32 => f.write_str("i32"),
            Self::Flag => f.write_str("flag"),
            Self::Str(max) => write!(f, "string({max})"),
            Self::Bytes(max) => write!(f, "binary({max})"),
            Self::Mac => f.write_str("mac"),
            Self::Ip => f.write_str("ip"),
            Self::Nested(p) => write!(f, "nested({})", p.name),
            Self::Array(t) => write!(f, "array({t})"),
        }
    }
}

/// One attribute of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrSpec {
    /// Type number.
    pub kind: u16,
    /// Name (the constant's name; `docs/protocol.md` prefixes it with the nest's name).
    pub name: &'static str,
    /// Value type.
    pub ty: AttrType,
}

/// The attributes of one nest: `attrs[i]` has type number `i + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The nest's name, e.g. `link`.
    pub name: &'static str,
    /// Its attributes, by type number from 1.
    pub attrs: &'static [AttrSpec],
}

impl Policy {
    /// Compile-time check of the table's shape (used by the `policy!` macro).
    pub const fn check(&self) {
        assert!(self.attrs.len() <= MAX_ATTRS, "too many attributes");
        let mut i = 0;
        while i < self.attrs.len() {
            assert!(
                self.attrs[i].kind as usize == i + 1,
                "attribute numbers must run 1, 2, 3, ..."
            );
            i += 1;
        }
    }

    /// The attribute of type `kind`.
    pub fn spec(&self, kind: u16) -> Option<&'static AttrSpec> {
        self.attrs.get(usize::from(kind).checked_sub(1)?)
    }

    /// An attribute's name, empty if the policy has no such type.
    pub fn name_of(&self, kind: u16) -> &'static str {
        self.spec(kind).map_or("", |s| s.name)
    }

    fn at(&'static self, kind: u16, offset: u32) -> AttrRef {
        AttrRef {
            nest: self.name,
            name: self.name_of(kind),
            kind,
            offset,
        }
    }
}

/// Decoding options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ctx {
    /// Strict checking: unknown attributes, attributes a request does not use, trailing bytes,
    /// non-zero reserved fields and nests without `NLA_F_NESTED` are errors instead of being
    /// ignored.
    pub strict: bool,
}

/// One attribute as found: type (flags stripped), whether `NLA_F_NESTED` was set, the offset
/// of its header from the start of the message, its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// `nla_type & NLA_TYPE_MASK`.
    pub kind: u16,
    /// `NLA_F_NESTED` was set.
    pub nested: bool,
    /// Offset of the attribute's header from the start of its message's `nlmsghdr`.
    pub offset: u32,
    /// The value (without padding).
    pub value: &'a [u8],
}

/// Walks the attributes in `bytes` (which start `base` bytes into the message).
fn walk<'a>(
    bytes: &'a [u8],
    base: u32,
    ctx: Ctx,
    policy: &'static Policy,
    mut f: impl FnMut(Attr<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let offset = base + pos as u32;
        let rest = &bytes[pos..];
        if rest.len() < NLA_HDRLEN {
            // Fewer bytes than an attribute header: the kernel warns about "bytes leftover"
            // and goes on, unless checking strictly.
            if ctx.strict {
                return Err(DecodeError::Trailing {
                    offset,
                    len: rest.len() as u32,
                });
            }
            return Ok(());
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let raw = u16::from_ne_bytes([rest[2], rest[3]]);
        let kind = raw & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return Err(DecodeError::Overrun {
                at: policy.at(kind, offset),
            });
        }
        f(Attr {
            kind,
            nested: raw & NLA_F_NESTED != 0,
            offset,
            value: &rest[NLA_HDRLEN..len],
        })?;
        pos += align(len);
    }
    Ok(())
}

/// The validated attributes of one nest, filed by type.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    policy: &'static Policy,
    slots: [Option<Attr<'a>>; MAX_ATTRS],
    ctx: Ctx,
    depth: usize,
    nest_offset: Option<u32>,
}

impl<'a> Table<'a> {
    /// Parses and validates the top-level attributes of a message (`bytes` starts `base` bytes
    /// after the message's `nlmsghdr`).
    ///
    /// # Errors
    /// The first malformed attribute found, anywhere in the tree.
    pub fn parse(
        policy: &'static Policy,
        bytes: &'a [u8],
        base: u32,
        ctx: Ctx,
    ) -> Result<Self, DecodeError> {
        Self::parse_at(policy, bytes, base, ctx, 1, None)
    }

    fn parse_at(
        policy: &'static Policy,
        bytes: &'a [u8],
        base: u32,
        ctx: Ctx,
        depth: usize,
        nest_offset: Option<u32>,
    ) -> Result<Self, DecodeError> {
        let mut slots = [None; MAX_ATTRS];
        walk(bytes, base, ctx, policy, |a| {
            match policy.spec(a.kind) {
                Some(spec) => {
                    check(policy, spec.name, &spec.ty, a, ctx, depth)?;
                    // A repeated attribute: the last one counts, as in nla_parse.
                    slots[usize::from(a.kind) - 1] = Some(a);
                }
                None if ctx.strict => {
                    return Err(DecodeError::UnknownAttr {
                        at: policy.at(a.kind, a.offset),
                    });
                }
                None if a.nested => skim(policy, a, ctx, depth)?,
                None => {}
            }
            Ok(())
        })?;
        Ok(Self {
            policy,
            slots,
            ctx,
            depth,
            nest_offset,
        })
    }

    /// The attribute of type `kind`, if present.
    pub fn get(&self, kind: u16) -> Option<Attr<'a>> {
        *self.slots.get(usize::from(kind).checked_sub(1)?)?
    }

    /// The decoding options.
    pub fn ctx(&self) -> Ctx {
        self.ctx
    }

    /// The policy.
    pub fn policy(&self) -> &'static Policy {
        self.policy
    }

    /// The error for a missing required attribute.
    pub fn missing(&self, kind: u16) -> DecodeError {
        DecodeError::Missing {
            nest: self.policy.name,
            name: self.policy.name_of(kind),
            kind,
            nest_offset: self.nest_offset,
        }
    }

    /// Names an attribute of this table in an error.
    pub fn at(&self, a: &Attr<'_>) -> AttrRef {
        self.policy.at(a.kind, a.offset)
    }

    /// Strict checking: refuses any attribute present whose type is not in `kinds` (the ones a
    /// request uses). Lax: nothing.
    ///
    /// # Errors
    /// [`DecodeError::NotAllowed`] with the first such attribute.
    pub fn only(&self, kinds: &[u16]) -> Result<(), DecodeError> {
        if !self.ctx.strict {
            return Ok(());
        }
        match self
            .slots
            .iter()
            .flatten()
            .find(|a| !kinds.contains(&a.kind))
        {
            Some(a) => Err(DecodeError::NotAllowed { at: self.at(a) }),
            None => Ok(()),
        }
    }

    /// The table of a nested attribute of this one (already validated by [`Table::parse`]).
    ///
    /// # Errors
    /// Those of [`Table::parse`] (none for an attribute of a validated table).
    pub fn sub(&self, a: Attr<'a>, policy: &'static Policy) -> Result<Table<'a>, DecodeError> {
        Self::parse_at(
            policy,
            a.value,
            a.offset + NLA_HDRLEN as u32,
            self.ctx,
            self.depth + 1,
            Some(a.offset),
        )
    }

    /// The entries of an array attribute of this one (already validated).
    pub fn entries(&self, a: Attr<'a>) -> Entries<'a> {
        Entries {
            rest: a.value,
            offset: a.offset + NLA_HDRLEN as u32,
        }
    }

    /// A view of this table one level down, for reading array entries with their own
    /// policy (an array of nests) or as scalars.
    fn entry_scope(&self, a: &Attr<'a>) -> Table<'a> {
        Table {
            policy: self.policy,
            slots: [None; MAX_ATTRS],
            ctx: self.ctx,
            depth: self.depth + 1,
            nest_offset: Some(a.offset),
        }
    }
}

/// The entries of an array attribute, in order; see [`Table::entries`].
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
    offset: u32,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        let b = self.rest;
        let len = usize::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
        let raw = u16::from_ne_bytes([*b.get(2)?, *b.get(3)?]);
        let value = b.get(NLA_HDRLEN..len)?;
        let a = Attr {
            kind: raw & NLA_TYPE_MASK,
            nested: raw & NLA_F_NESTED != 0,
            offset: self.offset,
            value,
        };
        let step = align(len).min(b.len());
        self.rest = &b[step..];
        self.offset += step as u32;
        Some(a)
    }
}

/// Checks one known attribute against its type.
fn check(
    policy: &'static Policy,
    name: &'static str,
    ty: &AttrType,
    a: Attr<'_>,
    ctx: Ctx,
    depth: usize,
) -> Result<(), DecodeError> {
    let at = AttrRef {
        nest: policy.name,
        name,
        kind: a.kind,
        offset: a.offset,
    };
    let len = a.value.len();
    let size = |ok: bool, need: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(DecodeError::Size {
                at,
                len: len as u16,
                need,
            })
        }
    };
    match ty {
        AttrType::U8 => size(len == 1, "1 byte"),
        AttrType::U16 => size(len == 2, "2 bytes"),
        AttrType::U32 | AttrType::I32 => size(len == 4, "4 bytes"),
        AttrType::U64 => size(len == 8, "8 bytes"),
        AttrType::Flag => size(len == 0, "0 bytes"),
        AttrType::Bytes(max) => size(len <= usize::from(*max), "at most its maximum"),
        AttrType::Mac => size(len == 6, "6 bytes"),
        AttrType::Ip => size(len == 4 || len == 16, "4 or 16 bytes"),
        AttrType::Str(max) => str_value(a.value, *max)
            .map(|_| ())
            .map_err(|why| DecodeError::BadString { at, why }),
        AttrType::Nested(p) => {
            nest_ok(at, a, ctx, depth)?;
            Table::parse_at(
                p,
                a.value,
                a.offset + NLA_HDRLEN as u32,
                ctx,
                depth + 1,
                Some(a.offset),
            )
            .map(|_| ())
        }
        AttrType::Array(entry) => {
            nest_ok(at, a, ctx, depth)?;
            walk(a.value, a.offset + NLA_HDRLEN as u32, ctx, policy, |e| {
                if e.kind != 1 {
                    return Err(DecodeError::BadValue {
                        at: AttrRef {
                            nest: policy.name,
                            name,
                            kind: e.kind,
                            offset: e.offset,
                        },
                        why: "array entries must have type 1",
                    });
                }
                check(policy, name, entry, e, ctx, depth + 1)
            })
        }
    }
}

fn nest_ok(at: AttrRef, a: Attr<'_>, ctx: Ctx, depth: usize) -> Result<(), DecodeError> {
    if depth >= MAX_DEPTH {
        return Err(DecodeError::TooDeep { at });
    }
    if ctx.strict && !a.nested {
        return Err(DecodeError::NotNested { at });
    }
    Ok(())
}

/// Walks an unknown nested attribute for its structure only (lax mode): overruns and depth
/// are checked everywhere, whatever the policy knows.
fn skim(policy: &'static Policy, a: Attr<'_>, ctx: Ctx, depth: usize) -> Result<(), DecodeError> {
    nest_ok(policy.at(a.kind, a.offset), a, ctx, depth)?;
    walk(a.value, a.offset + NLA_HDRLEN as u32, ctx, policy, |c| {
        if c.nested {
            skim(policy, c, ctx, depth + 1)?;
        }
        Ok(())
    })
}

/// A string attribute's text: one trailing NUL stripped, no NUL inside, UTF-8, at most `max`
/// bytes.
fn str_value(v: &[u8], max: u16) -> Result<&str, &'static str> {
    let v = v.strip_suffix(&[0]).unwrap_or(v);
    if v.contains(&0) {
        return Err("string contains a NUL byte");
    }
    if v.len() > usize::from(max) {
        return Err("string too long");
    }
    std::str::from_utf8(v).map_err(|_| "string is not UTF-8")
}

/// A value that is one attribute: written with [`Value::put`], read with [`Value::take`] from
/// an attribute of a validated [`Table`].
pub trait Value: Sized {
    /// Writes the value as attribute `kind`.
    ///
    /// # Errors
    /// [`Full`] when it does not fit.
    fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full>;

    /// Reads the value of attribute `a` of table `t`.
    ///
    /// # Errors
    /// The value is malformed for the type (sizes are checked by the policy already; enums and
    /// nested records can still refuse).
    fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError>;
}

fn fixed<const N: usize>(t: &Table<'_>, a: &Attr<'_>) -> Result<[u8; N], DecodeError> {
    a.value.try_into().map_err(|_| DecodeError::Size {
        at: t.at(a),
        len: a.value.len() as u16,
        need: "a fixed size",
    })
}

macro_rules! int_value {
    ($($t:ty => $put:ident),*) => {$(
        impl Value for $t {
            fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full> {
                e.$put(kind, *self)
            }
            fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_ne_bytes(fixed(t, &a)?))
            }
        }
    )*};
}
int_value!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, i32 => i32);

/// `bool` is a `u8`: 0 or 1 on the wire, any non-zero value read as true.
impl Value for bool {
    fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full> {
        e.u8(kind, u8::from(*self))
    }
    fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError> {
        Ok(u8::take(t, a)? != 0)
    }
}

impl Value for String {
    fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full> {
        e.str(kind, self)
    }
    fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError> {
        str_value(a.value, u16::MAX)
            .map(str::to_owned)
            .map_err(|why| DecodeError::BadString { at: t.at(&a), why })
    }
}

impl Value for IpAddr {
    fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full> {
        e.ip(kind, *self)
    }
    fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError> {
        match a.value.len() {
            4 => Ok(IpAddr::from(fixed::<4>(t, &a)?)),
            _ => Ok(IpAddr::from(fixed::<16>(t, &a)?)),
        }
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Value for Mac {
    fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full> {
        e.attr(kind, &self.0)
    }
    fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError> {
        Ok(Self(fixed(t, &a)?))
    }
}

/// A list: a nest of entries of type 1.
impl<T: Value> Value for Vec<T> {
    fn put(&self, e: &mut Encoder<'_>, kind: u16) -> Result<(), Full> {
        e.nested(kind, |e| self.iter().try_for_each(|v| v.put(e, 1)))
    }
    fn take(t: &Table<'_>, a: Attr<'_>) -> Result<Self, DecodeError> {
        let scope = t.entry_scope(&a);
        t.entries(a).map(|e| T::take(&scope, e)).collect()
    }
}

/// The typed content of a nest (or of a message's top level): which policy it follows, which
/// of that policy's attributes it uses, how it is written and read. `record!` implements it.
pub trait Body: Sized {
    /// The nest's policy.
    const POLICY: &'static Policy;
    /// The attribute types this body reads (strict checking refuses others).
    const KINDS: &'static [u16];

    /// Writes the attributes.
    ///
    /// # Errors
    /// [`Full`] when they do not fit.
    fn emit(&self, e: &mut Encoder<'_>) -> Result<(), Full>;

    /// Reads the attributes of a validated table.
    ///
    /// # Errors
    /// A required attribute is missing, or a value is out of range.
    fn read(t: &Table<'_>) -> Result<Self, DecodeError>;

    /// Parses and reads a body from raw attribute bytes starting `base` bytes into the message.
    ///
    /// # Errors
    /// Any malformed attribute, a missing one, or (strict) one this body does not use.
    fn decode(bytes: &[u8], base: u32, ctx: Ctx) -> Result<Self, DecodeError> {
        let t = Table::parse(Self::POLICY, bytes, base, ctx)?;
        t.only(Self::KINDS)?;
        Self::read(&t)
    }
}

/// Reads a nested body from attribute `a` of `t`.
///
/// # Errors
/// Those of the body.
pub fn take_body<B: Body>(t: &Table<'_>, a: Attr<'_>) -> Result<B, DecodeError> {
    let sub = t.sub(a, B::POLICY)?;
    sub.only(B::KINDS)?;
    B::read(&sub)
}

pub(crate) use super::macros::{policy, record, wire_enum};
