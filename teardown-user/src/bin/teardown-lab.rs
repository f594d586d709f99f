//! `teardown-lab`: plays each way a TCP connection can end, between two real processes on
//! the loopback of a private network namespace, so that `teardown-trace` has something to
//! show. The integration tests drive it; so does `cargo xtask bench` (`churn`).
//!
//! The lab process spawns itself twice (`--role server`, `--role client`); both children
//! enter the namespace and talk to the lab over stdin/stdout to stay in step.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use teardown_user::{
    lab,
    signals::{self, StopSignals},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pattern {
    /// The server closes first; the client closes `--delay-ms` after seeing EOF
    ServerCloses,
    /// The client closes first; the server closes `--delay-ms` after seeing EOF
    ClientCloses,
    /// The server shuts down sending but keeps reading; the client closes after the delay
    HalfClose,
    /// Both FINs cross (their first transmissions are dropped by nftables, then released)
    Simultaneous,
    /// The server aborts with SO_LINGER {1, 0}: an RST instead of a FIN
    Reset,
    /// The server closes with unread data in its receive queue: the kernel answers with RST
    ResetUnread,
    /// The client closes; the server never does (until it exits after `--hold-ms`)
    CloseWaitLeak,
    /// The client closes first (shutdown, then close once the server has closed), so its
    /// socket waits in TIME_WAIT; then it connects again from the same port, and the new
    /// connection takes over the TIME_WAIT 4-tuple (the kernel's TIME_WAIT reuse)
    TimeWaitReuse,
    /// The server's first FIN is dropped (nftables) and retransmitted
    LostFin,
    /// The server writes 1 MB to a client that starts reading only after `--delay-ms`, and
    /// closes at once: its FIN is queued behind the data still unsent
    FinBehindData,
    /// Connect, one byte, server closes, client closes: `--count` times, `--concurrency` at once
    Churn,
    /// `--concurrency` server processes (ports `--port` and up) each hold their share of
    /// `--count` connections; all clients close at once, leaving every server socket in
    /// CLOSE_WAIT; the servers close theirs after `--hold-ms`
    Storm,
    /// `--servers` processes each accept `--count` connections and never close them (all in
    /// CLOSE_WAIT) until told on stdin: `close SERVER N` closes N of that server's sockets
    LeakMany,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Server,
    Client,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "teardown-lab",
    about = "Play one way of closing a TCP connection between two processes in a private \
             network namespace (needs root). Run `teardown-trace` alongside to watch it.",
    after_help = "EXAMPLES:\n    teardown-lab half-close          # shutdown(SHUT_WR), peer closes 200 ms later\n    teardown-lab close-wait-leak     # a server that forgets close()\n    teardown-lab churn --count 100000 --concurrency 4"
)]
struct Args {
    #[arg(value_enum)]
    pattern: Pattern,
    /// Server port inside the namespace
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Talk over ::1 instead of 127.0.0.1
    #[arg(long)]
    ipv6: bool,
    /// How long the second closer waits after seeing the first FIN
    #[arg(long, default_value_t = 200)]
    delay_ms: u64,
    /// close-wait-leak: how long the server holds the socket before exiting
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// Existing namespace to use, its loopback brought up (default: a new one, removed
    /// afterwards)
    #[arg(long)]
    netns: Option<String>,
    /// churn, storm: connections in all; leak-many: connections per server
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// churn: connections at once; storm: server processes (and as many clients)
    #[arg(long, default_value_t = 2)]
    concurrency: u64,
    /// leak-many: server processes, on `--port` and the ports after it
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    servers: u16,
    #[arg(long, hide = true)]
    role: Option<Role>,
}

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.role {
        Some(role) => enter_netns(args.netns.as_deref()).and_then(|()| play(role, &args)),
        None => undo_on_stop().and_then(|()| lab(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A Ctrl-C reaches the peers too, and their end may be seen first: the stop
        // signal's thread ends the lab, with its status.
        Err(_) if args.role.is_none() && signals::caught().is_some() => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("teardown-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    lab::run(cmd).map(drop)
}

/// What the conductor would leave if a stop signal ended it.
struct Left {
    /// Peers not reaped yet (a SIGTERM to the conductor alone would leave them running).
    /// A pid is added and removed under the lock with the spawn and the reaping, so the
    /// signal's thread never kills a pid that is no longer a child of ours.
    peers: Vec<u32>,
    /// The namespace the lab made.
    netns: Option<String>,
    /// The namespace where nftables drops FINs for the lab (a user's, with `--netns`).
    fin_drops: Option<String>,
}

static LEFT: Mutex<Left> = Mutex::new(Left {
    peers: Vec::new(),
    netns: None,
    fin_drops: None,
});

fn left() -> std::sync::MutexGuard<'static, Left> {
    LEFT.lock().unwrap_or_else(|e| e.into_inner())
}

const DELETE_FIN_DROPS: &str = "delete table inet teardown_lab";

/// The lab's nftables table, deleted when dropped: a lab that fails or is stopped midway
/// leaves no FIN dropped in a namespace that outlives it.
struct FinDrops(String);

impl FinDrops {
    fn create(netns: &str) -> Result<FinDrops> {
        nft(netns, "add table inet teardown_lab")?;
        left().fin_drops = Some(netns.to_string());
        Ok(FinDrops(netns.to_string()))
    }
}

impl Drop for FinDrops {
    fn drop(&mut self) {
        let _ = nft(&self.0, DELETE_FIN_DROPS);
        left().fin_drops = None;
    }
}

/// On SIGINT, SIGTERM or SIGHUP, the conductor kills its peers, deletes its namespace and
/// exits with 128 + the signal, as a shell reports a process killed by it.
fn undo_on_stop() -> Result<()> {
    let signals = StopSignals::install().map_err(|e| format!("catching signals: {e}"))?;
    std::thread::spawn(move || {
        let mut fd = libc::pollfd {
            fd: signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        while signals.caught().is_none() && unsafe { libc::poll(&mut fd, 1, -1) } <= 0 {}
        let left = left();
        for &pid in &left.peers {
            // SAFETY: kill(2) and waitpid(2) of a child not reaped yet (see `Left`): gone
            // before its namespace is.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
        if let Some(netns) = &left.fin_drops {
            let _ = nft(netns, DELETE_FIN_DROPS);
        }
        if let Some(name) = &left.netns {
            lab::Netns::delete(name);
        }
        std::process::exit(128 + signals.caught().unwrap_or(libc::SIGTERM));
    });
    Ok(())
}

fn enter_netns(name: Option<&str>) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    let file = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(|e| format!("network namespace {name}: {e}"))?;
    // SAFETY: setns on a namespace fd we hold; this process is single-threaded here.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "entering {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn nft(netns: &str, script: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "exec", netns, "nft", script]))
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(role: Role, args: &Args, netns: &str) -> Result<Peer> {
        Self::spawn_on(role, args, netns, args.port)
    }

    fn spawn_on(role: Role, args: &Args, netns: &str, port: u16) -> Result<Peer> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let name = |v: &dyn Fn() -> Option<clap::builder::PossibleValue>| {
            v().map(|p| p.get_name().to_string()).unwrap_or_default()
        };
        let mut left = left();
        let mut child = Command::new(exe)
            .arg(name(&|| args.pattern.to_possible_value()))
            .args([
                "--role",
                &name(&|| role.to_possible_value()),
                "--netns",
                netns,
            ])
            .args([
                "--port",
                &port.to_string(),
                "--delay-ms",
                &args.delay_ms.to_string(),
            ])
            .args([
                "--hold-ms",
                &args.hold_ms.to_string(),
                "--count",
                &args.count.to_string(),
            ])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--servers", &args.servers.to_string()])
            .args(args.ipv6.then_some("--ipv6"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the {role:?}: {e}"))?;
        left.peers.push(child.id());
        drop(left);
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Peer {
            child,
            stdin,
            stdout,
        })
    }

    /// Waits for the peer to say `word`.
    fn expect(&mut self, word: &str) -> Result<()> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() == word {
            Ok(())
        } else {
            Err(format!(
                "expected `{word}` from a peer, got `{}`",
                line.trim()
            ))
        }
    }

    fn say(&mut self, word: &str) -> Result<()> {
        writeln!(self.stdin, "{word}").map_err(|e| e.to_string())
    }

    fn wait(self) -> Result<()> {
        Peer::wait_all(vec![self])
    }

    /// Reaps the peer if it has ended, under the lock that keeps its pid in `Left`.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let mut left = left();
        let status = self.child.try_wait().map_err(|e| e.to_string())?;
        if status.is_some() {
            left.peers.retain(|&pid| pid != self.child.id());
        }
        Ok(status)
    }

    /// Waits for every peer, in whatever order they end. The first to fail ends the lab and
    /// takes the others down (a server left in accept() by a failed client would otherwise
    /// keep it waiting for ever).
    fn wait_all(mut peers: Vec<Peer>) -> Result<()> {
        while !peers.is_empty() {
            let mut ended = None;
            for (i, peer) in peers.iter_mut().enumerate() {
                if let Some(status) = peer.try_wait()? {
                    ended = Some((i, status));
                    break;
                }
            }
            match ended {
                Some((_, status)) if !status.success() => {
                    return Err(format!("a peer failed: {status}"));
                }
                Some((i, _)) => drop(peers.swap_remove(i)),
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Ok(())
    }
}

impl Drop for Peer {
    /// A lab that fails midway takes its peers down with it.
    fn drop(&mut self) {
        let mut left = left();
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        left.peers.retain(|&pid| pid != self.child.id());
    }
}

/// The conductor: namespace, firewall rules, both peers, and a JSON line saying who was who.
fn lab(args: &Args) -> Result<()> {
    let (netns, _own) = match &args.netns {
        Some(name) => {
            // The lab talks over loopback, which a namespace made by `ip netns add` has down.
            lab::Netns::loopback_up(name)?;
            (name.clone(), None)
        }
        None => {
            let name = format!("teardown-lab-{}", std::process::id());
            left().netns = Some(name.clone());
            let own = lab::Netns::create(&name)?;
            (name, Some(own))
        }
    };
    let drops_fins = matches!(args.pattern, Pattern::Simultaneous | Pattern::LostFin);
    let _fin_drops = drops_fins.then(|| FinDrops::create(&netns)).transpose()?;
    if drops_fins {
        // Dropped on the way in: the sender's transmit succeeds, as when a segment is lost
        // on the wire, so TCP retransmits it. (Dropped on the way out, the send fails and
        // TCP sends it again later as a first transmission, not a retransmission.)
        nft(
            &netns,
            "add chain inet teardown_lab lost { type filter hook input priority 0 ; }",
        )?;
    }
    let drop_fins = || {
        for side in ["sport", "dport"] {
            let rule = format!(
                "add rule inet teardown_lab lost tcp {side} {} tcp flags & fin == fin drop",
                args.port
            );
            nft(&netns, &rule)?;
        }
        Ok::<(), String>(())
    };
    let release_fins = || nft(&netns, "flush chain inet teardown_lab lost");

    match args.pattern {
        Pattern::Storm => return storm(args, &netns),
        Pattern::LeakMany => return leak_many_lab(args, &netns),
        _ => {}
    }
    let mut server = Peer::spawn(Role::Server, args, &netns)?;
    server.expect("listening")?;
    let mut client = Peer::spawn(Role::Client, args, &netns)?;
    println!(
        "{{\"pattern\":\"{:?}\",\"netns\":\"{netns}\",\"port\":{},\"server_pid\":{},\"client_pid\":{}}}",
        args.pattern,
        args.port,
        server.child.id(),
        client.child.id()
    );
    let _ = std::io::stdout().flush();
    match args.pattern {
        Pattern::Simultaneous => {
            server.expect("established")?;
            client.expect("established")?;
            drop_fins()?;
            server.say("go")?;
            client.say("go")?;
            server.expect("shut")?;
            client.expect("shut")?;
            release_fins()?;
        }
        Pattern::LostFin => {
            server.expect("established")?;
            drop_fins()?;
            server.say("go")?;
            server.expect("shut")?;
            std::thread::sleep(Duration::from_millis(50));
            release_fins()?;
        }
        Pattern::Churn => {
            // Relay the client's measurement, then stop the server, which may still be
            // waiting for connections that failed.
            let mut line = String::new();
            io(
                "reading the churn result",
                client.stdout.read_line(&mut line),
            )?;
            print!("{line}");
            let result = client.wait();
            return result;
        }
        _ => {}
    }
    Peer::wait_all(vec![server, client])
}

/// The storm's conductor: every pair connected, then every client closes at once.
fn storm(args: &Args, netns: &str) -> Result<()> {
    let processes = args.concurrency.clamp(1, 64) as u16;
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    // Every server listens before any client takes an ephemeral port that a server wants.
    for i in 0..processes {
        let mut server = Peer::spawn_on(Role::Server, args, netns, args.port + i)?;
        server.expect("listening")?;
        servers.push(server);
    }
    for i in 0..processes {
        clients.push(Peer::spawn_on(Role::Client, args, netns, args.port + i)?);
    }
    for peer in clients.iter_mut().chain(&mut servers) {
        peer.expect("connected")?;
    }
    let pids = |peers: &[Peer]| {
        let pids: Vec<String> = peers.iter().map(|p| p.child.id().to_string()).collect();
        pids.join(",")
    };
    println!(
        "{{\"pattern\":\"Storm\",\"netns\":\"{netns}\",\"port\":{},\"server_pid\":{},\"client_pid\":{},\"server_pids\":[{}],\"client_pids\":[{}]}}",
        args.port,
        servers[0].child.id(),
        clients[0].child.id(),
        pids(&servers),
        pids(&clients)
    );
    let _ = std::io::stdout().flush();
    for peer in clients.iter_mut().chain(&mut servers) {
        peer.say("go")?;
    }
    Peer::wait_all(clients.into_iter().chain(servers).collect())
}

/// One storm process: its share of the connections, held until the clients close.
fn storm_peer(role: Role, args: &Args, addr: SocketAddr) -> Result<()> {
    let share = args.count / args.concurrency.clamp(1, 64);
    raise_fd_limit(share + 64)?;
    let mut held = Vec::with_capacity(share as usize);
    match role {
        Role::Server => {
            let listener = io("listening", TcpListener::bind(addr))?;
            say("listening");
            while (held.len() as u64) < share {
                held.push(io("accepting", listener.accept())?.0);
            }
            say("connected");
            // The clients close all at once: every socket here goes to CLOSE_WAIT (its
            // read sees the client's FIN) and stays there until this process exits,
            // `--hold-ms` after the last FIN came.
            wait_for_go()?;
            for s in &mut held {
                until_eof(s)?;
            }
            std::thread::sleep(Duration::from_millis(args.hold_ms));
        }
        Role::Client => {
            while (held.len() as u64) < share {
                held.push(io("connecting", TcpStream::connect(addr))?);
            }
            say("connected");
            wait_for_go()?;
        }
    }
    drop(held);
    Ok(())
}

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Tells the lab something; if the lab has gone, there is nobody left to tell.
fn say(word: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{word}").and_then(|()| out.flush());
}

fn wait_for_go() -> Result<()> {
    let mut line = String::new();
    io("waiting for the lab", std::io::stdin().read_line(&mut line))?;
    Ok(())
}

/// Reads until the peer's FIN (EOF) and returns; any reset is an error.
/// A connection to `to` from `from`, its local address bound first with SO_REUSEADDR.
fn connect_from(from: SocketAddr, to: SocketAddr) -> Result<TcpStream> {
    let runtime = io(
        "starting tokio",
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build(),
    )?;
    let stream = runtime.block_on(async {
        let socket = match from {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }?;
        socket.set_reuseaddr(true)?;
        socket.bind(from)?;
        socket.connect(to).await?.into_std()
    });
    let stream = io(&format!("connecting from {from}"), stream)?;
    io("blocking", stream.set_nonblocking(false))?;
    Ok(stream)
}

fn until_eof(s: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 64];
    while io("reading", s.read(&mut buf))? > 0 {}
    Ok(())
}

fn set_linger_zero(s: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a correctly sized linger struct on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    (rc == 0)
        .then_some(())
        .ok_or_else(|| std::io::Error::last_os_error().to_string())
}

fn set_int(s: &TcpStream, option: libc::c_int, value: libc::c_int) -> Result<()> {
    // SAFETY: setsockopt with an int on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    (rc == 0)
        .then_some(())
        .ok_or_else(|| std::io::Error::last_os_error().to_string())
}

fn play(role: Role, args: &Args) -> Result<()> {
    let addr = if args.ipv6 {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, args.port))
    } else {
        SocketAddr::from(([127, 0, 0, 1], args.port))
    };
    let delay = Duration::from_millis(args.delay_ms);
    match args.pattern {
        Pattern::Churn => return churn(role, args, addr),
        Pattern::Storm => return storm_peer(role, args, addr),
        Pattern::LeakMany => return leak_many(role, args, addr),
        _ => {}
    }
    let listener = match role {
        Role::Server => {
            let listener = io("listening", TcpListener::bind(addr))?;
            say("listening");
            Some(listener)
        }
        Role::Client => None,
    };
    let mut s = match (&listener, args.pattern) {
        (Some(listener), _) => io("accepting", listener.accept())?.0,
        // Bound with SO_REUSEADDR, so that its port can be bound again while it waits in
        // TIME_WAIT.
        (None, Pattern::TimeWaitReuse) => connect_from(SocketAddr::new(addr.ip(), 0), addr)?,
        (None, _) => io("connecting", TcpStream::connect(addr))?,
    };
    let mut byte = [0u8; 1];
    match role {
        Role::Client => io("sending", s.write_all(b"x"))?,
        Role::Server => io("receiving", s.read_exact(&mut byte))?,
    }
    match (args.pattern, role) {
        (Pattern::ServerCloses, Role::Server) | (Pattern::ClientCloses, Role::Client) => drop(s),
        (Pattern::ServerCloses, Role::Client) | (Pattern::ClientCloses, Role::Server) => {
            until_eof(&mut s)?;
            std::thread::sleep(delay);
        }
        (Pattern::HalfClose, Role::Server) => {
            io("shutting down", s.shutdown(Shutdown::Write))?;
            until_eof(&mut s)?;
        }
        (Pattern::HalfClose, Role::Client) => {
            until_eof(&mut s)?;
            std::thread::sleep(delay);
        }
        (Pattern::Simultaneous, _) => {
            say("established");
            wait_for_go()?;
            io("shutting down", s.shutdown(Shutdown::Write))?;
            say("shut");
            until_eof(&mut s)?;
        }
        (Pattern::LostFin, Role::Server) => {
            say("established");
            wait_for_go()?;
            io("shutting down", s.shutdown(Shutdown::Write))?;
            say("shut");
            until_eof(&mut s)?;
        }
        (Pattern::LostFin, Role::Client) => until_eof(&mut s)?,
        (Pattern::FinBehindData, Role::Server) => {
            // Room for all of it in the send buffer, so that write returns and close()
            // comes while most of it is still unsent (the client's window is small).
            set_int(&s, libc::SO_SNDBUFFORCE, 8 << 20)?;
            io("sending", s.write_all(&vec![b'd'; 1 << 20]))?;
            drop(s);
        }
        (Pattern::FinBehindData, Role::Client) => {
            std::thread::sleep(delay);
            until_eof(&mut s)?;
        }
        (Pattern::Reset, Role::Server) => {
            set_linger_zero(&s)?;
            drop(s);
        }
        (Pattern::ResetUnread, Role::Server) => {
            // Wait for the client's second byte, leave it unread, close.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut pending = 0;
            while pending == 0 && Instant::now() < deadline {
                // SAFETY: FIONREAD writes an int we own.
                unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut pending) };
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(s);
        }
        (Pattern::ResetUnread, Role::Client) => {
            io("sending", s.write_all(b"y"))?;
            let mut buf = [0u8; 8];
            // The server's RST ends this read with ECONNRESET (or EOF if it raced ahead).
            let _ = s.read(&mut buf);
        }
        (Pattern::Reset, Role::Client) => {
            let mut buf = [0u8; 8];
            let _ = s.read(&mut buf);
        }
        (Pattern::CloseWaitLeak, Role::Server) => {
            until_eof(&mut s)?;
            // The bug being shown: no close(). The socket sits in CLOSE_WAIT until exit.
            std::thread::sleep(Duration::from_millis(args.hold_ms));
            std::mem::forget(s);
        }
        (Pattern::CloseWaitLeak, Role::Client) => drop(s),
        (Pattern::TimeWaitReuse, Role::Server) => {
            until_eof(&mut s)?;
            drop(s);
            let listener = listener.as_ref().expect("the server listens");
            let mut again = io("accepting again", listener.accept())?.0;
            io("receiving", again.read_exact(&mut byte))?;
            until_eof(&mut again)?;
        }
        (Pattern::TimeWaitReuse, Role::Client) => {
            io("shutting down", s.shutdown(Shutdown::Write))?;
            until_eof(&mut s)?;
            let local = io("local address", s.local_addr())?;
            drop(s);
            let mut again = connect_from(local, addr)?;
            io("sending", again.write_all(b"x"))?;
        }
        (Pattern::Churn | Pattern::Storm | Pattern::LeakMany, _) => unreachable!("handled above"),
    }
    Ok(())
}

/// Connection churn for the benchmark. The server accepts, reads one byte and closes; each
/// client connects, sends one byte, waits for the server's FIN and closes.
fn churn(role: Role, args: &Args, addr: SocketAddr) -> Result<()> {
    let workers = args.concurrency.max(1);
    let per_worker = args.count.div_ceil(workers);
    match role {
        Role::Server => {
            let listener = io("listening", TcpListener::bind(addr))?;
            say("listening");
            let served = AtomicU64::new(0);
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        while served.fetch_add(1, Ordering::Relaxed) < per_worker * workers {
                            if let Ok((mut s, _)) = listener.accept() {
                                let mut byte = [0u8; 1];
                                let _ = s.read(&mut byte);
                            }
                        }
                    });
                }
            });
            Ok(())
        }
        Role::Client => {
            let start = Instant::now();
            let failures = AtomicU64::new(0);
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        for _ in 0..per_worker {
                            let ok = TcpStream::connect(addr).and_then(|mut s| {
                                s.write_all(b"x")?;
                                let mut buf = [0u8; 1];
                                while s.read(&mut buf)? > 0 {}
                                Ok(())
                            });
                            if ok.is_err() {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            let secs = start.elapsed().as_secs_f64();
            let done = per_worker * workers;
            say(&format!(
                "{{\"connections\":{done},\"failures\":{},\"seconds\":{secs:.3},\"per_second\":{:.0}}}",
                failures.load(Ordering::Relaxed),
                done as f64 / secs
            ));
            Ok(())
        }
    }
}

/// leak-many's conductor: the servers, then the client, then one JSON line saying who holds
/// what; then it relays `close SERVER N` from its stdin and answers `closed`. Its stdin's
/// end ends the servers, and with them their sockets.
fn leak_many_lab(args: &Args, netns: &str) -> Result<()> {
    let mut servers = Vec::new();
    for i in 0..args.servers {
        let port = args
            .port
            .checked_add(i)
            .ok_or("--port + --servers is past 65535")?;
        let server_args = Args {
            port,
            ..args.clone()
        };
        let mut server = Peer::spawn(Role::Server, &server_args, netns)?;
        server.expect("listening")?;
        servers.push(server);
    }
    let mut client = Peer::spawn(Role::Client, args, netns)?;
    client.expect("done")?;
    for server in &mut servers {
        server.expect("held")?;
    }
    let pids: Vec<String> = servers.iter().map(|s| s.child.id().to_string()).collect();
    println!(
        "{{\"pattern\":\"LeakMany\",\"netns\":\"{netns}\",\"port\":{},\"count\":{},\"server_pids\":[{}],\"client_pid\":{}}}",
        args.port,
        args.count,
        pids.join(","),
        client.child.id()
    );
    let _ = std::io::stdout().flush();
    client.wait()?;
    for line in std::io::stdin().lines() {
        let line = io("reading a command", line)?;
        let mut words = line.split_whitespace();
        let (Some("close"), Some(server), Some(n)) = (words.next(), words.next(), words.next())
        else {
            return Err(format!("unknown command `{line}` (close SERVER N)"));
        };
        let server = server
            .parse::<usize>()
            .ok()
            .and_then(|i| servers.get_mut(i))
            .ok_or_else(|| format!("no server `{server}`"))?;
        server.say(&format!("close {n}"))?;
        server.expect("closed")?;
        say("closed");
    }
    Ok(())
}

/// leak-many's peers. Each server holds `--count` accepted sockets without closing them;
/// the client connects `--count` times to each server's port and closes at once, so every
/// server socket is left in CLOSE_WAIT.
fn leak_many(role: Role, args: &Args, addr: SocketAddr) -> Result<()> {
    match role {
        Role::Server => {
            raise_fd_limit(args.count + 64)?;
            let listener = io("listening", TcpListener::bind(addr))?;
            // A deep accept queue (up to net.core.somaxconn): the client outpaces accept().
            // SAFETY: listen() again on our listening socket only changes its backlog.
            unsafe { libc::listen(listener.as_raw_fd(), 65_535) };
            say("listening");
            let mut held = Vec::with_capacity(args.count as usize);
            while (held.len() as u64) < args.count {
                held.push(io("accepting", listener.accept())?.0);
            }
            say("held");
            for line in std::io::stdin().lines() {
                let line = io("reading a command", line)?;
                let n: usize = line
                    .strip_prefix("close ")
                    .and_then(|n| n.trim().parse().ok())
                    .ok_or_else(|| format!("unknown command `{line}`"))?;
                held.truncate(held.len().saturating_sub(n));
                say("closed");
            }
            Ok(())
        }
        Role::Client => {
            for i in 0..args.servers {
                let to = SocketAddr::new(addr.ip(), addr.port() + i);
                for _ in 0..args.count {
                    drop(io("connecting", TcpStream::connect(to))?);
                }
            }
            say("done");
            Ok(())
        }
    }
}

/// Holding tens of thousands of sockets needs as many descriptors.
fn raise_fd_limit(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    limit.rlim_cur = wanted;
    limit.rlim_max = limit.rlim_max.max(wanted);
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!(
            "raising the descriptor limit to {wanted}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
