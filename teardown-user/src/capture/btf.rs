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
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs for tests, type by type.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Builder {
                types: vec![],
                strings: vec![0],
                next_id: 1,
            }
        }
        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn header(&mut self, name: &str, kind: u32, vlen: u32, flag: bool, size: u32) -> u32 {
            let name = self.name(name);
            let info = (kind << 24) | vlen | if flag { 1 << 31 } else { 0 };
            for v in [name, info, size] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.header(name, KIND_INT, 0, false, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }
        pub fn enumeration(&mut self, name: &str, variants: &[(&str, u32)]) -> u32 {
            let id = self.header(name, KIND_ENUM, variants.len() as u32, false, 4);
            for &(variant, value) in variants {
                let name = self.name(variant);
                self.types.extend_from_slice(&name.to_le_bytes());
                self.types.extend_from_slice(&value.to_le_bytes());
            }
            id
        }
        pub fn typedef(&mut self, name: &str, target: u32) -> u32 {
            self.header(name, KIND_TYPEDEF, 0, false, target)
        }
        pub fn array(&mut self, elem: u32, count: u32) -> u32 {
            let id = self.header("", KIND_ARRAY, 0, false, 0);
            for v in [elem, elem, count] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            id
        }
        /// Members as (name, type, bit offset, bit-field size).
        pub fn aggregate(
            &mut self,
            name: &str,
            union: bool,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kind = if union { KIND_UNION } else { KIND_STRUCT };
            let flag = members.iter().any(|m| m.3 != 0);
            let id = self.header(name, kind, members.len() as u32, flag, size);
            for &(member, ty, bits, bitfield) in members {
                let name = self.name(member);
                let offset = if flag { bits | (bitfield << 24) } else { bits };
                for v in [name, ty, offset] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }
        /// `typedef void (*btf_trace_<name>)(void *, params...)`, as the kernel declares
        /// every tracepoint.
        pub fn tracepoint(&mut self, name: &str, params: &[u32]) -> u32 {
            let proto = self.header("", KIND_FUNC_PROTO, params.len() as u32 + 1, false, 0);
            for &p in [0].iter().chain(params) {
                self.types.extend_from_slice(&0u32.to_le_bytes());
                self.types.extend_from_slice(&p.to_le_bytes());
            }
            let pointer = self.header("", 2, 0, false, proto);
            self.typedef(&format!("btf_trace_{name}"), pointer)
        }
        pub fn build(&self) -> Vec<u8> {
            let mut out = vec![0x9f, 0xeb, 1, 0];
            let fields = [
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for v in fields {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature `struct sock` with the same nesting as the kernel's.
    pub fn mini_kernel() -> Vec<u8> {
        let mut b = Builder::new();
        let u16_ = b.int("unsigned short", 2);
        let u32_ = b.int("unsigned int", 4);
        let be32 = b.typedef("__be32", u32_);
        let u8_ = b.int("unsigned char", 1);
        let addr6 = b.array(u8_, 16);
        let long_ = b.int("unsigned long", 8);
        b.enumeration("sock_flags", &[("SOCK_DEAD", 0), ("SOCK_DONE", 1)]);
        let flags_union = b.aggregate("", true, 8, &[("skc_flags", long_, 0, 0)]);
        let net_ptr = b.int("struct net *", 8);
        let possible = b.aggregate("", false, 8, &[("net", net_ptr, 0, 0)]);
        let possible_net = b.typedef("possible_net_t", possible);
        let ns_common = b.aggregate("ns_common", false, 32, &[("inum", u32_, 8 * 20, 0)]);
        b.aggregate("net", false, 256, &[("ns", ns_common, 0, 0)]);
        let pair = b.aggregate(
            "",
            false,
            8,
            &[("skc_daddr", be32, 0, 0), ("skc_rcv_saddr", be32, 32, 0)],
        );
        let addr_union = b.aggregate(
            "",
            true,
            8,
            &[("skc_addrpair", u32_, 0, 0), ("", pair, 0, 0)],
        );
        let ports = b.aggregate(
            "",
            false,
            4,
            &[("skc_dport", u16_, 0, 0), ("skc_num", u16_, 16, 0)],
        );
        let port_union = b.aggregate(
            "",
            true,
            4,
            &[("skc_portpair", u32_, 0, 0), ("", ports, 0, 0)],
        );
        let common = b.aggregate(
            "sock_common",
            false,
            72,
            &[
                ("", addr_union, 0, 0),
                ("", port_union, 96, 0),
                ("skc_family", u16_, 128, 0),
                ("skc_state", u8_, 144, 0),
                ("", flags_union, 192, 0),
                ("skc_net", possible_net, 512, 0),
                ("skc_v6_daddr", addr6, 256, 0),
                ("skc_v6_rcv_saddr", addr6, 384, 0),
            ],
        );
        let sock = b.aggregate(
            "sock",
            false,
            600,
            &[
                ("__sk_common", common, 0, 0),
                ("sk_protocol", u16_, 4128, 0),
                ("sk_shutdown", u8_, 4144, 0),
            ],
        );
        b.aggregate(
            "inet_sock",
            false,
            700,
            &[("sk", sock, 0, 0), ("inet_sport", u16_, 8 * 640, 0)],
        );
        let long = b.int("long", 8);
        b.aggregate("task_struct", false, 4096, &[("files", long, 8 * 2000, 0)]);
        b.aggregate("files_struct", false, 64, &[("fdt", long, 8 * 32, 0)]);
        b.aggregate(
            "fdtable",
            false,
            16,
            &[("max_fds", u32_, 0, 0), ("fd", long, 64, 0)],
        );
        b.aggregate("file", false, 256, &[("private_data", long, 8 * 200, 0)]);
        b.aggregate("socket", false, 64, &[("sk", long, 8 * 24, 0)]);
        let cb = b.array(u8_, 48);
        b.aggregate("sk_buff", false, 232, &[("cb", cb, 8 * 40, 0)]);
        b.aggregate(
            "tcp_skb_cb",
            false,
            48,
            &[("seq", u32_, 0, 0), ("tcp_flags", u16_, 8 * 12, 0)],
        );
        let icsk_ack = b.aggregate(
            "",
            false,
            12,
            &[("pending", u8_, 0, 0), ("pingpong", u8_, 16, 0)],
        );
        b.aggregate(
            "inet_connection_sock",
            false,
            1400,
            &[("icsk_ack", icsk_ack, 8 * 1300, 0)],
        );
        b.aggregate(
            "tcp_sock",
            false,
            2000,
            &[
                ("snd_una", u32_, 8 * 1500, 0),
                ("snd_nxt", u32_, 8 * 1504, 0),
                ("write_seq", u32_, 8 * 1600, 0),
                ("rcv_nxt", u32_, 8 * 1700, 0),
            ],
        );
        b.enumeration(
            "inet_csk_ack_state_t",
            &[("ICSK_ACK_SCHED", 1), ("ICSK_ACK_TIMER", 2)],
        );
        b.tracepoint("tcp_send_reset", &[long, long, u32_]);
        b.build()
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&mini_kernel()).unwrap();
        let field = |path| btf.field("sock", path).unwrap();
        assert_eq!(field("__sk_common.skc_daddr"), Field { offset: 0, size: 4 });
        assert_eq!(
            field("__sk_common.skc_rcv_saddr"),
            Field { offset: 4, size: 4 }
        );
        assert_eq!(
            field("__sk_common.skc_dport"),
            Field {
                offset: 12,
                size: 2
            }
        );
        assert_eq!(
            field("__sk_common.skc_num"),
            Field {
                offset: 14,
                size: 2
            }
        );
        assert_eq!(
            field("__sk_common.skc_family"),
            Field {
                offset: 16,
                size: 2
            }
        );
        assert_eq!(
            field("__sk_common.skc_v6_rcv_saddr"),
            Field {
                offset: 48,
                size: 16
            }
        );
        assert_eq!(
            field("sk_protocol"),
            Field {
                offset: 516,
                size: 2
            }
        );
    }

    #[test]
    fn reads_enum_values() {
        let btf = Btf::parse(&mini_kernel()).unwrap();
        assert_eq!(btf.enum_value("sock_flags", "SOCK_DONE"), Ok(1));
        assert_eq!(
            btf.enum_variants("sock_flags").unwrap(),
            vec![("SOCK_DEAD", 0), ("SOCK_DONE", 1)]
        );
        assert!(matches!(
            btf.enum_value("sock_flags", "SOCK_NOPE"),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn counts_tracepoint_arguments() {
        let btf = Btf::parse(&mini_kernel()).unwrap();
        assert_eq!(btf.tracepoint_arg_count("tcp_send_reset"), Ok(3));
        assert_eq!(
            btf.tracepoint_arg_count("tcp_nope"),
            Err(BtfError::Missing("tracepoint tcp_nope".into()))
        );
    }

    #[test]
    fn missing_things_are_named() {
        let btf = Btf::parse(&mini_kernel()).unwrap();
        assert_eq!(
            btf.field("sock", "__sk_common.skc_nope")
                .unwrap_err()
                .to_string(),
            "BTF has no struct sock.__sk_common.skc_nope"
        );
        assert!(matches!(
            btf.field("inet_sock", "x"),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn bit_fields_are_refused() {
        let mut b = Builder::new();
        let u8_ = b.int("u8", 1);
        b.aggregate("sock", false, 8, &[("sk_protocol", u8_, 8, 8)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(
            btf.field("sock", "sk_protocol"),
            Err(BtfError::BitField(_))
        ));
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let good = mini_kernel();
        assert_eq!(Btf::parse(b"nope").err(), Some(BtfError::BadHeader));
        for cut in [24, 30, 100, good.len() - 3] {
            let mut bytes = good[..cut].to_vec();
            // Keep the header's claims, lose the data.
            bytes.resize(cut, 0);
            assert!(Btf::parse(&bytes).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn reads_the_running_kernel_when_there_is_one() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.field("sock", "__sk_common.skc_family").unwrap().size, 2);
        assert_eq!(btf.tracepoint_arg_count("inet_sock_set_state").unwrap(), 3);
    }
}
