//! The wall page in a real browser: the demo engine (in-process Kafka, simulated city, engine,
//! HTTP server on a free loopback port) runs on a background thread, Debian's headless Chromium
//! loads the wall page, and the test drives it over the Chrome DevTools Protocol (a websocket to
//! the page target). It checks that the six KPI tiles render, the connection pill goes live, the
//! scripted methane incident reaches the active-alert table and the tiles change without a
//! reload, that the page loads nothing from outside the engine and throws no script errors, and
//! saves a 1920x1080 screenshot to `target/wall-screenshot.png`. It also checks that the demo's
//! dispatch unit got the methane alarm as a webhook whose signature it verified.
//!
//! Needs `/usr/bin/chromium` (`scripts/install-test-deps.sh` installs it; `scripts/test.sh`
//! runs that first). Without it the test fails and says so. Takes about 45 s.

#![allow(clippy::expect_used)] // test helpers: a failed step stops the test with its message

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use citybrain_connectors::simulator::Scale;
use citybrain_engine::demo::{self, DemoError, DemoOptions};
use citybrain_engine::receiver::ReceivedRequest;
use citybrain_engine::runtime::Status;
use citybrain_model::AlertTransition;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Debian's Chromium (a wrapper script that execs `/usr/lib/chromium/chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";
/// The wall is a 1920x1080 screen.
const WIDTH: u64 = 1920;
const HEIGHT: u64 = 1080;
/// How long the page may take to show the methane incident after it loads.
const INCIDENT_WITHIN: Duration = Duration::from_secs(60);
/// Time between two samples of the page.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// The demo stops by itself after this long even if the test never stops it.
const DEMO_LIMIT: Duration = Duration::from_secs(150);
/// Every wait in the test ends by this long after it began (the whole test stays under 2 min).
const BUDGET: Duration = Duration::from_secs(110);

/// The demo engine on a background thread; stopped (and joined) when dropped.
struct Demo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Status, DemoError>>>,
    transitions: Arc<Mutex<Vec<String>>>,
    /// What the demo's dispatch unit got.
    dispatched: Arc<Mutex<Vec<ReceivedRequest>>>,
}

impl Demo {
    fn start() -> Demo {
        let stop = Arc::new(AtomicBool::new(false));
        let transitions = Arc::new(Mutex::new(Vec::new()));
        let dispatched = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let sink = Arc::clone(&transitions);
            let unit = Arc::clone(&dispatched);
            std::thread::Builder::new()
                .name("citybrain-demo".into())
                .spawn(move || {
                    let options = DemoOptions {
                        duration: Some(DEMO_LIMIT),
                        workers: Some(2),
                        seed: 7,
                        scale: Scale::Demo,
                        http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                    };
                    demo::run(
                        &options,
                        stop,
                        Box::new(move |t: &AlertTransition| {
                            sink.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(format!("{:?} {} {}", t.state, t.rule, t.entity));
                        }),
                        Box::new(move |request: &ReceivedRequest| {
                            unit.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(request.clone());
                        }),
                        move |addresses: &demo::DemoAddresses| {
                            let _ = started_tx.send(addresses.http);
                        },
                        |_, _| {},
                    )
                })
                .expect("spawn the demo thread")
        };
        let mut demo = Demo {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stop,
            thread: Some(thread),
            transitions,
            dispatched,
        };
        match started_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => demo.addr = addr,
            Ok(None) => panic!("the demo started without an HTTP server"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the demo did not start its engine within 30 s")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let result = demo.thread.take().map(JoinHandle::join);
                panic!("the demo failed to start: {result:?}");
            }
        }
        demo
    }

    fn transitions(&self) -> Vec<String> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn dispatched(&self) -> Vec<ReceivedRequest> {
        self.dispatched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the demo and returns how it ended.
    fn finish(mut self) -> Result<Status, DemoError> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("the demo thread");
        thread.join().expect("the demo thread panicked")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A headless Chromium in its own process group with a throwaway profile; the whole group is
/// killed when dropped (also when the test fails).
struct Chromium {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Chromium {
    fn launch() -> Chromium {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: this test needs Debian's chromium package. Run \
             scripts/install-test-deps.sh (scripts/test.sh does) or `apt-get install chromium`."
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let profile = dir.path().join("profile");
        let log = std::fs::File::create(dir.path().join("chromium.log")).expect("chromium log");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1920,1080",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        let mut chromium = Chromium {
            child,
            dir,
            port: 0,
        };
        // Chromium writes the port it picked, then the browser target's path.
        let active_port = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&active_port)
                && let Some(Ok(port)) = text.lines().next().map(str::parse::<u16>)
            {
                chromium.port = port;
                return chromium;
            }
            if let Ok(Some(exit)) = chromium.child.try_wait() {
                panic!(
                    "chromium exited ({exit}) before it was ready:\n{}",
                    chromium.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within 30 s:\n{}",
                chromium.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of Chromium's stderr, for failure messages.
    fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser, its zygotes and renderers share the process group the child leads.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on Chromium's DevTools HTTP endpoint, which keeps the connection open after answering:
/// read the head, then exactly `Content-Length` bytes of body.
fn devtools_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to DevTools");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut buffer)
            .unwrap_or_else(|e| panic!("GET {path} from DevTools: {e}"));
        response.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "GET {path} from DevTools: {head}"
            );
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            if length.is_some_and(|l| body.len() >= l) || (n == 0 && length.is_none()) {
                return body.to_string();
            }
        }
        assert!(n > 0, "GET {path} from DevTools: connection closed early");
    }
}

/// A DevTools Protocol session with one page target.
struct Cdp {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Every event received so far (`{"method", "params"}`).
    events: Vec<Value>,
}

impl Cdp {
    fn connect(port: u16) -> Cdp {
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let body = devtools_get(devtools, "/json/list");
        let targets: Value = serde_json::from_str(&body).expect("/json/list is JSON");
        let url = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target in /json/list: {body}"))
            .to_string();
        let stream = TcpStream::connect(devtools).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let (socket, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("websocket handshake with {url}: {e}"));
        // Short reads from now on, so every call can keep its own deadline.
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        Cdp {
            socket,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Sends a command and waits (at most 10 s) for its result; events read meanwhile are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("{method}: send: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer within 10 s");
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(e) => panic!("{method}: DevTools connection: {e}"),
            };
            let message: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true` or `timeout` passes; returns whether it held.
    fn wait_for(&mut self, expression: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression) == Value::Bool(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn events_named<'a>(&'a self, method: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| e["method"] == method)
            .map(|e| &e["params"])
    }
}

/// What the test reads from the page at each sample.
const SAMPLE: &str = r#"(() => {
  const tiles = {};
  for (const t of document.querySelectorAll('[data-tile]')) {
    const v = t.querySelector('.value');
    tiles[t.dataset.tile] = v ? v.textContent : null;
  }
  const pill = document.getElementById('connection');
  return {
    marker: window.__wallTestMarker ?? null,
    pill: pill.textContent,
    pill_class: pill.className,
    count: document.getElementById('alert-count').textContent,
    rows: [...document.querySelectorAll('#alert-rows tr[data-alert]')].map(r => r.dataset.alert),
    tiles,
    stale: !document.getElementById('banner').classList.contains('hidden'),
  };
})()"#;

/// One read of the page.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    at: Duration,
    count: String,
    rows: Vec<String>,
    tiles: Vec<(String, String)>,
}

impl Sample {
    /// What should change over time: the tile values and the alert count.
    fn figures(&self) -> (&str, &[(String, String)]) {
        (&self.count, &self.tiles)
    }
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wall-screenshot.png")
}

#[test]
fn wall_page_renders_and_updates_live_in_headless_chromium() {
    let begun = Instant::now();
    // The browser first: without one the test fails at once, before the demo starts.
    let chromium = Chromium::launch();
    let demo = Demo::start();
    let origin = format!("http://{}", demo.addr);
    eprintln!(
        "wall_browser: demo at {origin}/, chromium DevTools on 127.0.0.1:{} ({:.1} s)",
        chromium.port,
        begun.elapsed().as_secs_f64()
    );

    let mut cdp = Cdp::connect(chromium.port);
    for domain in ["Page", "Runtime", "Network", "Log"] {
        cdp.call(&format!("{domain}.enable"), json!({}));
    }
    // The wall runs full screen: a 1920x1080 viewport (the window size includes the headless
    // window's browser chrome, so the viewport is set exactly here).
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false }),
    );
    let navigated = cdp.call("Page.navigate", json!({ "url": format!("{origin}/") }));
    assert!(
        navigated.get("errorText").is_none(),
        "loading the wall page: {navigated}"
    );
    let loaded_at = Instant::now();
    assert!(
        cdp.wait_for(
            "document.readyState === 'complete' && document.querySelectorAll('[data-tile]').length > 0",
            Duration::from_secs(15)
        ),
        "the wall page did not load within 15 s"
    );
    // Survives only as long as the document: a reload would lose it.
    cdp.eval("window.__wallTestMarker = 'no-reload'; true");
    let title = cdp.eval("document.title");
    assert!(
        title.as_str().is_some_and(|t| t.contains("citybrain")),
        "page title: {title}"
    );
    let viewport = cdp.eval("[innerWidth, innerHeight]");
    assert_eq!(
        viewport,
        json!([WIDTH, HEIGHT]),
        "the browser's viewport should be the wall's 1920x1080"
    );

    // The connection pill goes live once the SSE snapshot arrives.
    assert!(
        cdp.wait_for(
            "document.getElementById('connection').textContent === 'live' && \
             document.getElementById('connection').classList.contains('live')",
            Duration::from_secs(15)
        ),
        "the connection pill did not say live within 15 s: {}",
        cdp.eval("document.getElementById('connection').textContent")
    );

    // Seven KPI tiles, each with a label and a visible value element.
    let tiles = cdp.eval(
        r#"[...document.querySelectorAll('[data-tile]')].map(t => {
             const v = t.querySelector('.value'), r = t.getBoundingClientRect();
             return { id: t.dataset.tile, label: t.querySelector('.label')?.textContent ?? '',
                      value: v ? v.textContent : null,
                      shown: r.width > 0 && r.height > 0 && !!v && v.getBoundingClientRect().height > 0 };
           })"#,
    );
    let tiles = tiles.as_array().expect("tiles").clone();
    assert_eq!(tiles.len(), 7, "KPI tiles: {tiles:?}");
    let ids: BTreeSet<&str> = tiles.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids.len(), 7, "tile ids must be distinct: {tiles:?}");
    for tile in &tiles {
        assert!(
            tile["label"].as_str().is_some_and(|l| !l.trim().is_empty()),
            "tile without a label: {tile}"
        );
        assert!(
            tile["value"].is_string(),
            "tile without a value element: {tile}"
        );
        assert_eq!(tile["shown"], true, "tile not visible: {tile}");
    }
    assert!(
        tiles.iter().any(|t| t["value"]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().is_ok())),
        "no tile shows a number once live: {tiles:?}"
    );

    // Watch the page without reloading it: the methane incident must reach the alert table,
    // and the figures must move.
    let mut samples: Vec<Sample> = Vec::new();
    let mut incident_seen: Option<usize> = None;
    let deadline = (loaded_at + INCIDENT_WITHIN).min(begun + BUDGET);
    loop {
        let raw = cdp.eval(SAMPLE);
        assert_eq!(
            raw["marker"], "no-reload",
            "the page reloaded (or navigated away): {raw}"
        );
        assert_eq!(
            raw["pill"], "live",
            "the page lost its live connection: {raw}"
        );
        assert_eq!(
            raw["stale"], false,
            "the page shows the stale-data banner: {raw}"
        );
        let rows: Vec<String> = raw["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(String::from))
            .collect();
        let count = raw["count"].as_str().unwrap_or_default().to_string();
        if rows.len() < 16 {
            // The table shows up to 16 rows; below that the count and the rows agree.
            assert_eq!(
                count,
                rows.len().to_string(),
                "alert count badge vs rows: {raw}"
            );
        }
        let mut tile_values: Vec<(String, String)> = raw["tiles"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("null").to_string()))
            .collect();
        tile_values.sort();
        let sample = Sample {
            at: loaded_at.elapsed(),
            count,
            rows,
            tiles: tile_values,
        };
        eprintln!(
            "wall_browser: +{:>4.1} s  alerts {:>2}  tiles {:?}  rows {:?}",
            sample.at.as_secs_f64(),
            sample.count,
            sample.tiles,
            sample.rows
        );
        let first_rows = samples.first().map_or(sample.rows.len(), |s| s.rows.len());
        samples.push(sample);
        let last = samples.last().expect("a sample");
        if incident_seen.is_none()
            && last.rows.len() > first_rows
            && last.rows.iter().any(|r| r.starts_with("ch4-"))
        {
            incident_seen = Some(samples.len() - 1);
        }
        // Two more samples after the incident shows: a screenshot of a settled table.
        if incident_seen.is_some_and(|i| samples.len() >= i + 3) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let engine_transitions = demo.transitions();
    assert!(
        incident_seen.is_some(),
        "within {INCIDENT_WITHIN:?} the active-alert table gained no methane rows.\n\
         samples: {samples:#?}\nthe engine's transitions: {engine_transitions:#?}"
    );
    let changed = samples
        .windows(2)
        .filter(|w| w[0].figures() != w[1].figures())
        .count();
    assert!(
        changed > 0,
        "no tile value nor the alert count changed between samples: {samples:#?}"
    );
    let page_ch4: Vec<&String> = samples
        .iter()
        .flat_map(|s| &s.rows)
        .filter(|r| r.starts_with("ch4-"))
        .collect();
    for row in &page_ch4 {
        let (rule, entity) = row.split_once('|').expect("rule|entity");
        assert!(
            engine_transitions
                .iter()
                .any(|t| t.ends_with(&format!(" {rule} {entity}"))),
            "the page shows {row}, which the engine never reported: {engine_transitions:?}"
        );
    }

    // The demo's dispatch unit got the methane alarm, signed, and verified it: wait for the
    // request (it follows the transition), then check every request it got.
    let alarm = |r: &ReceivedRequest| {
        r.transitions
            .iter()
            .any(|t| t.rule == "ch4-alarm" && t.state == "firing")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !demo.dispatched().iter().any(alarm) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let dispatched = demo.dispatched();
    assert!(
        dispatched.iter().any(alarm),
        "the dispatch unit got no ch4-alarm: {dispatched:#?}\nthe engine's transitions: {:#?}",
        demo.transitions()
    );
    for request in &dispatched {
        assert!(request.verified && request.error.is_none(), "{request:?}");
        for t in &request.transitions {
            assert_eq!(
                t.severity, "critical",
                "only critical alerts are routed: {request:?}"
            );
        }
    }

    // The wall says how dispatch is doing.
    let pill = cdp.eval("document.getElementById('dispatch').textContent");
    assert!(
        pill.as_str().is_some_and(|p| p.starts_with("dispatch: ")),
        "no dispatch pill on the wall: {pill}"
    );

    // The page fits the wall: nothing wider or taller than the screen.
    let layout = cdp.eval(
        "({ width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight })",
    );
    eprintln!("wall_browser: document size {layout} in a {WIDTH}x{HEIGHT} viewport");
    assert!(
        layout["width"].as_u64().is_some_and(|w| w <= WIDTH),
        "the page is wider than the wall: {layout}"
    );
    assert!(
        layout["height"].as_u64().is_some_and(|h| h <= HEIGHT),
        "the page is taller than the wall, its bottom would be cut off: {layout}"
    );

    // Nothing from outside the engine: no CDN, fonts or trackers; everything from its origin.
    // (`data:` and `blob:` URLs are inline, not fetched.)
    let own = |url: &str| {
        url.starts_with(&format!("{origin}/"))
            || url.starts_with("data:")
            || url.starts_with("blob:")
    };
    let resources = cdp.eval(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name)",
    );
    let resources: Vec<&str> = resources
        .as_array()
        .expect("resource names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        resources.iter().any(|r| r.ends_with("/assets/wall.js"))
            && resources.iter().any(|r| r.ends_with("/assets/wall.css")),
        "the page's own assets are missing from its resource timing: {resources:?}"
    );
    let foreign: Vec<&&str> = resources.iter().filter(|r| !own(r)).collect();
    assert!(
        foreign.is_empty(),
        "the page loaded resources from outside {origin}: {foreign:?}"
    );
    let requested: Vec<String> = cdp
        .events_named("Network.requestWillBeSent")
        .filter_map(|p| p["request"]["url"].as_str().map(String::from))
        .collect();
    let foreign: Vec<&String> = requested.iter().filter(|r| !own(r)).collect();
    assert!(
        foreign.is_empty(),
        "the page requested URLs outside {origin}: {foreign:?}"
    );

    // No script errors.
    let exceptions: Vec<&Value> = cdp.events_named("Runtime.exceptionThrown").collect();
    assert!(exceptions.is_empty(), "the page threw: {exceptions:#?}");
    let console_errors: Vec<&Value> = cdp
        .events_named("Runtime.consoleAPICalled")
        .filter(|p| p["type"] == "error" || p["type"] == "assert")
        .collect();
    assert!(
        console_errors.is_empty(),
        "the page logged errors: {console_errors:#?}"
    );
    for entry in cdp.events_named("Log.entryAdded") {
        let entry = &entry["entry"];
        eprintln!(
            "wall_browser: browser log {} {}: {} {}",
            entry["source"], entry["level"], entry["text"], entry["url"]
        );
    }

    // The screenshot: a 1920x1080 PNG.
    let shot = cdp.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("screenshot base64");
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG"
    );
    let dimension =
        |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!(
        (u64::from(dimension(16)), u64::from(dimension(20))),
        (WIDTH, HEIGHT),
        "screenshot size"
    );
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().expect("target dir")).expect("create target/");
    std::fs::write(&path, &png).expect("write the screenshot");
    eprintln!(
        "wall_browser: screenshot {} ({} bytes); {} samples, {} changes; {:.1} s in all",
        path.display(),
        png.len(),
        samples.len(),
        changed,
        begun.elapsed().as_secs_f64()
    );

    drop(cdp);
    drop(chromium);
    let ended = demo.finish();
    assert!(ended.is_ok(), "the demo ended with an error: {ended:?}");
}
