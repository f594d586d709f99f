//! Just enough of a BTF reader to take kernel layouts from the running kernel instead of
//! compiling them in: member offsets inside structs (through anonymous unions and structs)
//! and the number of arguments of a function.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>. Pure: works on bytes, tested on host.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF data is truncated or corrupt at byte {0}")]
    Corrupt(usize),
    #[error("BTF has no {0}")]
    Missing(String),
    #[error("BTF field {0} is a bit-field; this kernel is too old for teardown")]
    BitField(String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Where the kind-specific data (members, params) starts in `Btf::types`.
    data: usize,
}

/// A parsed BTF blob (for example `/sys/kernel/btf/vmlinux`).
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Index 0 is BTF's `void`.
    entries: Vec<Type>,
    /// Named structs, enums and typedefs only: all this reader looks up by name.
    by_name: HashMap<(u32, Box<str>), u32>,
}

/// Where a member lives inside its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or(BtfError::Corrupt(at))
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off: usize, len: usize| -> Result<Vec<u8>, BtfError> {
            let start = hdr_len + u32_at(data, off)? as usize;
            let len = u32_at(data, len)? as usize;
            data.get(start..start + len)
                .map(<[u8]>::to_vec)
                .ok_or(BtfError::Corrupt(start))
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut btf = Btf {
            types,
            strings,
            entries: vec![Type {
                kind: 0,
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
                data: 0,
            }],
            by_name: HashMap::new(),
        };
        btf.index()?;
        Ok(btf)
    }

    fn index(&mut self) -> Result<(), BtfError> {
        let mut at = 0;
        while at < self.types.len() {
            let name_off = u32_at(&self.types, at)?;
            let info = u32_at(&self.types, at + 4)?;
            let size_or_type = u32_at(&self.types, at + 8)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let data = at + 12;
            let extra = match kind {
                KIND_INT | 14 | 17 => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | 15 | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
                | 16 | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Corrupt(at)),
            };
            let id = self.entries.len() as u32;
            self.entries.push(Type {
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                data,
            });
            if matches!(kind, KIND_STRUCT | KIND_ENUM | KIND_TYPEDEF) && name_off != 0 {
                let name = self.string(name_off)?.into();
                self.by_name.entry((kind, name)).or_insert(id);
            }
            at = data + extra;
            if at > self.types.len() {
                return Err(BtfError::Corrupt(data));
            }
        }
        Ok(())
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let start = off as usize;
        let rest = self.strings.get(start..).ok_or(BtfError::Corrupt(start))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::Corrupt(start))?;
        std::str::from_utf8(&rest[..end]).map_err(|_| BtfError::Corrupt(start))
    }

    fn entry(&self, id: u32) -> Result<Type, BtfError> {
        self.entries
            .get(id as usize)
            .copied()
            .ok_or(BtfError::Corrupt(id as usize))
    }

    /// Follows typedefs and qualifiers to the type that has a size.
    fn resolve(&self, mut id: u32) -> Result<Type, BtfError> {
        for _ in 0..32 {
            let ty = self.entry(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Ok(ty),
            }
        }
        Err(BtfError::Corrupt(id as usize))
    }

    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let ty = self.resolve(id)?;
        match ty.kind {
            KIND_ARRAY => {
                let elem = u32_at(&self.types, ty.data)?;
                let count = u32_at(&self.types, ty.data + 8)?;
                Ok(self.size_of(elem)? * count)
            }
            // INT, ENUM, STRUCT, UNION, ENUM64 carry their size; pointers are 8 bytes.
            2 => Ok(8),
            _ => Ok(ty.size_or_type),
        }
    }

    /// Finds `name` among the members of `ty`, looking inside anonymous members too.
    /// Returns the member's byte offset inside `ty` and its type id.
    fn find_member(
        &self,
        ty: Type,
        name: &str,
        path: &str,
    ) -> Result<Option<(u32, u32)>, BtfError> {
        for i in 0..ty.vlen as usize {
            let at = ty.data + 12 * i;
            let member_name = u32_at(&self.types, at)?;
            let member_type = u32_at(&self.types, at + 4)?;
            let raw_offset = u32_at(&self.types, at + 8)?;
            let (bit_offset, bit_size) = if ty.kind_flag {
                (raw_offset & 0xff_ffff, raw_offset >> 24)
            } else {
                (raw_offset, 0)
            };
            if member_name == 0 {
                let inner = self.resolve(member_type)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                    if let Some((off, id)) = self.find_member(inner, name, path)? {
                        return Ok(Some((bit_offset / 8 + off, id)));
                    }
                }
            } else if self.string(member_name)? == name {
                if bit_size != 0 || bit_offset % 8 != 0 {
                    return Err(BtfError::BitField(path.into()));
                }
                return Ok(Some((bit_offset / 8, member_type)));
            }
        }
        Ok(None)
    }

    /// Offset and size of `path` (dotted member names, anonymous members skipped) inside
    /// `struct strukt`, e.g. `field("sock", "__sk_common.skc_family")`.
    pub fn field(&self, strukt: &str, path: &str) -> Result<Field, BtfError> {
        let full = format!("struct {strukt}.{path}");
        let &id = self
            .by_name
            .get(&(KIND_STRUCT, strukt.into()))
            .ok_or_else(|| BtfError::Missing(format!("struct {strukt}")))?;
        let mut ty = self.entry(id)?;
        let mut offset = 0;
        let mut member_type = id;
        for name in path.split('.') {
            if !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
                return Err(BtfError::Missing(full));
            }
            let (off, id) = self
                .find_member(ty, name, &full)?
                .ok_or_else(|| BtfError::Missing(full.clone()))?;
            offset += off;
            member_type = id;
            ty = self.resolve(id)?;
        }
        Ok(Field {
            offset,
            size: self.size_of(member_type)?,
        })
    }

    /// The size of `struct strukt` in bytes.
    pub fn struct_size(&self, strukt: &str) -> Result<u32, BtfError> {
        let &id = self
            .by_name
            .get(&(KIND_STRUCT, strukt.into()))
            .ok_or_else(|| BtfError::Missing(format!("struct {strukt}")))?;
        self.size_of(id)
    }

    /// The variants of `enum name` with their values.
    pub fn enum_variants(&self, name: &str) -> Result<Vec<(&str, u32)>, BtfError> {
        let &id = self
            .by_name
            .get(&(KIND_ENUM, name.into()))
            .ok_or_else(|| BtfError::Missing(format!("enum {name}")))?;
        let ty = self.entry(id)?;
        (0..ty.vlen as usize)
            .map(|i| {
                let at = ty.data + 8 * i;
                Ok((
                    self.string(u32_at(&self.types, at)?)?,
                    u32_at(&self.types, at + 4)?,
                ))
            })
            .collect()
    }

    /// The value of `variant` in `enum name`.
    pub fn enum_value(&self, name: &str, variant: &str) -> Result<u32, BtfError> {
        self.enum_variants(name)?
            .into_iter()
            .find_map(|(v, value)| (v == variant).then_some(value))
            .ok_or_else(|| BtfError::Missing(format!("enum {name}.{variant}")))
    }

    /// The number of arguments of tracepoint `name` (as a BTF tracepoint program sees them:
    /// `btf_trace_<name>` is a pointer to a prototype whose first parameter is the context).
    pub fn tracepoint_arg_count(&self, name: &str) -> Result<u32, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let &id = self
            .by_name
            .get(&(KIND_TYPEDEF, typedef.as_str().into()))
            .ok_or_else(|| BtfError::Missing(format!("tracepoint {name}")))?;
        let pointer = self.entry(self.entry(id)?.size_or_type)?;
        let proto = self.entry(pointer.size_or_type)?;
        if proto.kind != KIND_FUNC_PROTO || proto.vlen == 0 {
            return Err(BtfError::Corrupt(proto.data));
        }
        Ok(proto.vlen - 1)
    }
}

#[cfg(test)]
pub(crate) mod tests;
