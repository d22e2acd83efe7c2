"""The ops kit in deploy/, checked by the real tools offline: the Kubernetes manifests against the Kubernetes
schemas (kubernetes-validate), the Prometheus configuration and alert rules with promtool (its unit tests
included), and the Grafana dashboard's structure, queries and metric names."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"

# The oldest Kubernetes the manifests target (gRPC probes are GA from 1.27) and the newest schemas shipped.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
LAYERS = ("base", "overlays/inflight-autoscaling")
ALERTS = {
    "SegServeHighErrorRatio",
    "SegServeHighLatencyP95",
    "SegServeNearAdmissionLimit",
    "SegServeDown",
    "SegServeModelNotLoaded",
    "SegServeModelAbsent",
    "SegServeConfidenceDrop",
    "SegServeHistoryWriteFailing",
    "SegServeHistoryRecordsDropped",
}
# Grafana's built-in interval variables, replaced by plain durations before promtool parses a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
METRIC_NAME = re.compile(r"\bsegserve_[a-z0-9_]+\b")


def ops_tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; runs `make ops-tools` (Debian's prometheus package) if missing,
    and fails the test, saying how to get it, if it is still missing."""
    found = shutil.which(name)
    if found is None:
        done = subprocess.run(["make", "ops-tools"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        found = shutil.which(name)
        if found is None:
            pytest.fail(
                f"{name} is not installed and `make ops-tools` could not install it (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-2000:]}\n"
                "Install Debian's prometheus package, which ships promtool and prometheus: run `make ops-tools` "
                "as root (or with sudo), or `sudo apt-get install prometheus`.",
                pytrace=False,
            )
    return found


@pytest.fixture(scope="module")
def promtool() -> str:
    return ops_tool("promtool")


def run_tool(args: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def yaml_documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- Kubernetes -----------------------------------------------------------------------------------------------


def _set_image(obj: dict, image: dict) -> None:
    """kustomize's `images` transformer for a workload's containers."""
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, _, tag = container["image"].rpartition(":") if ":" in container["image"] else (container["image"], "", "")
        if "/" in tag:  # a registry port, not a tag
            name, tag = container["image"], ""
        if name == image["name"]:
            new_tag = image.get("newTag", tag)
            container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _json_patch(obj: dict, operations: list[dict]) -> None:
    """RFC 6902 add, replace and remove: what kustomize's JSON patches in this repository use."""
    for op in operations:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]]
        node = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            else:
                node[index] = copy.deepcopy(op["value"])
        else:
            assert op["op"] in ("add", "replace"), f"unsupported JSON patch op {op['op']}"
            node[last] = copy.deepcopy(op["value"])


def kustomize(directory: Path) -> list[dict]:
    """Render a kustomization in Python: resources (files and other kustomizations), images, and JSON patches with
    a target. Anything else in kustomization.yaml fails, so that this renderer never silently ignores a field."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "resources", "images", "patches"}
    assert not unsupported, f"{directory}: the test's renderer does not support {sorted(unsupported)}"
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        objects += kustomize(path) if path.is_dir() else yaml_documents(path)
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    for patch in spec.get("patches", []):
        target, operations = patch["target"], yaml.safe_load((directory / patch["path"]).read_text())
        assert isinstance(operations, list), f"{patch['path']}: only JSON 6902 patches are supported"
        matched = [
            obj
            for obj in objects
            if obj["kind"] == target["kind"]
            and obj["metadata"]["name"] == target["name"]
            and obj["apiVersion"] == "/".join(p for p in (target.get("group"), target.get("version")) if p)
        ]
        assert len(matched) == 1, f"patch {patch['path']} matches {len(matched)} objects"
        _json_patch(matched[0], operations)
    return objects


def by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    keyed = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
    assert len(keyed) == len(objects), "two objects share a kind and name"
    return keyed


@pytest.fixture(scope="module", params=LAYERS)
def rendered(request) -> dict[tuple[str, str], dict]:
    return by_kind(kustomize(K8S / request.param))


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], dict]:
    return by_kind(kustomize(K8S / "base"))


def test_base_kustomization_lists_every_manifest():
    spec = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(spec["resources"]) == sorted(on_disk)


def kustomize_command() -> list[str] | None:
    """The real kustomize, where installed: kubectl's built-in one or the standalone binary."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@pytest.mark.parametrize("layer", LAYERS)
def test_kustomization_renders_as_kustomize_does(layer):
    """The Python rendering has every kind this kit ships; where kubectl or kustomize is installed, it equals
    theirs object for object."""
    objects = by_kind(kustomize(K8S / layer))
    kinds = sorted(kind for kind, _ in objects)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Service"]
    command = kustomize_command()
    if command:
        theirs = by_kind([doc for doc in yaml.safe_load_all(run_tool([*command, str(K8S / layer)])) if doc])
        assert theirs == objects


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(rendered, version):
    for (kind, name), obj in rendered.items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{kind}/{name} is not valid Kubernetes {version}: {path}: {exc.message}", pytrace=False)


def test_the_schema_check_catches_mistakes(base):
    """kubernetes-validate in strict mode rejects a misspelt field and a wrong type: the check above has teeth."""
    deployment = copy.deepcopy(base[("Deployment", "segserve")])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": 50051}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    service = copy.deepcopy(base[("Service", "segserve")])
    service["spec"]["ports"][0]["port"] = "three thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSIONS[0], strict=True)


def container(base) -> dict:
    (only,) = base[("Deployment", "segserve")]["spec"]["template"]["spec"]["containers"]
    return only


def env(base) -> dict[str, str]:
    """The container's plain environment values (those from a Secret are left out)."""
    return {e["name"]: e["value"] for e in container(base)["env"] if "value" in e}


def quantity_bytes(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", value).groups()
    return float(number) * units.get(unit, 1)


def test_deployment_ports_probes_and_drain(base):
    pod = base[("Deployment", "segserve")]["spec"]["template"]["spec"]
    main = container(base)
    assert main["image"].split(":")[0].endswith("segserve")
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": 3000, "grpc": 50051}
    assert env(base)["SEGSERVE_GRPC_PORT"] == "50051"
    # Ready = gRPC health SERVING (models loaded); alive = BentoML's /livez on the HTTP port.
    assert main["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert "service" not in main["readinessProbe"]["grpc"]  # "" : the whole server
    liveness = main["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/livez" and ports[liveness["port"]] == 3000
    # The grace period covers the preStop sleep, the gRPC drain, and at least 20 s for HTTP requests in flight
    # and BentoML's own shutdown.
    sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = float(env(base)["SEGSERVE_GRPC_GRACE_SECONDS"])
    from segserve.history import FLUSH_SECONDS

    assert pod["terminationGracePeriodSeconds"] >= sleep + grace + FLUSH_SECONDS + 20


def burst_memory() -> tuple[float, float]:
    """The serving processes' RSS in bytes at idle and at the burst's peak, as docs/performance.md gives them."""
    row = next(
        line for line in (ROOT / "docs" / "performance.md").read_text().splitlines() if "serving processes' RSS" in line
    )
    idle, peak = (float(x) * 1e9 for x in re.findall(r"([0-9.]+) GB", row)[:2])
    return idle, peak


def test_deployment_security_and_resources(base):
    pod = base[("Deployment", "segserve")]["spec"]["template"]["spec"]
    security = container(base)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1034
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container(base)["resources"]
    assert resources["requests"]["cpu"] == "2"
    # docs/performance.md, "A burst of the largest photos": idle with the four shipped models loaded, and the peak
    # of a burst of 32 photos of 36 megapixels with the pixel budget below
    idle, peak = burst_memory()
    assert quantity_bytes(resources["requests"]["memory"]) > idle
    assert quantity_bytes(resources["limits"]["memory"]) > peak * 1.3
    from segserve.settings import Settings

    env = {e["name"]: e["value"] for e in container(base)["env"] if "value" in e}
    assert int(env["SEGSERVE_MAX_PIXELS_IN_FLIGHT"]) == Settings().max_pixels_in_flight
    assert env["SEGSERVE_MODEL_THREADS"] == resources["requests"]["cpu"]


def test_services_budget_and_autoscaler_select_the_deployment(base):
    deployment = base[("Deployment", "segserve")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    service, headless = base[("Service", "segserve")], base[("Service", "segserve-headless")]
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        grpc_port = {p["name"]: p for p in svc["spec"]["ports"]}["grpc"]
        assert grpc_port["port"] == 50051 and grpc_port["targetPort"] == "grpc"
        assert grpc_port["appProtocol"] == "grpc"
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["http"] == 3000
    assert headless["spec"]["clusterIP"] == "None"
    assert service["spec"].get("clusterIP") != "None"

    budget = base[("PodDisruptionBudget", "segserve")]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = base[("HorizontalPodAutoscaler", "segserve")]
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "segserve"}
    assert [m["resource"]["name"] for m in autoscaler["spec"]["metrics"]] == ["cpu"]
    # The budget never blocks every replica: at least one more replica than it lets go.
    assert autoscaler["spec"]["minReplicas"] > budget["spec"]["maxUnavailable"]


def test_the_history_database_url_comes_from_a_secret(base):
    """Replicas share one PostgreSQL database named by a Secret, never by a value in the manifest; the README says
    how to create the Secret and why SQLite is for one replica."""
    (entry,) = [e for e in container(base)["env"] if e["name"] == "SEGSERVE_HISTORY_URL"]
    assert "value" not in entry
    assert entry["valueFrom"]["secretKeyRef"] == {"name": "segserve-history", "key": "url"}
    assert "postgresql://" not in yaml.safe_dump(base[("Deployment", "segserve")])  # only in comments
    readme = (K8S / "README.md").read_text()
    assert "kubectl create secret generic segserve-history" in readme and "one replica" in readme
    assert base[("HorizontalPodAutoscaler", "segserve")]["spec"]["minReplicas"] > 1  # hence PostgreSQL, not SQLite


def test_admission_limit_agrees_across_the_kit(base):
    """The in-flight alert's constant, the dashboard's and the Deployment's SEGSERVE_MAX_CONCURRENT_REQUESTS match
    the service's default."""
    from segserve.settings import Settings

    limit = Settings().max_concurrent_requests
    assert env(base)["SEGSERVE_MAX_CONCURRENT_REQUESTS"] == str(limit)
    assert alert_rules()["SegServeNearAdmissionLimit"]["expr"].strip().endswith(f"> 0.8 * {limit}")
    assert load_dashboard_module().ADMISSION_LIMIT == limit


@pytest.fixture(scope="module")
def overlay() -> dict[tuple[str, str], dict]:
    return by_kind(kustomize(K8S / "overlays" / "inflight-autoscaling"))


def adapter_rules() -> list[dict]:
    values = yaml.safe_load((K8S / "overlays" / "inflight-autoscaling" / "prometheus-adapter-values.yaml").read_text())
    return values["rules"]["custom"]


def test_overlay_scales_on_requests_in_flight(overlay, base, promtool, telemetry_metrics, tmp_path):
    """The overlay keeps CPU and adds the adapter's per-pod metric; the adapter rule serves that name from a
    series the service exports, and its query parses once the adapter's template is filled in."""
    metrics = overlay[("HorizontalPodAutoscaler", "segserve")]["spec"]["metrics"]
    assert metrics[0] == base[("HorizontalPodAutoscaler", "segserve")]["spec"]["metrics"][0]
    pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
    assert len(pods) == 1 and pods[0]["target"]["type"] == "AverageValue"
    (rule,) = adapter_rules()
    assert rule["name"]["as"] == pods[0]["metric"]["name"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert set(METRIC_NAME.findall(rule["seriesQuery"])) == {"segserve_requests_in_flight"}
    assert "segserve_requests_in_flight" in telemetry_metrics
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "segserve_requests_in_flight")
        .replace("<<.LabelMatchers>>", 'namespace="inspection",pod=~"segserve-a|segserve-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    check_queries(promtool, {"adapter": [query, rule["seriesQuery"]]}, tmp_path)


# --- Prometheus -----------------------------------------------------------------------------------------------


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


@pytest.fixture(scope="module")
def telemetry_metrics() -> set[str]:
    """Every series name the service's Telemetry defines, read in a fresh interpreter (it registers into
    prometheus_client's default registry)."""
    code = (
        "import json\n"
        "from prometheus_client import REGISTRY\n"
        "from segserve.telemetry import Telemetry\n"
        "Telemetry()\n"
        "suffixes = {'counter': ['_total'], 'histogram': ['_bucket', '_sum', '_count'], 'gauge': ['']}\n"
        "print(json.dumps(sorted(f.name + s for f in REGISTRY.collect() if f.name.startswith('segserve_')"
        " for s in suffixes[f.type])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_prometheus_config_checks(promtool):
    output = run_tool([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert "alerts.yml" in output  # the rule file was found and checked too
    (job,) = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["localhost:3000"]


def test_kubernetes_scrape_config_checks(promtool, tmp_path):
    """prometheus-kubernetes.yml, with its Kubernetes discovery swapped for a static target (Debian's promtool is
    built without Kubernetes discovery): everything else, the relabelling included, passes promtool."""
    config = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["127.0.0.1:3000"]}]
    kept = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    keep = kept[("__meta_kubernetes_pod_label_app_kubernetes_io_name", "__meta_kubernetes_pod_container_port_name")]
    assert keep["action"] == "keep" and keep["regex"] == "segserve;http"
    assert {r.get("target_label") for r in job["relabel_configs"]} >= {"namespace", "pod"}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    run_tool([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path)


def test_alert_rules_check(promtool):
    output = run_tool([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    assert f"{len(ALERTS)} rules found" in output
    assert set(alert_rules()) == ALERTS


def test_alert_rules_unit_tests(promtool):
    """promtool's unit tests of every alert, with synthetic series (alerts_test.yml, alerts_drift_test.yml)."""
    output = run_tool([promtool, "test", "rules", "alerts_test.yml", "alerts_drift_test.yml"], cwd=PROMETHEUS)
    assert output.count("SUCCESS") == 2


def test_every_alert_is_tested_firing_and_quiet():
    cases: dict[str, set[bool]] = {}
    for name in ("alerts_test.yml", "alerts_drift_test.yml"):
        for group in yaml.safe_load((PROMETHEUS / name).read_text())["tests"]:
            for case in group["alert_rule_test"]:
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert {alert: {True, False} for alert in ALERTS} == cases


def test_alert_rules_name_only_service_metrics(telemetry_metrics):
    for name, rule in alert_rules().items():
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used <= telemetry_metrics, (
            f"{name} names metrics the service does not export: {used - telemetry_metrics}"
        )
        assert used or "up{" in rule["expr"], name


# --- Grafana --------------------------------------------------------------------------------------------------


def load_dashboard_module():
    spec = importlib.util.spec_from_file_location("make_dashboard", GRAFANA / "make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "segserve-dashboard.json").read_text())


def dashboard_queries(dashboard: dict) -> dict[str, list[str]]:
    return {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in dashboard["panels"]}


def check_queries(promtool: str, queries: dict[str, list[str]], tmp_path: Path) -> None:
    """Parse PromQL with promtool: each query becomes a recording rule, and `promtool check rules` parses them."""
    rules = []
    for exprs in queries.values():
        for expr in exprs:
            for variable, duration in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, duration)
            rules.append({"record": f"check:query_{len(rules)}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    output = run_tool([promtool, "check", "rules", str(path)])
    assert f"{len(rules)} rules found" in output


def test_dashboard_is_what_the_generator_writes(dashboard):
    assert json.loads(load_dashboard_module().render()) == dashboard


def test_dashboard_is_valid_dashboard_json(dashboard):
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "heatmap", "stat"} and panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"] == panel["datasource"]
    # No two panels overlap on the grid.
    cells = [
        (x, y)
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))


def test_dashboard_queries_parse(dashboard, promtool, tmp_path):
    check_queries(promtool, dashboard_queries(dashboard), tmp_path)


def test_promtool_query_check_rejects_bad_promql(promtool, tmp_path):
    with pytest.raises(AssertionError, match="failed"):
        check_queries(promtool, {"bad": ["sum by (model (rate(segserve_batch_size_count[5m]))"]}, tmp_path)


def test_dashboard_shows_what_the_issue_asks(dashboard, telemetry_metrics):
    queries = dashboard_queries(dashboard)
    used = {name for exprs in queries.values() for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= telemetry_metrics, (
        f"the dashboard names metrics the service does not export: {used - telemetry_metrics}"
    )
    for metric in (
        "segserve_requests_total",
        "segserve_request_duration_seconds_bucket",
        "segserve_batch_size_bucket",
        "segserve_model_compute_seconds_bucket",
        "segserve_requests_in_flight",
        "segserve_corrosion_asset_ratio_bucket",
        "segserve_prediction_confidence_sum",
    ):
        assert metric in used, metric
    assert "by (transport, code)" in queries["Requests by transport and code"][0]
    latency = queries["Latency percentiles (Segment, Evaluate)"]
    assert [re.match(r"histogram_quantile\(([0-9.]+),", q).group(1) for q in latency] == ["0.5", "0.95", "0.99"]
    assert "by (model)" in queries["Mean prediction confidence per model"][0]
    heatmap = next(p for p in dashboard["panels"] if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap" and "corrosion_asset_ratio" in heatmap["targets"][0]["expr"]
