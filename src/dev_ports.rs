//! Loopback ports for clusters on one machine (`sillok dev`, tests, benches):
//! the ports of nodes and catalog replicas go into the cluster file before the
//! processes that bind them start, so a port must not be handed to anyone
//! else in between.
//!
//! [`reserve`] picks a port that is free now, below the kernel's ephemeral
//! range (where outgoing connections take their ports), and records it in a
//! machine-wide registry (`$TMPDIR/sillok-dev-ports`, under an exclusive
//! `flock`) for [`HOLD`], so concurrent clusters being started on the same
//! machine never pick the same port. Not for production deployments, whose
//! addresses an operator chooses.

use std::io::{Read, Seek, Write};
use std::net::TcpListener;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, SystemTime};

/// How long a reserved port stays out of other reservations.
pub const HOLD: Duration = Duration::from_secs(300);

/// A free loopback port (see the module comment).
pub fn reserve() -> std::io::Result<u16> {
    let path = std::env::temp_dir().join("sillok-dev-ports");
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    // SAFETY: flock(2) on a descriptor we own; released when `f` is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut held: Vec<(u16, u64)> = text
        .lines()
        .filter_map(|l| {
            let (p, t) = l.split_once(' ')?;
            Some((p.parse().ok()?, t.parse().ok()?))
        })
        .filter(|(_, t)| now.saturating_sub(*t) < HOLD.as_secs())
        .collect();
    let port = pick(&held)?;
    held.push((port, now));
    let out: String = held.iter().map(|(p, t)| format!("{p} {t}\n")).collect();
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(out.as_bytes())?;
    Ok(port)
}

fn pick(held: &[(u16, u64)]) -> std::io::Result<u16> {
    use rand::Rng;
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768u16)
        .clamp(11000, 65535);
    let mut rng = rand::thread_rng();
    for _ in 0..500 {
        let port = rng.gen_range(10000..low);
        if !held.iter().any(|(p, _)| *p == port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reservations_do_not_repeat() {
        let ports: Vec<u16> = (0..50).map(|_| super::reserve().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| *p >= 10000));
    }
}
