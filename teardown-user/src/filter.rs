//! Which sockets the user asked about. The same filter is pushed into the kernel (so
//! filtered-out traffic costs no ring-buffer bandwidth) and checked again in user space,
//! where it also serves `--replay` and sockets whose owner the kernel did not know yet.

use teardown_common::{filter as bits, kind, Event, Family};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Local or remote port.
    pub ports: Vec<u16>,
    pub lports: Vec<u16>,
    pub rports: Vec<u16>,
    /// Owning processes.
    pub pids: Vec<u32>,
    pub family: Option<Family>,
}

impl Filter {
    /// `Config::filters` bits for the kernel program.
    pub fn kernel_bits(&self) -> u32 {
        let mut flags = 0;
        for (list, bit) in [
            (&self.ports, bits::PORT_ANY),
            (&self.lports, bits::PORT_LOCAL),
            (&self.rports, bits::PORT_REMOTE),
        ] {
            if !list.is_empty() {
                flags |= bit;
            }
        }
        if !self.pids.is_empty() {
            flags |= bits::PID;
        }
        flags |= match self.family {
            Some(Family::Ipv4) => bits::IPV4_ONLY,
            Some(Family::Ipv6) => bits::IPV6_ONLY,
            None => 0,
        };
        flags
    }

    /// The kernel's `PORTS` map: port → the `PORT_*` roles it may play.
    pub fn port_roles(&self) -> Vec<(u16, u32)> {
        let mut roles: Vec<(u16, u32)> = Vec::new();
        for (list, bit) in [
            (&self.ports, bits::PORT_ANY),
            (&self.lports, bits::PORT_LOCAL),
            (&self.rports, bits::PORT_REMOTE),
        ] {
            for &port in list {
                match roles.iter_mut().find(|(p, _)| *p == port) {
                    Some((_, b)) => *b |= bit,
                    None => roles.push((port, bit)),
                }
            }
        }
        roles
    }

    /// Same rule as the kernel's `ports_allowed` and family check.
    pub fn matches_socket(&self, lport: u16, rport: u16, family: Family) -> bool {
        let any =
            self.ports.is_empty() || self.ports.contains(&lport) || self.ports.contains(&rport);
        let local = self.lports.is_empty() || self.lports.contains(&lport);
        let remote = self.rports.is_empty() || self.rports.contains(&rport);
        any && local && remote && self.family.is_none_or(|f| f == family)
    }

    /// A socket whose owner is still unknown is kept until the owner shows itself.
    pub fn matches_owner(&self, pid: u32) -> bool {
        self.pids.is_empty() || self.pids.contains(&pid)
    }

    /// What the kernel program lets through: the socket matches, and its owner, when known,
    /// is wanted. (`--replay` has no kernel to do it.)
    /// Events about no socket (a namespace gone) always match.
    pub fn matches_event(&self, e: &Event) -> bool {
        e.kind == kind::NAMESPACE_GONE
            || self.matches_socket(e.sport, e.dport, e.family())
                && (e.owner_pid == 0 || self.matches_owner(e.owner_pid))
    }

    /// What a `--raw` stream shows: the events that pass, except that one about no socket
    /// (a namespace gone) is shown only when no socket is filtered for. The reconstruction
    /// still takes it in, for the mini-sockets that ended with the namespace.
    pub fn matches_raw_event(&self, e: &Event) -> bool {
        if e.kind == kind::NAMESPACE_GONE {
            self.is_empty()
        } else {
            self.matches_event(e)
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_bits_follow_the_lists() {
        assert_eq!(Filter::default().kernel_bits(), 0);
        let f = Filter {
            ports: vec![80],
            rports: vec![5432],
            pids: vec![7],
            family: Some(Family::Ipv6),
            ..Default::default()
        };
        assert_eq!(
            f.kernel_bits(),
            bits::PORT_ANY | bits::PORT_REMOTE | bits::PID | bits::IPV6_ONLY
        );
    }

    #[test]
    fn a_port_in_several_lists_gets_every_role() {
        let f = Filter {
            ports: vec![80],
            lports: vec![80, 443],
            ..Default::default()
        };
        assert_eq!(
            f.port_roles(),
            vec![
                (80, bits::PORT_ANY | bits::PORT_LOCAL),
                (443, bits::PORT_LOCAL)
            ]
        );
    }

    #[test]
    fn every_given_port_list_must_match() {
        let f = Filter {
            ports: vec![80],
            rports: vec![9000],
            ..Default::default()
        };
        assert!(f.matches_socket(80, 9000, Family::Ipv4));
        assert!(
            !f.matches_socket(80, 9001, Family::Ipv4),
            "rport must match too"
        );
        assert!(!f.matches_socket(81, 9000, Family::Ipv4));
        let any = Filter {
            ports: vec![80],
            ..Default::default()
        };
        assert!(
            any.matches_socket(40000, 80, Family::Ipv6),
            "-P matches the remote side too"
        );
        let v4 = Filter {
            family: Some(Family::Ipv4),
            ..Default::default()
        };
        assert!(!v4.matches_socket(1, 2, Family::Ipv6));
    }

    #[test]
    fn events_pass_like_in_the_kernel() {
        use crate::testing::ev;
        let f = Filter {
            ports: vec![80],
            pids: vec![7],
            ..Default::default()
        };
        let mut e = ev(0, 1, 80, 9, 1, 4);
        assert!(f.matches_event(&e), "owner not known yet: kept");
        e.owner_pid = 7;
        assert!(f.matches_event(&e));
        e.owner_pid = 8;
        assert!(!f.matches_event(&e));
        assert!(!f.matches_event(&ev(0, 1, 81, 9, 1, 4)));
    }

    #[test]
    fn a_filtered_raw_stream_shows_no_event_about_no_socket() {
        use crate::testing::ev;
        let mut gone = ev(0, 0, 0, 0, 0, 0);
        (gone.kind, gone.family, gone.netns) = (kind::NAMESPACE_GONE, 0, 4_026_532_175);
        let by_port = Filter {
            lports: vec![80],
            ..Default::default()
        };
        assert!(
            by_port.matches_event(&gone),
            "the reconstruction takes it in"
        );
        assert!(!by_port.matches_raw_event(&gone));
        assert!(Filter::default().matches_raw_event(&gone));
        assert!(by_port.matches_raw_event(&ev(0, 1, 80, 9, 1, 4)));
        assert!(!by_port.matches_raw_event(&ev(0, 1, 81, 9, 1, 4)));
    }

    #[test]
    fn owners_match_by_pid() {
        let f = Filter {
            pids: vec![10, 20],
            ..Default::default()
        };
        assert!(f.matches_owner(20));
        assert!(!f.matches_owner(30));
        assert!(Filter::default().matches_owner(30));
    }
}
