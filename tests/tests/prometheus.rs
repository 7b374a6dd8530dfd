//! A real Prometheus scrapes the real sidecar: `promtool check metrics` on its exposition,
//! PromQL through Prometheus's HTTP API finds the decisions the test made, the alerting rules of
//! `deploy/prometheus/alerts.yml` load and evaluate, and every query of the Grafana dashboard
//! `deploy/grafana/mcp-policy.json` returns a non-zero series after the test traffic.
//!
//! Needs `prometheus` and `promtool` (Debian package `prometheus`, which `scripts/test.sh`
//! installs; or set PROMETHEUS and PROMTOOL). Without them the test fails, unless
//! E2E_ALLOW_SKIP_PROMETHEUS=1 says that skipping is fine on this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use e2e::{
    DemoServer, McpClient, Proc, REFUND_POLICIES, Sidecar, Workspace, eventually, free_addr, http,
    is_denied, is_tool_result,
};
use serde_json::{Value, json};

/// The scrape job, as `deploy/prometheus/prometheus.yml` names it.
const JOB: &str = "mcp-policy";

/// The test key of `policy-layer/tests/fixtures/ed25519.pem` (also in tests/tests/hostile.rs).
const ED25519_PEM: &str = include_str!("../../policy-layer/tests/fixtures/ed25519.pem");
/// Its public half as a JWK `x`.
const ED25519_X: &str = "3BxEVLhPA8ouyX0a7sS7Tqk6pvlorH-LrhNNgd9nzAk";
const ISSUER: &str = "https://issuer.test";

/// `delete_order` is forbidden outright, so its denials name a policy.
const NO_DELETE: &str = r#"
@id("orders_no_delete")
forbid(principal, action == AgentCore::Action::"RefundTool___delete_order", resource);
"#;

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// `$var` when set, else `name` on the PATH.
fn tool(name: &str, var: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn sign(claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn token(sub: &str, exp: u64) -> String {
    sign(&json!({"iss": ISSUER, "aud": "mcp-gateway", "sub": sub, "exp": exp}))
}

/// A running Prometheus scraping one target every second, with the project's alerting rules.
struct Prometheus {
    proc: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = workspace_root().join("deploy/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{target:?}]\n"
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let listen = free_addr();
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn");
        Self {
            proc: Proc::spawn(command),
            url: format!("http://{listen}"),
            _dir: dir,
        }
    }

    /// GET `path` with `params`: the `data` of a successful answer; panics on an error answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params).expect("url");
        let answer: Value = http()
            .get(url)
            .send()
            .await
            .expect("Prometheus API")
            .json()
            .await
            .expect("API JSON");
        assert_eq!(answer["status"], "success", "{path} {params:?}: {answer}");
        answer["data"].clone()
    }

    /// An instant query: its vector of `{metric, value}`.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// `expr` grouped by `label`, as label value -> sample value.
    async fn by_label(&self, expr: &str, label: &str) -> BTreeMap<String, f64> {
        self.query(expr)
            .await
            .iter()
            .map(|series| {
                let key = series["metric"][label].as_str().unwrap_or_default();
                let value = series["value"][1].as_str().unwrap_or_default();
                (key.to_owned(), value.parse().unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// Waits until `expr` grouped by `label` is `expected`, then asserts it.
    async fn wait_for(&self, expr: &str, label: &str, expected: &[(&str, f64)]) {
        let expected: BTreeMap<String, f64> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        let mut seen = BTreeMap::new();
        let (seen_ref, expected_ref) = (&mut seen, &expected);
        let found = tokio::time::timeout(e2e::STARTUP, async move {
            loop {
                *seen_ref = self.by_label(expr, label).await;
                if *seen_ref == *expected_ref {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "{expr} by {label}: expected {expected:?}, Prometheus has {seen:?}; stderr: {:?}",
            self.proc.stderr()
        );
    }
}

impl Prometheus {
    /// The loaded rules once `count` of them have been evaluated at least once.
    async fn evaluated_rules(&self, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + e2e::STARTUP;
        loop {
            let data = self.api("/api/v1/rules", &[]).await;
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            if rules.len() == count && rules.iter().all(|r| r["health"] != "unknown") {
                return rules;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} rules not all evaluated: {data}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// The demo server, a sidecar with JWT authentication in front of it, and a client with a
/// valid token.
struct Setup {
    demo: DemoServer,
    ws: Workspace,
    sidecar: Sidecar,
    client: McpClient,
    token: String,
}

impl Setup {
    async fn start() -> Self {
        let demo = DemoServer::start("127.0.0.1:0", false);
        let ws = Workspace::new();
        ws.policy("refund.cedar", REFUND_POLICIES);
        ws.policy("orders.cedar", NO_DELETE);
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X,
                                    "kid": "ed-1", "alg": "EdDSA", "use": "sig"}]});
        let jwks_file = ws.file("jwks.json", &jwks.to_string());
        let jwks_file = jwks_file.to_str().expect("utf-8 path");
        let env = [
            ("POLICY_SIDECAR_AUTH_MODE", "jwt"),
            ("POLICY_SIDECAR_AUTH_ISSUER", ISSUER),
            ("POLICY_SIDECAR_AUTH_JWKS_FILE", jwks_file),
            ("POLICY_SIDECAR_AUTH_AUDIENCES", "mcp-gateway"),
        ];
        let sidecar = Sidecar::start_ready(&ws.config(&demo.url, ""), &env).await;
        let token = token("alice", now() + 600);
        let client = McpClient::with_bearer(&sidecar.url, &token);
        let mut setup = Self {
            demo,
            ws,
            sidecar,
            client,
            token,
        };
        setup.client.initialize().await;
        setup
    }

    /// One round of the traffic an operator watches: a filtered list, an allowed, a denied
    /// (no permit), a forbidden and an undecidable call, two refused tokens, a broken policy
    /// edit and its fix, and a call while the upstream is down. `round` counts from 1; after
    /// round 1 the upstream comes back, after round 2 it stays down.
    async fn drive(&mut self, round: u32) {
        let mut tools = self.client.tool_names().await;
        tools.sort();
        assert_eq!(tools, ["get_order", "process_refund"]);
        let allowed = self
            .client
            .call(
                "process_refund",
                json!({"amount": 500, "customer_id": "C1"}),
            )
            .await;
        assert!(is_tool_result(&allowed), "{allowed:?}");
        let no_permit = self
            .client
            .call(
                "process_refund",
                json!({"amount": 5000, "customer_id": "C1"}),
            )
            .await;
        assert!(is_denied(&no_permit), "{no_permit:?}");
        let forbidden = self
            .client
            .call("delete_order", json!({"order_id": "ORD-1"}))
            .await;
        assert!(is_denied(&forbidden), "{forbidden:?}");
        let undecidable = self
            .client
            .call(
                "process_refund",
                json!({"amount": "lots", "customer_id": "C1"}),
            )
            .await;
        assert_eq!(undecidable.message["result"]["isError"], true);

        // Refused tokens: expired, and none at all.
        for authorization in [Some(token("alice", now() - 3600)), None] {
            let mut request = http()
                .post(&self.sidecar.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream");
            if let Some(token) = authorization {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = request
                .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string())
                .send()
                .await
                .expect("POST");
            assert_eq!(response.status().as_u16(), 401);
        }

        // A broken edit is refused (the last good set stays), then fixed.
        let broken = self.ws.policy("broken.cedar", "permit(principal,\n");
        self.sidecar
            .wait_metric(
                "the broken edit is counted",
                &format!(r#"mcp_policy_reloads_total{{result="failure"}} {round}"#),
            )
            .await;
        std::fs::remove_file(broken).expect("remove the broken file");
        self.sidecar
            .wait_metric(
                "the fix is loaded",
                &format!(
                    r#"mcp_policy_reloads_total{{result="success"}} {}"#,
                    round + 1
                ),
            )
            .await;

        // The upstream goes away: an allowed call gets a 502.
        let addr = self.demo.addr();
        self.demo.proc.kill();
        let down = self
            .client
            .call("get_order", json!({"order_id": "ORD-1"}))
            .await;
        assert_eq!(down.status, 502, "{down:?}");
        if round == 1 {
            self.demo = DemoServer::start(&addr, false);
            self.client = McpClient::with_bearer(&self.sidecar.url, &self.token);
            self.client.initialize().await;
        }
    }
}

/// `prometheus` and `promtool`, or `None` when skipping is allowed and they are missing.
fn prometheus_tools() -> Option<(PathBuf, PathBuf)> {
    match (
        tool("prometheus", "PROMETHEUS"),
        tool("promtool", "PROMTOOL"),
    ) {
        (Some(prometheus), Some(promtool)) => Some((prometheus, promtool)),
        _ if std::env::var_os("E2E_ALLOW_SKIP_PROMETHEUS").is_some_and(|v| v == "1") => {
            eprintln!(
                "\n!!! SKIPPED: prometheus/promtool not found and E2E_ALLOW_SKIP_PROMETHEUS=1. \
                 The Prometheus, alert and dashboard checks did NOT run. \
                 Install them with `apt-get install prometheus` (scripts/test.sh does).\n"
            );
            None
        }
        _ => panic!(
            "prometheus and promtool are needed (Debian package `prometheus`, which \
             scripts/test.sh installs; or set PROMETHEUS and PROMTOOL). \
             Set E2E_ALLOW_SKIP_PROMETHEUS=1 to skip this test instead."
        ),
    }
}

/// Runs `promtool check metrics` on `exposition`: its exit status and output.
fn promtool_check_metrics(promtool: &Path, exposition: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// One PromQL expression of the dashboard, and where it is.
struct DashboardQuery {
    place: String,
    expr: String,
    instant: bool,
}

/// Every dashboard of `deploy/grafana/`, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = workspace_root().join("deploy/grafana");
    let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("read deploy/grafana")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read the dashboard");
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let dashboard =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, dashboard)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!all.is_empty(), "no dashboard in deploy/grafana");
    all
}

/// Every panel, rows' panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn dashboard_queries(name: &str, dashboard: &Value) -> Vec<DashboardQuery> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(DashboardQuery {
                place: format!(
                    "{name}: panel {:?} target {}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                expr: target["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_owned(),
                instant: target["instant"] == true,
            });
        }
    }
    queries
}

/// What Grafana sends for the dashboard's variables with their default ("All") values and a
/// short time range.
fn interpolate(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

#[test]
fn dashboard_panels_are_well_formed() {
    for (name, dashboard) in dashboards() {
        assert!(
            dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: a fixed uid keeps links stable across imports"
        );
        dashboard_is_well_formed(&name, &dashboard);
    }
}

fn dashboard_is_well_formed(name: &str, dashboard: &Value) {
    let mut ids = std::collections::HashSet::new();
    for panel in panels(dashboard) {
        let title = format!("{name}: {}", panel["title"].as_str().expect("title"));
        assert!(
            ids.insert(panel["id"].as_u64().expect("numeric id")),
            "{title}: duplicate id"
        );
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: describe what the panel shows"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(
            x + w <= 24 && grid["h"].as_u64().is_some(),
            "{title}: {grid}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets.iter().chain([panel]) {
            assert_eq!(
                target["datasource"],
                json!({"type": "prometheus", "uid": "${datasource}"}),
                "{title}: queries go to the data source the user picks"
            );
        }
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                expr.contains(r#"job=~"$job",instance=~"$instance""#),
                "{title}: {expr} ignores the job and instance variables"
            );
        }
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_sidecar_and_every_dashboard_query_has_data() {
    let Some((prometheus_bin, promtool)) = prometheus_tools() else {
        return;
    };
    let mut setup = Setup::start().await;
    setup.drive(1).await;

    let target = setup.sidecar.admin.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&prometheus_bin, &target);
    eventually("Prometheus scraped the sidecar", || async {
        let Ok(response) = http()
            .get(format!("{}/api/v1/query?query=up", prometheus.url))
            .send()
            .await
        else {
            return false;
        };
        let Ok(answer) = response.json::<Value>().await else {
            return false;
        };
        answer["data"]["result"][0]["value"][1] == "1"
    })
    .await;
    // A second round once Prometheus has a first sample, so that rates are not zero.
    setup.drive(2).await;

    // The exposition as promtool reads it (the Prometheus text format) passes its lint.
    let exposition = setup.sidecar.metrics().await;
    let (ok, output) = promtool_check_metrics(&promtool, &exposition);
    assert!(
        ok && output.trim().is_empty(),
        "promtool: {output}\n{exposition}"
    );

    // PromQL through Prometheus finds what the test did.
    let job = format!(r#"job="{JOB}""#);
    prometheus
        .wait_for(
            &format!(r#"sum by (decision) (mcp_policy_decisions_total{{{job}}})"#),
            "decision",
            &[("ALLOW", 4.0), ("DENY", 4.0), ("ERROR", 2.0)],
        )
        .await;
    for (decision, by_tool) in [
        ("ALLOW", &[("get_order", 2.0), ("process_refund", 2.0)][..]),
        (
            "DENY",
            &[("delete_order", 2.0), ("process_refund", 2.0)][..],
        ),
        ("ERROR", &[("process_refund", 2.0)][..]),
    ] {
        prometheus
            .wait_for(
                &format!(
                    r#"sum by (tool) (mcp_policy_decisions_total{{{job},decision="{decision}"}})"#
                ),
                "tool",
                by_tool,
            )
            .await;
    }
    prometheus
        .wait_for(
            &format!("sum by (policy) (mcp_policy_denials_total{{{job}}})"),
            "policy",
            &[("_no_permit", 2.0), ("orders_no_delete", 2.0)],
        )
        .await;
    prometheus
        .wait_for(
            &format!("sum by (reason) (mcp_policy_jwt_failures_total{{{job}}})"),
            "reason",
            &[("expired", 2.0), ("missing_token", 2.0)],
        )
        .await;
    prometheus
        .wait_for(
            &format!("sum by (result) (mcp_policy_reloads_total{{{job}}})"),
            "result",
            &[("failure", 2.0), ("success", 3.0)],
        )
        .await;
    prometheus
        .wait_for(
            &format!(
                r#"sum by (status) (mcp_policy_upstream_responses_total{{{job},status="error"}})"#
            ),
            "status",
            &[("error", 2.0)],
        )
        .await;
    prometheus
        .wait_for(
            &format!("sum by (result) (mcp_policy_list_filtered_tools_total{{{job}}})"),
            "result",
            &[("allowed", 4.0), ("denied", 4.0)],
        )
        .await;

    for (name, dashboard) in dashboards() {
        dashboard_has_data(&prometheus, &target, &name, &dashboard).await;
    }

    // The alerting rules loaded, and every one evaluated without an error.
    let names: Vec<String> =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/alerts.yml"))
            .expect("read alerts.yml")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_owned))
            .collect();
    assert!(names.len() >= 5, "{names:?}");
    let rules = prometheus.evaluated_rules(names.len()).await;
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert!(
            names.iter().any(|n| rule["name"] == n.as_str()),
            "{rule} not in alerts.yml"
        );
    }
}

/// The variables of `dashboard` list the job and the sidecar `target`, and each of its queries
/// returns a series with a non-zero value.
async fn dashboard_has_data(prometheus: &Prometheus, target: &str, name: &str, dashboard: &Value) {
    // The dashboard's variables list the job and the sidecar.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"].as_str().expect("query string");
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("{query}: not label_values(selector, label)"));
        let values = prometheus
            .api(
                &format!("/api/v1/label/{}/values", label.trim()),
                &[("match[]", &interpolate(selector))],
            )
            .await;
        let expected = if label.trim() == "job" { JOB } else { target };
        assert_eq!(values, json!([expected]), "{name}: variable {query}");
    }

    // Every query of the dashboard returns a series with a non-zero value, as Grafana asks it:
    // an instant query, or a range query over the last 30 s.
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (start, end) = (format!("{:.3}", end - 30.0), format!("{end:.3}"));
    for query in dashboard_queries(name, dashboard) {
        let expr = interpolate(&query.expr);
        let series = if query.instant {
            prometheus.query(&expr).await
        } else {
            let data = prometheus
                .api(
                    "/api/v1/query_range",
                    &[
                        ("query", &expr),
                        ("start", &start),
                        ("end", &end),
                        ("step", "1"),
                    ],
                )
                .await;
            data["result"].as_array().cloned().unwrap_or_default()
        };
        let values: Vec<f64> = series
            .iter()
            .flat_map(|s| {
                let points = s["values"].as_array().cloned().unwrap_or_default();
                points.into_iter().chain([s["value"].clone()])
            })
            .filter_map(|point| point[1].as_str().and_then(|v| v.parse().ok()))
            .collect();
        assert!(
            values.iter().any(|v: &f64| v.is_finite() && *v != 0.0),
            "{}: {expr} returned no non-zero series: {series:?}",
            query.place
        );
    }
}
