//! Xen's view of a domain's channels, from the 'e' debug key: per channel its
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
    Ok(domains_channels(pc, &[0])?.remove(&0).unwrap_or_default())
}

/// The channels of each domain in `doms`, by domain and port, from one
/// 'e' dump. A domain that never had a set has no routing counts (Xen
/// allocates them with its first set): they read as zero.
pub fn domains_channels(pc: &Privcmd, doms: &[u32]) -> Result<BTreeMap<u32, BTreeMap<u32, Channel>>, String> {
    let whole = |text: &str| doms.iter().all(|d| section(text, *d).is_some());
    let text = key_dump(pc, 'e', whole)?;
    doms.iter().map(|d| Ok((*d, parse_domain(&text, *d)?))).collect()
}

/// The part of an 'e' dump about domain `dom`.
fn section(text: &str, dom: u32) -> Option<&str> {
    let head = format!("Event channel information for domain {dom}:");
    let start = text.find(&head)? + head.len();
    let rest = &text[start..];
    Some(&rest[..rest.find("Event channel information for domain ").unwrap_or(rest.len())])
}

/// What Xen prints for debug key `key`, once `whole` holds of it.
fn key_dump(pc: &Privcmd, key: char, whole: impl Fn(&str) -> bool) -> Result<String, String> {
    let mut index = 0u32;
    // Skip what the ring holds already.
    pc.read_console(&mut index).map_err(|e| format!("readconsole: errno {e}"))?;
    pc.debug_keys(&key.to_string()).map_err(|e| format!("debug key '{key}': errno {e}"))?;
    let mut text = String::new();
    let t = Instant::now();
    // Xen runs a key's handler within the sysctl (not in an interrupt), so
    // the dump is in the ring by now; read until the ring has no more and
    // the dump is what `whole` wants.
    loop {
        let more = pc.read_console(&mut index).map_err(|e| format!("readconsole: errno {e}"))?;
        text.push_str(&more);
        if more.is_empty() && whole(&text) && text.ends_with('\n') {
            return Ok(text);
        }
        if t.elapsed() > Duration::from_secs(5) {
            return Err(format!("the '{key}' key's dump not whole within 5 s"));
        }
        if more.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Xen's software performance counters by name, summed over pCPUs (the
/// 'p' key; Xen built with CONFIG_PERF_COUNTERS). `last` names the last
/// counter Xen prints.
pub fn perf_counters(pc: &Privcmd, last: &str) -> Result<BTreeMap<String, u64>, String> {
    Ok(parse_perf_counters(&key_dump(pc, 'p', |t| t.lines().any(|l| l.contains(last)))?))
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

/// The channel lines of domain `dom` in an 'e' dump.
pub fn parse_domain(text: &str, dom: u32) -> Result<BTreeMap<u32, Channel>, String> {
    let mut chans = BTreeMap::new();
    for line in section(text, dom).unwrap_or_default().lines() {
        let line = line.split_once("(XEN)").map_or(line, |(_, r)| r).trim();
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
        return Err(format!("no channel of domain {dom} in the 'e' dump"));
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
    fn the_e_dump_of_each_domain_parses_apart_from_the_others() {
        let c = parse_domain(DUMP, 0).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[&47], Channel { state: 4, bound: 2, set: Some("{0-3}".into()), routed: [812, 3, 1] });
        assert_eq!(c[&48].routed, [7, 0, 0]);
        assert_eq!(c[&1].set, None);
        let d1 = parse_domain(DUMP, 1).unwrap();
        assert_eq!(d1.len(), 1);
        assert_eq!(d1[&1].routed, [99, 0, 0]);
        assert!(parse_domain(DUMP, 2).is_err());
        assert!(section(DUMP, 1).is_some_and(|s| !s.contains("Routed")), "domain 0's routing lines are its own");
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
        let after = parse_domain(DUMP, 0).unwrap();
        let mut before = after.clone();
        before.get_mut(&47).unwrap().routed = [800, 3, 0];
        assert_eq!(busiest_pirq(&before, &after), Some((47, [12, 0, 1])));
    }
}
