//! Xen's view of dom0's channels, from the 'e' debug key: per channel its
//! state, bound vCPU, set, and (`CONFIG_EVTCHN_ROUTE_STATS`) how many of
//! its events were queued for a running, blocked or other vCPU.

use crate::xen::Privcmd;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `ECS_PIRQ` (xen/include/xen/sched.h).
pub const ECS_PIRQ: u32 = 4;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Channel {
    pub state: u32,
    pub bound: u32,
    /// `route={...}` as printed, if the channel has a set.
    pub set: Option<String>,
    /// Events queued for a vCPU that was running, blocked, neither.
    pub routed: [u64; 3],
}

/// dom0's channels by port, as the 'e' key prints them now.
pub fn dom0_channels(pc: &Privcmd) -> Result<BTreeMap<u32, Channel>, String> {
    parse_dom0(&key_dump(pc, 'e', "Routed events per vCPU")?)
}

/// What Xen prints for debug key `key`, up to and with the line holding
/// `last`.
fn key_dump(pc: &Privcmd, key: char, last: &str) -> Result<String, String> {
    let mut index = 0u32;
    // Skip what the ring holds already.
    pc.read_console(&mut index).map_err(|e| format!("readconsole: errno {e}"))?;
    pc.debug_keys(&key.to_string()).map_err(|e| format!("debug key '{key}': errno {e}"))?;
    let mut text = String::new();
    let t = Instant::now();
    // The key's handler may run a little later (from a tasklet): wait for
    // the dump's last line, whole.
    while !text.lines().any(|l| l.contains(last)) || !text.ends_with('\n') {
        if t.elapsed() > Duration::from_secs(5) {
            return Err(format!("no '{last}' line within 5 s of the '{key}' key"));
        }
        std::thread::sleep(Duration::from_millis(20));
        text.push_str(&pc.read_console(&mut index).map_err(|e| format!("readconsole: errno {e}"))?);
    }
    Ok(text)
}

/// Xen's software performance counters by name, summed over pCPUs (the
/// 'p' key; Xen built with CONFIG_PERF_COUNTERS). `last` names the last
/// counter Xen prints.
pub fn perf_counters(pc: &Privcmd, last: &str) -> Result<BTreeMap<String, u64>, String> {
    Ok(parse_perf_counters(&key_dump(pc, 'p', last)?))
}

/// `name  TOTAL[  n]  CPU00[ ...` lines of a 'p' dump.
pub fn parse_perf_counters(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let l = l.split_once("(XEN) ").map_or(l, |(_, r)| r);
            let (name, rest) = l.split_once("TOTAL[")?;
            let total = rest.split_once(']')?.0.trim().parse().ok()?;
            Some((name.trim().to_string(), total))
        })
        .collect()
}

/// The channel lines of domain 0 in an 'e' dump.
pub fn parse_dom0(text: &str) -> Result<BTreeMap<u32, Channel>, String> {
    let mut chans = BTreeMap::new();
    let mut in_dom0 = false;
    for line in text.lines() {
        let line = line.strip_prefix("(XEN)").unwrap_or(line).trim();
        if let Some(rest) = line.strip_prefix("Event channel information for domain ") {
            in_dom0 = rest.trim_end_matches(':') == "0";
            continue;
        }
        if !in_dom0 {
            continue;
        }
        let Some((head, fields)) = line.split_once("]: ") else { continue };
        let Some(port) = head.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let mut c = Channel::default();
        for f in fields.split_whitespace() {
            let num = |v: &str| v.parse::<u32>().map_err(|_| format!("port {port}: bad field '{f}' in '{line}'"));
            if let Some(v) = f.strip_prefix("s=") {
                c.state = num(v)?;
            } else if let Some(v) = f.strip_prefix("n=") {
                c.bound = num(v)?;
            } else if let Some(v) = f.strip_prefix("route=") {
                c.set = Some(v.to_string());
            } else if let Some(v) = f.strip_prefix("routed=") {
                let n: Vec<u64> = v.split('/').filter_map(|x| x.parse().ok()).collect();
                if n.len() != 3 {
                    return Err(format!("port {port}: bad routed counts '{v}'"));
                }
                c.routed = [n[0], n[1], n[2]];
            }
        }
        chans.insert(port, c);
    }
    if chans.is_empty() {
        return Err("no channel of domain 0 in the 'e' dump".into());
    }
    Ok(chans)
}

/// Of the PIRQ channels, the one whose counts grew most between two dumps,
/// and its growth: a device's interrupt during a run that used it.
pub fn busiest_pirq(before: &BTreeMap<u32, Channel>, after: &BTreeMap<u32, Channel>) -> Option<(u32, [u64; 3])> {
    after
        .iter()
        .filter(|(_, c)| c.state == ECS_PIRQ)
        .map(|(port, c)| {
            let b = before.get(port).map_or([0; 3], |b| b.routed);
            (*port, [0, 1, 2].map(|i| c.routed[i].saturating_sub(b[i])))
        })
        .max_by_key(|(_, d)| d.iter().sum::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
(XEN) 'e' pressed -> dumping event-channel info
(XEN) Event channel information for domain 0:
(XEN) Polling vCPUs: {}
(XEN)     port [p/m/s]
(XEN)        1 [0/0/  -   ]: s=5 n=0 x=0 routed=0/0/0 v=0
(XEN)       47 [0/1/  -   ]: s=4 n=2 x=0 route={0-3} routed=812/3/1 p=55 i=30
(XEN)       48 [1/0/  3   ]: s=3 n=1 x=0 routed=7/0/0 d=0 p=49
(XEN) Routed events per vCPU (to running/blocked/other vCPUs, flags):
(XEN)        0 5/0/0 mapped upcall online
(XEN) Event channel information for domain 1:
(XEN)        1 [0/0/  -   ]: s=4 n=0 x=0 routed=99/0/0 p=1 i=1
";

    #[test]
    fn the_e_dump_of_dom0_parses_and_other_domains_are_skipped() {
        let c = parse_dom0(DUMP).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[&47], Channel { state: 4, bound: 2, set: Some("{0-3}".into()), routed: [812, 3, 1] });
        assert_eq!(c[&48].routed, [7, 0, 0]);
        assert_eq!(c[&1].set, None);
    }

    #[test]
    fn perf_counters_are_read_by_name_with_their_totals() {
        let dump = "(XEN) Xen performance counters SHOW  (now = 12)\n\
                    (XEN) #IPIs                             TOTAL[         7]  CPU00[         3]  CPU01[         4]\n\
                    (XEN) evtchn-wait: event came           TOTAL[      2000]  CPU00[         0]  CPU01[      2000]\n\
                    (XEN) some array                        ARR00[         1]\n";
        let c = parse_perf_counters(dump);
        assert_eq!(c.get("#IPIs"), Some(&7));
        assert_eq!(c.get("evtchn-wait: event came"), Some(&2000));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_busiest_pirq_is_the_one_that_grew_most() {
        let after = parse_dom0(DUMP).unwrap();
        let mut before = after.clone();
        before.get_mut(&47).unwrap().routed = [800, 3, 0];
        assert_eq!(busiest_pirq(&before, &after), Some((47, [12, 0, 1])));
    }
}
