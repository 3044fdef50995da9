//! A real DNS server on loopback for discovery tests: Debian's `dnsmasq`,
//! serving A records from a hosts file that the test rewrites and then
//! signals (SIGHUP makes dnsmasq re-read it and drop its cache). TTL 1 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Dns {
    pub addr: SocketAddr,
    child: Option<Child>,
    hosts: PathBuf,
    _dir: tempfile::TempDir,
}

fn dnsmasq() -> String {
    for p in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"] {
        if std::path::Path::new(p).exists() {
            return p.to_owned();
        }
    }
    panic!("dnsmasq is needed for the discovery tests: apt-get install dnsmasq-base (.ci/run does)");
}

impl Dns {
    /// dnsmasq answering `records` (name, address), on a free loopback port.
    pub fn start(records: &[(&str, IpAddr)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq drops root for `nobody`, who must still read the file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let hosts = dir.path().join("hosts");
        let mut dns = Self { addr: "127.0.0.1:0".parse().unwrap(), child: None, hosts, _dir: dir };
        dns.write(records);
        // A port free for TCP and UDP now; dnsmasq takes it a moment later.
        // Another socket may take it in between (ephemeral ports come from
        // the same range): then dnsmasq exits, and we try another port.
        for _ in 0..20 {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            drop(tcp);
            dns.addr = SocketAddr::from(([127, 0, 0, 1], port));
            let child = Command::new(dnsmasq())
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--pid-file=",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--local-ttl=1",
                    &format!("--port={port}"),
                    &format!("--addn-hosts={}", dns.hosts.display()),
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dns._dir.path().join("stderr")).unwrap())
                .spawn()
                .expect("dnsmasq did not start");
            dns.child = Some(child);
            if dns.wait_answering() {
                return dns;
            }
            dns.stop();
        }
        let err = std::fs::read_to_string(dns._dir.path().join("stderr")).unwrap_or_default();
        panic!("dnsmasq could not listen on a free port: {err}");
    }

    fn write(&self, records: &[(&str, IpAddr)]) {
        let text: String = records.iter().map(|(name, ip)| format!("{ip} {name}\n")).collect();
        let tmp = self.hosts.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.hosts).unwrap();
    }

    /// Replace the records and have dnsmasq re-read them.
    pub fn set(&self, records: &[(&str, IpAddr)]) {
        self.write(records);
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "could not signal dnsmasq");
    }

    /// Stop the server: lookups then time out.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Bounded: until a TCP connect to its port succeeds (dnsmasq listens
    /// on TCP and UDP together), at most 5 s; false if dnsmasq exited.
    fn wait_answering(&mut self) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr, std::time::Duration::from_millis(200)).is_ok() {
                return true;
            }
            let exited = self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}
