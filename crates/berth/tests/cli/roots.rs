//! Two berth roots on one host: each has bridges of its own, both share
//! the host's network state (one nft table), so each publishes ports, a
//! host port is published once whichever root asks, and neither root's
//! cleanup touches the other's.

use std::process::Command;

use crate::common::*;
use crate::nethelp::*;

fn httpd(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// A second root beside `env`'s, in the same network namespace; its
/// containers go when it does (even when the test failed).
struct Second<'a>(&'a Env);

impl Second<'_> {
    fn run(&self, args: &[&str]) -> Run {
        let dir = self.0.dir.path().join("second");
        let mut c: Command = self.0.cmd();
        c.env("BERTH_ROOT", dir.join("root"))
            .env("BERTH_RUN_ROOT", dir.join("run"))
            .args(args);
        Run::from(c.output().unwrap())
    }
}

impl Drop for Second<'_> {
    fn drop(&mut self) {
        for id in self.run(&["ps", "-aq"]).stdout.lines() {
            self.run(&["rm", "-f", id]);
        }
    }
}

/// The device of a root's default network.
pub fn bridge_of(run: &dyn Fn(&[&str]) -> Run) -> String {
    let out = run(&["network", "inspect", "bridge"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn two_roots_publish_side_by_side_and_stay_independent() {
    let a = Env::with_busybox();
    let second = Second(&a);
    let b = |args: &[&str]| second.run(args);
    b(&["image", "import", busybox_tar().to_str().unwrap()]).ok();
    let web = |run: &dyn Fn(&[&str]) -> Run, port: &str, text: &str| {
        let p = format!("{port}:80");
        run(&[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &p,
            "busybox",
            "sh",
            "-c",
            &httpd(text),
        ])
        .ok();
    };
    web(&|args| a.berth(args), "8080", "root-a");
    web(&b, "8090", "root-b");
    assert_eq!(http_get_retry(&a.netns(), "127.0.0.1:8080"), "root-a\n");
    assert_eq!(http_get_retry(&a.netns(), "127.0.0.1:8090"), "root-b\n");
    // Different bridges and subnets.
    let (ba, bb) = (bridge_of(&|args| a.berth(args)), bridge_of(&b));
    assert!(!ba.is_empty() && ba != bb, "{ba} {bb}");
    let ip = |run: &dyn Fn(&[&str]) -> Run| {
        run(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"])
            .ok()
            .stdout
    };
    let (ia, ib) = (ip(&|args| a.berth(args)), ip(&b));
    assert_ne!(
        ia.rsplitn(3, '.').last(),
        ib.rsplitn(3, '.').last(),
        "{ia} {ib}"
    );
    // A host port is published once, whichever root asks.
    b(&[
        "run", "-d", "--name", "dup", "-p", "8080:80", "busybox", "sleep", "60",
    ])
    .fails_with("already published");
    // One root's reconcile and removals leave the other's state alone.
    b(&["system", "reconcile"]).ok();
    b(&["rm", "-f", "web"]).ok();
    b(&["rm", "-f", "dup"]);
    assert_eq!(http_get_retry(&a.netns(), "127.0.0.1:8080"), "root-a\n");
    assert!(http_get(&a.netns(), "127.0.0.1:8090").is_err());
    let published = a.published();
    assert_eq!(published.len(), 1, "{published:?}");
    assert!(published[0].contains("8080"), "{published:?}");
    a.berth(&["system", "reconcile"]).ok();
    assert_eq!(http_get_retry(&a.netns(), "127.0.0.1:8080"), "root-a\n");
}
