use teardown_user::{capture::*, event};
fn main() {
    let mut cap = match Capture::start(&CaptureOptions::default()) { Ok(c) => c, Err(e) => { eprintln!("error: {e}"); std::process::exit(1) } };
    eprintln!("degraded: {:?}", cap.degraded);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < end {
        cap.drain(|e| println!("{} sk={:x} {}:{} -> {}:{} {}->{} kind={} shut={} owner={} {:?} src={} task={} {:?}", e.ts_ns, e.skaddr, event::local_ip(e), e.sport, event::remote_ip(e), e.dport, teardown_common::state::name(e.oldstate), teardown_common::state::name(e.newstate), e.kind, e.sock_flags, e.owner_pid, String::from_utf8_lossy(event::comm(&e.owner_comm)), e.owner_source, e.task_pid, String::from_utf8_lossy(event::comm(&e.task_comm))));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("lost {}", cap.lost_events()); eprintln!("{:?}", cap.degraded);
}
