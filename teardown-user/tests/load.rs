//! Under load: nothing lost without being counted. Needs root (see `common`).

mod common;

use common::*;

#[test]
fn every_transition_of_a_churn_is_seen_or_counted_lost() {
    let Some(_serial) = privileged("every_transition_of_a_churn_is_seen_or_counted_lost") else {
        return;
    };
    const CONNECTIONS: usize = 20_000;
    let (ns, port) = (Netns::new(), port());
    let _stats = BpfStats::enable();
    let traced = Traced::start("churn", port);
    let count = CONNECTIONS.to_string();
    play("churn", &ns, port, &["--count", &count]).finish();
    // The last closes may still be in softirq after the lab exits; a client's CLOSE is
    // the last transition of its connection.
    wait_for("every socket closed", || {
        [
            "fin-wait-1",
            "close-wait",
            "last-ack",
            "closing",
            "listening",
        ]
        .iter()
        .all(|state| sockets_in(&ns, state) == 0)
    });
    // Every transition (four opening ones per connection too) runs the program or is
    // counted as a miss by the kernel. On a loaded machine the kernel was seen to skip a
    // few more without counting them (ftrace saw those transitions): they are the kernel's
    // to own, not ours, and are allowed for here.
    let (runs, misses) = program_stats("inet_sock_set_state");
    let hits = 10 * CONNECTIONS as u64 + 2;
    let unaccounted_by_kernel = hits.saturating_sub(runs + misses) as usize;
    let (v, replayed) = traced.stop(libc::SIGINT, &["--raw", "--json"]);
    let seen = replayed
        .iter()
        .filter(|l| l.contains("\"event\":\"state\""))
        .count();
    // Three closing transitions per end, and the listener's LISTEN -> CLOSE.
    let expected = 6 * CONNECTIONS + 1;
    let lost = v["lost_events"].as_u64().unwrap() as usize;
    assert!(seen <= expected, "{seen} transitions, at most {expected}");
    assert!(
        seen + lost + unaccounted_by_kernel >= expected,
        "{} transitions neither seen nor counted lost ({seen} seen, {lost} lost, \
         {unaccounted_by_kernel} never run by the kernel)",
        expected - seen - lost - unaccounted_by_kernel
    );
}
