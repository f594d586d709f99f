//! Tests of the BTF reader, on blobs built type by type and on the running kernel's.
//! `Builder` and `mini_kernel` are shared with the other capture tests.

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
            ("sk_socket", long_, 8 * 520, 0),
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
    b.aggregate(
        "file",
        false,
        256,
        &[
            ("f_inode", long, 8 * 32, 0),
            ("private_data", long, 8 * 200, 0),
        ],
    );
    b.aggregate(
        "socket",
        false,
        64,
        &[("file", long, 8 * 16, 0), ("sk", long, 8 * 24, 0)],
    );
    b.aggregate("inode", false, 128, &[("i_ino", long_, 8 * 64, 0)]);
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
            ("tcp_clock_cache", long, 8 * 1800, 0),
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
