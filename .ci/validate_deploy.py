#!/usr/bin/env python3
"""Static validation of the deployment files (run by .ci/validate-deploy, which installs the tools).

No cluster and no Docker engine: every check reads files. Each file gets one line, `ok` or `FAIL`
with the reasons; the exit status is 1 when any file fails.

What is checked, and with what:
- Dockerfile: hadolint; its stages, build command, user, ports, volume, health check and entry point;
  that nothing the build needs (workspace members, include_str! targets, COPY sources) is excluded by
  .dockerignore; the configuration it writes, against services/hub/src/config.rs.
- deploy/compose: the Compose specification's JSON schema (vendored by check-jsonschema), then the
  references compose does not check until run time (see check_compose), shellcheck for the scripts,
  the sample departments against services/hub/src/pki.rs, promtool for prometheus.yml.
- every hub TOML (compose, the Kubernetes ConfigMap, the Dockerfile's default): keys against the
  Config structs of services/hub/src/config.rs, which refuse unknown keys (deny_unknown_fields).
- deploy/kubernetes: kubernetes-validate's strict JSON schemas of the Kubernetes API, for the oldest
  and newest versions named below; custom resources against cert-manager's and the Prometheus
  Operator's models (cloudcoil, unknown fields refused); then cross-references between objects.
- deploy/monitoring: promtool check rules and test rules; metric and label names against
  services/hub/src/metrics.rs; the Grafana dashboard's structure, its variables and every query
  (PromQL syntax through promtool, names against metrics.rs).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "ClusterIssuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
GRPC_CODES = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
PROMQL_FUNCTIONS_AND_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and",
    "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "absent", "absent_over_time", "min_over_time", "max_over_time",
    "avg_over_time", "sum_over_time", "count_over_time", "last_over_time", "changes", "resets",
    "clamp_min", "clamp_max", "abs", "ceil", "floor", "round", "vector", "scalar", "time",
    "label_replace", "label_join", "predict_linear", "sort", "sort_desc", "timestamp", "inf", "nan",
    "humanize", "humanizePercentage", "humanizeDuration",
}


class Failures(list):
    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.append(message)
        return condition


class Run:
    def __init__(self, root: Path):
        self.root = root
        self.results: list[tuple[str, bool, str]] = []

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def report(self, path: Path, failures: list[str], what: str) -> None:
        name = self.rel(path)
        if failures:
            print(f"FAIL {name}: {what}")
            for f in failures:
                print(f"     - {f}")
        else:
            print(f"ok   {name}: {what}")
        sys.stdout.flush()
        self.results.append((name, not failures, what))


def tool(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr).strip()


def version_of(*args: str) -> str:
    try:
        return tool(*args)[1].splitlines()[0]
    except (OSError, IndexError):
        return "missing"


# -------------------------------------------------------------------------------------------------
# What the Rust sources say


class Source:
    """Facts read from the hub's sources, so that the deployment files follow the code."""

    def __init__(self, root: Path):
        self.root = root
        self.config_structs = self._config_structs()
        self.metrics = self._metrics()
        self.departments = self._departments()
        self.methods = self._methods()
        self.scorecard_indicators = self._scorecard_indicators()
        cli = tomllib.loads((root / "services/cli/Cargo.toml").read_text())
        self.cli_package = cli["package"]["name"]
        self.cli_binaries = [b["name"] for b in cli.get("bin", [])] or [self.cli_package]
        workspace = tomllib.loads((root / "Cargo.toml").read_text())
        self.workspace_members = workspace["workspace"]["members"]

    def _config_structs(self) -> dict[str, dict[str, str]]:
        """struct name -> {field: type} for the serde structs of config.rs ([serde(skip)] left out)."""
        text = (self.root / "services/hub/src/config.rs").read_text()
        structs = {}
        for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
            fields = {}
            skip = False
            for line in m.group(2).splitlines():
                line = line.strip()
                if line.startswith("#[serde(skip"):
                    skip = True
                    continue
                fm = re.match(r"pub (\w+): (.+),$", line)
                if fm:
                    if not skip:
                        fields[fm.group(1)] = fm.group(2)
                    skip = False
            structs[m.group(1)] = fields
        if "Config" not in structs:
            raise SystemExit("cannot read the Config struct from services/hub/src/config.rs")
        return structs

    def _metrics(self) -> dict[str, set[str]]:
        """Series name -> label names, for every series the hub exports."""
        text = (self.root / "services/hub/src/metrics.rs").read_text()
        kinds: dict[str, str] = {}
        for name, kind in re.findall(r'family\(\s*out,\s*"(xinqiao_\w+)",\s*"(\w+)"', text):
            kinds[name] = kind
        dataset_families = re.findall(r'name:\s*"(xinqiao_\w+)",\s*kind:\s*"(\w+)"', text)
        for name, kind in dataset_families:
            kinds[name] = kind
        labels: dict[str, set[str]] = {name: set() for name in kinds}
        for name, body in re.findall(r'sample\(\s*out,\s*"(xinqiao_\w+)",\s*&\[(.*?)\]', text, re.S):
            labels.setdefault(name, set()).update(re.findall(r'\(\s*"(\w+)"\s*,', body))
        m = re.search(r'sample\(\s*out,\s*f\.name,\s*&\[(.*?)\]', text, re.S)
        family_labels = set(re.findall(r'\(\s*"(\w+)"\s*,', m.group(1))) if m else set()
        for name, _ in dataset_families:
            labels[name] |= family_labels
        for name, body in re.findall(r'histogram\(\s*out,\s*"(xinqiao_\w+)",\s*&\[(.*?)\]', text, re.S):
            labels[name].update(re.findall(r'\(\s*"(\w+)"\s*,', body))
        series: dict[str, set[str]] = {}
        for name, kind in kinds.items():
            if kind == "histogram":
                series[f"{name}_bucket"] = labels[name] | {"le"}
                series[f"{name}_sum"] = set(labels[name])
                series[f"{name}_count"] = set(labels[name])
            else:
                series[name] = labels[name]
        required = {"xinqiao_rpc_requests_total", "xinqiao_audit_chain_length"}
        if not required <= set(series):
            raise SystemExit(f"cannot read the metric families from services/hub/src/metrics.rs: {sorted(series)}")
        # Families that take labels but whose labels were not found: a change of the code's shape.
        for name, kind in kinds.items():
            if name != "xinqiao_audit_chain_length" and not labels[name]:
                raise SystemExit(f"cannot read the labels of {name} from services/hub/src/metrics.rs")
        series["up"] = set()
        return {name: lbls | TARGET_LABELS for name, lbls in series.items()}

    def _departments(self) -> list[tuple[str, str, str, str]]:
        text = (self.root / "services/hub/src/pki.rs").read_text()
        block = re.search(r"SAMPLE_DEPARTMENTS: &\[SampleDepartment\] = &\[(.*?)\n\];", text, re.S)
        if not block:
            raise SystemExit("cannot read SAMPLE_DEPARTMENTS from services/hub/src/pki.rs")
        return re.findall(
            r'code:\s*"([^"]+)",\s*name:\s*"([^"]+)",\s*division_code:\s*"([^"]+)",\s*contact:\s*"([^"]+)"',
            block.group(1),
        )

    def _methods(self) -> set[str]:
        methods = set()
        for proto in (self.root / "proto").rglob("*.proto"):
            methods |= set(re.findall(r"\brpc\s+(\w+)\s*\(", proto.read_text()))
        # Served beside the API: health checks and reflection.
        return methods | {"Check", "Watch", "ServerReflectionInfo", "unknown"}

    def _scorecard_indicators(self) -> set[str]:
        text = (self.root / "services/hub/src/evaluation.rs").read_text()
        found = set(re.findall(r'set_scorecard\(\s*d,\s*"(\w+)"', text))
        m = re.search(r"let parts = \[(.*?)\];", text, re.S)
        if m:
            found |= set(re.findall(r'\("(\w+)",', m.group(1)))
        return found


def check_hub_toml(source: Source, text: str, failures: Failures, where: str) -> dict:
    """A hub configuration: TOML, and every key one the hub knows (it refuses unknown ones)."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        failures.append(f"{where}: not TOML: {e}")
        return {}
    top = source.config_structs["Config"]
    for key, value in config.items():
        if key not in top:
            failures.append(f"{where}: unknown key '{key}' (services/hub/src/config.rs Config)")
            continue
        if isinstance(value, dict):
            struct = top[key]
            fields = source.config_structs.get(struct)
            if fields is None:
                failures.append(f"{where}: [{key}] is not a section")
                continue
            for sub in value:
                failures.check(sub in fields, f"{where}: unknown key '{key}.{sub}' (services/hub/src/config.rs {struct})")
    for key in ("listen",):
        if key in config:
            failures.check(bool(re.fullmatch(r"[0-9.]+:\d+|\[[0-9a-f:]+\]:\d+", config[key])), f"{where}: {key} is not an IP:port")
    metrics = config.get("metrics", {}).get("listen")
    if metrics is not None:
        failures.check(bool(re.fullmatch(r"[0-9.]+:\d+|\[[0-9a-f:]+\]:\d+", metrics)), f"{where}: metrics.listen is not an IP:port")
    audit = config.get("audit", {})
    failures.check(audit.get("retention_days", 180) >= 180, f"{where}: audit.retention_days below the legal 180")
    failures.check(audit.get("hash", "sha256") in ("sha256", "sm3"), f"{where}: audit.hash is neither sha256 nor sm3")
    return config


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# -------------------------------------------------------------------------------------------------
# PromQL


def promql_names(expr: str) -> tuple[set[str], list[tuple[str, str, str]], set[str]]:
    """Metric names, (metric, label, value) matchers and grouping labels of an expression (a
    lexical reading, enough for the names the deployment files use)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: m.group(0).replace(" ", "\x00"), expr)
    names = set()
    matchers = []
    grouping = set()
    for m in re.finditer(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        grouping |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?", expr):
        word, selector = m.group(1), m.group(3)
        before = expr[: m.start()]
        if re.search(r"\b(by|without|on|ignoring)\s*\([^)]*$", before):
            continue  # inside a grouping clause
        if re.search(r"\[[^\]]*$", before):
            continue  # inside a range like [5m]
        if word in PROMQL_FUNCTIONS_AND_KEYWORDS and selector is None:
            continue
        after = expr[m.end():].lstrip()
        if selector is None and after.startswith("("):
            continue  # a function call
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
        for lm in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', (selector or "").replace("\x00", " ")):
            matchers.append((word, lm.group(1), lm.group(3)))
    return names, matchers, grouping


def check_promql(source: Source, expr: str, failures: Failures, where: str) -> None:
    names, matchers, grouping = promql_names(expr)
    known = source.metrics
    if not names:
        failures.append(f"{where}: names no metric: {expr}")
    for name in names:
        failures.check(name in known, f"{where}: metric {name} is not exported by the hub (services/hub/src/metrics.rs)")
    labels_in_expr = set().union(*(known.get(n, set()) for n in names)) if names else set()
    for metric, label, value in matchers:
        if metric not in known:
            continue
        failures.check(label in known[metric], f"{where}: {metric} has no label '{label}'")
        if label == "code":
            for v in re.split(r"\|", value):
                failures.check(v in GRPC_CODES or "$" in v, f"{where}: '{v}' is not a gRPC status code name")
        if label == "method":
            for v in re.split(r"\|", value):
                failures.check(v in source.methods or "$" in v or v == "", f"{where}: no RPC method named '{v}' in proto/")
        if label == "indicator":
            for v in re.split(r"\|", value):
                failures.check(v in source.scorecard_indicators or "$" in v, f"{where}: the hub sets no scorecard indicator '{v}'")
    for label in grouping:
        failures.check(label in labels_in_expr, f"{where}: groups by '{label}', which no metric of the expression has")


def promtool_check_exprs(exprs: dict[str, str], failures: Failures) -> None:
    """PromQL syntax: every expression as a recording rule, through `promtool check rules`."""
    if not exprs:
        return
    rules = [{"record": f"validate:expr{i}", "expr": e} for i, e in enumerate(exprs.values())]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "validate", "rules": rules}]}, f)
    code, out = tool("promtool", "check", "rules", f.name)
    Path(f.name).unlink()
    if code != 0:
        where = list(exprs)
        found = re.findall(r"group \"validate\", rule (\d+), \"validate:expr\d+\": could not parse expression: (.*)", out)
        for number, message in found:
            failures.append(f"{where[int(number) - 1]}: {message}")
        if not found:
            failures.append(f"promtool check rules: {out}")


# -------------------------------------------------------------------------------------------------
# Dockerfile


def dockerignore_patterns(root: Path) -> list[tuple[bool, str]]:
    patterns = []
    path = root / ".dockerignore"
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def ignored(patterns: list[tuple[bool, str]], path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, '/'-separated) out of the build context: a
    pattern matches the path or one of its parent directories; the last matching pattern wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pattern in patterns:
        regex = fnmatch.translate(pattern.replace("**/", "\x00")).replace("\x00", "(?:.*/)?")
        if any(re.match(regex, p) for p in prefixes):
            result = not negate
    return result


def check_dockerignore(run: Run) -> None:
    path = run.root / ".dockerignore"
    failures = Failures()
    if not failures.check(path.exists(), "missing"):
        return run.report(path, failures, "")
    patterns = dockerignore_patterns(run.root)
    failures.check(ignored(patterns, "target/release/xinqiao"), "does not exclude target/")
    failures.check(ignored(patterns, ".git/HEAD"), "does not exclude .git")
    run.report(path, failures, "excludes target/ and .git")


def check_dockerfile(run: Run, source: Source) -> None:
    path = run.root / "Dockerfile"
    failures = Failures()
    code, out = tool("hadolint", "--no-color", str(path))
    failures.check(code == 0, f"hadolint: {out}")
    import dockerfile  # the Go buildkit parser

    try:
        commands = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as e:
        failures.append(f"does not parse: {e}")
        return run.report(path, failures, "")
    stages: list[list] = []
    for c in commands:
        if c.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(c)
    failures.check(len(stages) >= 2, f"{len(stages)} stage(s): a multi-stage build is expected")
    runs = " ".join(" ".join(c.value) for s in stages[:-1] for c in s if c.cmd == "RUN")
    build = re.search(r"cargo build ([^&;]*)", runs)
    if failures.check(build is not None, "no `cargo build` in a build stage"):
        args = build.group(1).split()
        failures.check("--release" in args, "cargo build without --release")
        failures.check("--locked" in args, "cargo build without --locked (the committed Cargo.lock)")
        failures.check(
            f"-p {source.cli_package}" in build.group(1) or f"--package {source.cli_package}" in build.group(1),
            f"cargo build does not name the CLI package {source.cli_package} (services/cli/Cargo.toml)",
        )
        failures.check(
            f"target/release/{source.cli_binaries[0]}" in runs,
            f"the build stage does not take target/release/{source.cli_binaries[0]}",
        )
    final = stages[-1] if stages else []

    def last(cmd: str):
        found = [c for c in final if c.cmd == cmd]
        return found[-1] if found else None

    user = last("USER")
    if failures.check(user is not None, "the runtime stage sets no USER"):
        failures.check(user.value[0].split(":")[0] not in ("0", "root"), f"runs as {user.value[0]}")
    expose = {v.split("/")[0] for c in final if c.cmd == "EXPOSE" for v in c.value}
    failures.check({"7443", "9464"} <= expose, f"EXPOSE {sorted(expose)}; 7443 and 9464 expected")
    volumes = [v for c in final if c.cmd == "VOLUME" for v in c.value]
    failures.check("/var/lib/xinqiao" in volumes, "no VOLUME /var/lib/xinqiao")
    health = last("HEALTHCHECK")
    if failures.check(health is not None, "no HEALTHCHECK"):
        text = " ".join(health.value)
        failures.check("xinqiao check" in text and "--hub-ready" in text, "HEALTHCHECK does not run `xinqiao check --hub-ready`")
    entry = last("ENTRYPOINT")
    failures.check(entry is not None and entry.value[0].endswith("xinqiao"), "ENTRYPOINT is not the xinqiao binary")
    # The build context: COPY sources exist and .dockerignore keeps in what the build needs.
    patterns = dockerignore_patterns(run.root)
    needed = ["Cargo.toml", "Cargo.lock"] + [f"{m}/Cargo.toml" for m in source.workspace_members]
    needed += [str(p.relative_to(run.root)) for p in (run.root / "proto").rglob("*.proto")]
    for rs in (run.root / "services").rglob("*.rs"):
        for target in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', rs.read_text()):
            resolved = (rs.parent / target).resolve()
            if resolved.is_relative_to(run.root):
                needed.append(str(resolved.relative_to(run.root)))
    for c in final + [c for s in stages[:-1] for c in s]:
        if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
            for src in c.value[:-1]:
                if src == ".":
                    continue
                failures.check((run.root / src).exists(), f"COPY {src}: no such path")
                needed.append(src.rstrip("/"))
    for n in needed:
        failures.check(not ignored(patterns, n), f".dockerignore excludes {n}, which the build needs")
    # The default configuration the runtime stage writes.
    written = [c for c in final if c.cmd == "RUN" and "/etc/xinqiao/xinqiao.toml" in " ".join(c.value)]
    if written:
        lines = re.findall(r"'([^']*)'", " ".join(written[0].value))
        config = check_hub_toml(source, "\n".join(lines[1:]) + "\n", failures, "the default configuration")
        failures.check("listen" in config.get("metrics", {}), "the default configuration has no [metrics] listen for the HEALTHCHECK")
    run.report(path, failures, f"hadolint, {len(stages)} stages, non-root USER, health check, build context")


# -------------------------------------------------------------------------------------------------
# Compose


def check_compose(run: Run, source: Source) -> None:
    base = run.root / "deploy/compose"
    path = base / "compose.yaml"
    failures = Failures()
    code, out = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))
    failures.check(code == 0, f"Compose specification schema: {out}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        failures.append(f"YAML: {e}")
        return run.report(path, failures, "")
    services: dict = doc.get("services", {})
    declared_volumes = set((doc.get("volumes") or {}).keys())
    used_volumes = set()
    host_ports = []
    # Interpolation: compose reads `$` as a variable; a literal one is written `$$`.
    raw = path.read_text()
    for lineno, line in enumerate(raw.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        stripped = line.replace("$$", "")
        failures.check("$" not in stripped, f"line {lineno}: a `$` compose would interpolate (write `$$`)")
    for name, svc in services.items():
        depends_on = svc.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {d: {} for d in depends_on}
        for dep, spec in depends_on.items():
            failures.check(dep in services, f"{name}: depends_on {dep}, no such service")
            condition = (spec or {}).get("condition", "service_started")
            if dep in services and condition == "service_healthy":
                hc = services[dep].get("healthcheck")
                has = (hc and not hc.get("disable")) or services[dep].get("image", "").startswith("xinqiao")
                failures.check(bool(has), f"{name}: waits for {dep} to be healthy, which has no health check")
            if dep in services and condition == "service_completed_successfully":
                failures.check(services[dep].get("restart", "no") == "no", f"{name}: waits for {dep} to complete, which restarts")
        build = svc.get("build")
        if build:
            context = (base / (build["context"] if isinstance(build, dict) else build)).resolve()
            dockerfile_name = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            failures.check((context / dockerfile_name).exists(), f"{name}: no {dockerfile_name} in the build context {context}")
        for volume in svc.get("volumes") or []:
            spec = volume if isinstance(volume, str) else f"{volume.get('source', '')}:{volume.get('target', '')}"
            src = spec.split(":")[0]
            if src.startswith((".", "/")):
                failures.check((base / src).exists(), f"{name}: mounts {src}, which does not exist")
            else:
                used_volumes.add(src)
                failures.check(src in declared_volumes, f"{name}: volume {src} is not declared under volumes:")
        for port in svc.get("ports") or []:
            published = str(port).rsplit(":", 1)[0]
            host_ports.append(published)
        entry = svc.get("entrypoint") or []
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == "/bin/sh":
            targets = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes") or [] if isinstance(v, str)}
            failures.check(entry[1] in targets, f"{name}: runs {entry[1]}, which no volume mounts")
    failures.check(not (declared_volumes - used_volumes), f"volumes declared but unused: {sorted(declared_volumes - used_volumes)}")
    failures.check(len(host_ports) == len(set(host_ports)), f"a host port is published twice: {host_ports}")
    # The platform itself.
    hubs = [n for n, s in services.items() if "serve" in (s.get("command") or [])]
    failures.check(len(hubs) >= 2, f"{len(hubs)} hub node(s); two expected")
    image_services = [n for n, s in services.items() if str(s.get("image", "")).startswith("xinqiao")]
    builds = {json.dumps(services[n].get("build"), sort_keys=True) for n in image_services}
    failures.check(len(builds) == 1, "the xinqiao services do not all build the same image")
    init = services.get("init", {})
    failures.check(init.get("restart") == "no", "init is not a one-shot (restart: \"no\")")
    for hub in hubs:
        svc = services[hub]
        deps = svc.get("depends_on") or {}
        failures.check("--no-migrate" in svc["command"], f"{hub}: serve without --no-migrate")
        failures.check(deps.get("init", {}).get("condition") == "service_completed_successfully", f"{hub}: does not wait for init to complete")
        failures.check(deps.get("postgres", {}).get("condition") == "service_healthy", f"{hub}: does not wait for postgres to be healthy")
        hc = svc.get("healthcheck") or {}
        failures.check("--hub-ready" in " ".join(hc.get("test", [])), f"{hub}: health check without `xinqiao check --hub-ready`")
        failures.check(any(str(p).endswith(":7443") for p in svc.get("ports") or []), f"{hub}: gRPC port not published")
    failures.check(services.get("postgres", {}).get("image", "").startswith("postgres:16"), "PostgreSQL is not version 16")
    # The hub configuration mounted everywhere, and what it points at.
    config_path = base / "hub.toml"
    # (hub.toml's own findings are reported on its line below.)
    config = check_hub_toml(source, config_path.read_text(), Failures(), "hub.toml")
    metrics_port = port_of(config.get("metrics", {}).get("listen", "0:0"))
    for hub in hubs:
        mounts = [str(v) for v in services[hub].get("volumes") or []]
        targets = [m.split(":")[1] for m in mounts]
        for key, file in config.get("tls", {}).items():
            failures.check(any(file.startswith(t + "/") for t in targets), f"{hub}: tls.{key} {file} is in no mounted volume")
    # init makes a hub certificate for every name the hubs are reached by.
    init_sh = (base / "init.sh").read_text()
    hosts = set(re.findall(r"--host\s+(\S+)", init_sh))
    for hub in hubs:
        failures.check(hub in hosts, f"init.sh: the hub certificate does not name {hub}")
    register = services.get("register", {})
    hub_url = (register.get("environment") or {}).get("XINQIAO_HUB", "")
    m = re.fullmatch(r"https://([^:/]+):(\d+)", hub_url)
    if failures.check(m is not None, f"register: XINQIAO_HUB {hub_url!r} is not https://HOST:PORT"):
        failures.check(m.group(1) in hubs and m.group(1) in hosts, f"register: {m.group(1)} is not a hub named in the certificate")
        failures.check(
            (register.get("depends_on") or {}).get(m.group(1), {}).get("condition") == "service_healthy",
            f"register: does not wait for {m.group(1)} to be healthy",
        )
    # Prometheus scrapes every hub on the metrics port.
    prom = yaml.safe_load((base / "prometheus.yml").read_text())
    targets = {t for sc in prom.get("scrape_configs", []) if sc.get("job_name") == "xinqiao" for st in sc.get("static_configs", []) for t in st.get("targets", [])}
    failures.check(targets == {f"{h}:{metrics_port}" for h in hubs}, f"prometheus.yml scrapes {sorted(targets)}, not every hub on {metrics_port}")
    run.report(path, failures, f"compose-spec schema (check-jsonschema), {len(services)} services, references")
    check_shell(run, base / "init.sh", "sh")
    check_register(run, source, base / "register.sh")
    hub_failures = Failures()
    check_hub_toml(source, config_path.read_text(), hub_failures, "hub.toml")
    hub_failures.check(config.get("migrate_on_start") is False, "migrate_on_start is not false (init migrates)")
    hub_failures.check(config.get("database_url", "").startswith("postgres://") and "@postgres:" in config.get("database_url", ""),
                       "database_url is not the compose PostgreSQL")
    run.report(config_path, hub_failures, "keys known to services/hub/src/config.rs")
    check_prometheus_config(run, base / "prometheus.yml")


def check_shell(run: Run, path: Path, shell: str) -> None:
    failures = Failures()
    code, out = tool("shellcheck", "--shell", shell, str(path))
    failures.check(code == 0, f"shellcheck: {out}")
    run.report(path, failures, f"shellcheck ({shell})")


def check_register(run: Run, source: Source, path: Path) -> None:
    failures = Failures()
    code, out = tool("shellcheck", "--shell", "sh", str(path))
    failures.check(code == 0, f"shellcheck: {out}")
    registered = re.findall(r'^register (\S+) "([^"]+)" (\S+) "([^"]+)"$', path.read_text(), re.M)
    failures.check(
        sorted(registered) == sorted(source.departments),
        f"registers {registered}, but SAMPLE_DEPARTMENTS (services/hub/src/pki.rs) is {source.departments}",
    )
    run.report(path, failures, f"shellcheck (sh), {len(registered)} departments = SAMPLE_DEPARTMENTS")


def check_prometheus_config(run: Run, path: Path) -> None:
    """`promtool check config` on the file, with its rule_files pointed at the repository's
    alerts.yml (compose mounts it at /etc/prometheus/alerts.yml, which does not exist here)."""
    failures = Failures()
    config = yaml.safe_load(path.read_text())
    alerts = run.root / "deploy/monitoring/alerts.yml"
    rules = config.get("rule_files", [])
    resolved = []
    for r in rules:
        local = alerts if r == "/etc/prometheus/alerts.yml" else (path.parent / r).resolve()
        failures.check(local == alerts, f"rule file {r} is not deploy/monitoring/alerts.yml")
        resolved.append(str(local))
    jobs = [sc.get("job_name") for sc in config.get("scrape_configs", [])]
    failures.check("xinqiao" in jobs, "no scrape job named xinqiao (the alerts and the dashboard expect it)")
    with tempfile.TemporaryDirectory() as tmp:
        config["rule_files"] = resolved
        copy = Path(tmp) / "prometheus.yml"
        copy.write_text(yaml.safe_dump(config))
        code, out = tool("promtool", "check", "config", str(copy))
        failures.check(code == 0, f"promtool check config: {out}")
    run.report(path, failures, "promtool check config (with its rule file)")


# -------------------------------------------------------------------------------------------------
# Kubernetes


def crd_models():
    import cloudcoil.pydantic

    # Strict: a field the custom resource does not define is an error, as in the Kubernetes schemas.
    cloudcoil.pydantic.BaseModel.model_config["extra"] = "forbid"
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    return {
        ("cert-manager.io/v1", "Issuer"): cert_manager.Issuer,
        ("cert-manager.io/v1", "ClusterIssuer"): cert_manager.ClusterIssuer,
        ("cert-manager.io/v1", "Certificate"): cert_manager.Certificate,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus_operator.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PodMonitor"): prometheus_operator.PodMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): prometheus_operator.PrometheusRule,
    }


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_kubernetes(run: Run, source: Source) -> None:
    import kubernetes_validate
    import pydantic

    base = run.root / "deploy/kubernetes"
    kustomization_path = base / "kustomization.yaml"
    kfail = Failures()
    kustomization = yaml.safe_load(kustomization_path.read_text())
    resources = kustomization.get("resources", [])
    files = sorted(p.name for p in base.glob("*.yaml") if p.name != "kustomization.yaml")
    for r in resources:
        kfail.check((base / r).is_file(), f"lists {r}, which does not exist")
    for f in files:
        kfail.check(f in resources, f"{f} is not listed in resources")
    kfail.check(kustomization.get("kind") == "Kustomization", "not a Kustomization")

    models = crd_models()
    objects: list[tuple[str, dict]] = []
    for name in files:
        path = base / name
        failures = Failures()
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            failures.append(f"YAML: {e}")
            run.report(path, failures, "")
            continue
        kinds = []
        for doc in docs:
            api, kind = doc.get("apiVersion"), doc.get("kind")
            label = f"{kind}/{doc.get('metadata', {}).get('name')}"
            kinds.append(label)
            failures.check("namespace" not in doc.get("metadata", {}), f"{label}: names a namespace")
            if (api, kind) in CRD_KINDS:
                try:
                    models[(api, kind)].model_validate(doc)
                except pydantic.ValidationError as e:
                    failures.append(f"{label}: {e}".replace("\n", " | "))
            else:
                for version in KUBERNETES_VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        where = ".".join(str(p) for p in e.path)
                        failures.append(f"{label} (Kubernetes {version}): {where}: {e.message}")
                    except kubernetes_validate.SchemaNotFoundError:
                        failures.append(f"{label}: no schema for {api} {kind} in Kubernetes {version}")
            objects.append((name, doc))
        crd = any((d.get("apiVersion"), d.get("kind")) in CRD_KINDS for d in docs)
        what = "custom resource models (cloudcoil, strict)" if crd else "Kubernetes " + "/".join(v.rsplit(".", 1)[0] for v in KUBERNETES_VERSIONS) + " strict schemas"
        run.report(path, failures, f"{what}: {', '.join(kinds)}")

    # Cross-references between the objects.
    by_kind: dict[str, list[dict]] = {}
    for _, doc in objects:
        by_kind.setdefault(doc["kind"], []).append(doc)
    x = Failures()
    x.check("Ingress" not in by_kind, "an Ingress: gRPC must reach the hub as TCP (mTLS ends at the hub)")
    deployments = by_kind.get("Deployment", [])
    if x.check(len(deployments) == 1, f"{len(deployments)} Deployments; one expected"):
        d = deployments[0]
        spec = d["spec"]
        pod = spec["template"]["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        x.check(matches(spec["selector"]["matchLabels"], pod_labels), "the Deployment's selector does not match its pods")
        x.check(spec.get("replicas", 1) >= 2, "fewer than two replicas")
        c = pod["containers"][0]
        args = c.get("args", [])
        x.check(args[:1] == ["serve"] and "--no-migrate" in args, f"the hub container runs {args}, not serve --no-migrate")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("readinessProbe", "livenessProbe", "startupProbe")}
        x.check(probes["readinessProbe"].get("path") == "/readyz", "readinessProbe is not GET /readyz")
        x.check(probes["livenessProbe"].get("path") == "/healthz", "livenessProbe is not GET /healthz")
        x.check(bool(probes["startupProbe"]), "no startupProbe")
        for k, probe in probes.items():
            port = probe.get("port")
            x.check(ports.get(port, port) == 9464, f"{k} does not ask port 9464")
        x.check(all(c.get("resources", {}).get(k) for k in ("requests", "limits")), "resources without requests and limits")
        sc = c.get("securityContext", {})
        psc = pod.get("securityContext", {})
        x.check(sc.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
        x.check(psc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
        anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
        x.check(any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" and matches(t["podAffinityTerm"]["labelSelector"]["matchLabels"], pod_labels) for t in anti),
                "no preferred pod anti-affinity by kubernetes.io/hostname for the hub pods")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) == 2 else 0
        x.check(sleep > 0, "no preStop sleep for the load balancers to drain")
        # The configuration file: where --config points, and what it points at.
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        config_file = args[args.index("--config") + 1] if "--config" in args else ""
        config_dir, config_key = config_file.rsplit("/", 1) if "/" in config_file else ("", "")
        cm_name = volumes.get(mounts.get(config_dir, ""), {}).get("configMap", {}).get("name")
        configmaps = {m["metadata"]["name"]: m for m in by_kind.get("ConfigMap", [])}
        if x.check(cm_name in configmaps and config_key in configmaps[cm_name].get("data", {}), f"--config {config_file} is not a key of a ConfigMap mounted there"):
            cm_fail = Failures()
            config = check_hub_toml(source, configmaps[cm_name]["data"][config_key], cm_fail, f"ConfigMap {cm_name} {config_key}")
            x.extend(cm_fail)
            grace = config.get("limits", {}).get("shutdown_grace_secs", 30)
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            x.check(tgps > grace + sleep, f"terminationGracePeriodSeconds {tgps} is not above preStop {sleep} s + shutdown_grace_secs {grace} s")
            x.check(port_of(config.get("listen", "0:0")) == ports.get("grpc"), "the configured listen port is not the grpc containerPort")
            x.check(port_of(config.get("metrics", {}).get("listen", "0:0")) == ports.get("metrics"), "the configured metrics port is not the metrics containerPort")
            x.check(config.get("migrate_on_start") is False, "migrate_on_start is not false (the Job migrates)")
            x.check(":" not in config.get("database_url", "").split("@")[0].split("//")[-1], "database_url carries a password (use the Secret's PGPASSWORD)")
            # The TLS files: in a mounted volume whose sources provide them.
            for key, file in config.get("tls", {}).items():
                directory, filename = file.rsplit("/", 1)
                volume = volumes.get(mounts.get(directory, ""), {})
                provided = set()
                for s in volume.get("projected", {}).get("sources", []):
                    for kind in ("secret", "configMap"):
                        provided |= {i["path"] for i in s.get(kind, {}).get("items", [])}
                for kind in ("secret", "configMap"):
                    provided |= {i["path"] for i in volume.get(kind, {}).get("items", [])}
                x.check(filename in provided, f"tls.{key} {file}: no mounted volume provides it")
        # The Secret that cert-manager writes is the one mounted.
        secrets = {s["secret"]["name"] for v in volumes.values() for s in v.get("projected", {}).get("sources", []) if "secret" in s}
        certs = by_kind.get("Certificate", [])
        x.check(any(cert["spec"]["secretName"] in secrets for cert in certs), "no Certificate writes the Secret the hub mounts")
        issuers = {i["metadata"]["name"] for i in by_kind.get("Issuer", [])}
        for cert in certs:
            ref = cert["spec"]["issuerRef"]
            if ref.get("kind", "Issuer") == "Issuer":
                x.check(ref["name"] in issuers, f"Certificate {cert['metadata']['name']}: no Issuer {ref['name']}")
        # Services, the PDB, the Job, the ServiceMonitor.
        services = by_kind.get("Service", [])
        for s in services:
            x.check(matches(s["spec"]["selector"], pod_labels), f"Service {s['metadata']['name']} selects no hub pod")
            for p in s["spec"]["ports"]:
                x.check(p.get("targetPort") in ports or p.get("targetPort") in ports.values(), f"Service {s['metadata']['name']}: targetPort {p.get('targetPort')} is no container port")
                x.check(p.get("protocol", "TCP") == "TCP", f"Service {s['metadata']['name']}: not TCP")
        grpc = [s for s in services if any(p.get("targetPort") in ("grpc", 7443) for p in s["spec"]["ports"])]
        x.check(len(grpc) == 1 and grpc[0]["spec"].get("type") in ("LoadBalancer", "ClusterIP"), "no LoadBalancer or ClusterIP Service for gRPC")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            x.check(matches(pdb["spec"]["selector"]["matchLabels"], pod_labels), "the PodDisruptionBudget selects no hub pod")
            x.check(pdb["spec"].get("minAvailable") == 1, "the PodDisruptionBudget's minAvailable is not 1")
        x.check(bool(by_kind.get("PodDisruptionBudget")), "no PodDisruptionBudget")
        jobs = by_kind.get("Job", [])
        if x.check(len(jobs) == 1, "no migration Job"):
            jc = jobs[0]["spec"]["template"]["spec"]["containers"][0]
            x.check(jc.get("args", [])[:1] == ["migrate"], "the Job does not run xinqiao migrate")
            x.check(jc.get("image") == c.get("image"), "the Job and the Deployment run different images")
        image_names = {i["name"] for i in kustomization.get("images", [])}
        x.check(c["image"].split(":")[0] in image_names, f"kustomization images: does not set {c['image'].split(':')[0]}")
        metrics_services = [s for s in services if any(p.get("targetPort") in ("metrics", 9464) for p in s["spec"]["ports"])]
        for sm in by_kind.get("ServiceMonitor", []):
            selected = [s for s in metrics_services if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
            if x.check(len(selected) == 1, "the ServiceMonitor does not select exactly the metrics Service"):
                names = {p.get("name") for p in selected[0]["spec"]["ports"]}
                for e in sm["spec"]["endpoints"]:
                    x.check(e.get("port") in names, f"ServiceMonitor endpoint port {e.get('port')} is not a port of the metrics Service")
                job = selected[0]["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), selected[0]["metadata"]["name"])
                x.check(job == "xinqiao", f"the scrape job would be '{job}'; the alerts and the dashboard expect job=\"xinqiao\"")
        x.check(bool(by_kind.get("ServiceMonitor")), "no ServiceMonitor")
    # The PrometheusRule carries exactly the alert rules of deploy/monitoring/alerts.yml.
    alerts = yaml.safe_load((run.root / "deploy/monitoring/alerts.yml").read_text())
    rules = by_kind.get("PrometheusRule", [])
    if x.check(len(rules) == 1, "no PrometheusRule"):
        x.check(rules[0]["spec"]["groups"] == alerts["groups"], "PrometheusRule spec.groups differs from deploy/monitoring/alerts.yml")
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, f)
        code, out = tool("promtool", "check", "rules", f.name)
        Path(f.name).unlink()
        x.check(code == 0, f"promtool check rules on the PrometheusRule: {out}")
    run.report(kustomization_path, kfail + x, f"lists every manifest; cross-references between {len(objects)} objects")


# -------------------------------------------------------------------------------------------------
# Monitoring


def check_alerts(run: Run, source: Source) -> None:
    base = run.root / "deploy/monitoring"
    path = base / "alerts.yml"
    failures = Failures()
    code, out = tool("promtool", "check", "rules", str(path))
    failures.check(code == 0, f"promtool check rules: {out}")
    doc = yaml.safe_load(path.read_text())
    count = 0
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            count += 1
            name = rule.get("alert") or rule.get("record")
            check_promql(source, rule["expr"], failures, name)
            failures.check(rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), f"{name}: no severity")
            failures.check("summary" in rule.get("annotations", {}), f"{name}: no summary")
            for v in re.findall(r'job="([^"]*)"', rule["expr"]):
                failures.check(v == "xinqiao", f"{name}: job=\"{v}\"; the scrape job is xinqiao")
    run.report(path, failures, f"promtool check rules, {count} rules on metrics the hub exports")
    tests = base / "alerts.test.yml"
    failures = Failures()
    code, out = tool("promtool", "test", "rules", tests.name, cwd=base)
    failures.check(code == 0, f"promtool test rules: {out}")
    tested = {t.get("alertname") for case in yaml.safe_load(tests.read_text())["tests"] for t in case.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}
    failures.check(alerts <= tested, f"alerts without a test: {sorted(alerts - tested)}")
    for case in yaml.safe_load(tests.read_text())["tests"]:
        for s in case.get("input_series", []):
            check_promql(source, s["series"], failures, "input series")
    run.report(tests, failures, f"promtool test rules, every alert tested ({len(tested)})")
    check_prometheus_config(run, base / "prometheus.yml")


def check_dashboard(run: Run, source: Source) -> None:
    path = run.root / "deploy/monitoring/grafana-dashboard.json"
    failures = Failures()
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        failures.append(f"JSON: {e}")
        return run.report(path, failures, "")
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        failures.check(key in dashboard, f"no {key}")
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    failures.check(variables.get("datasource", {}).get("type") == "datasource" and variables["datasource"].get("query") == "prometheus",
                   "no Prometheus data source variable 'datasource'")
    builtins = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}

    def substitute(expr: str, where: str) -> str:
        for name in re.findall(r"\$\{?(\w+)", expr):
            failures.check(name in variables or name in builtins, f"{where}: ${name} is no dashboard variable")
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
        expr = expr.replace("$job", "xinqiao")
        return re.sub(r"\$\{?\w+\}?", ".*", expr)

    exprs: dict[str, str] = {}
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            if failures.check(m is not None, f"variable {name}: not label_values(SELECTOR, LABEL)"):
                selector = substitute(m.group(1), f"variable {name}")
                check_promql(source, selector, failures, f"variable {name}")
                metric = promql_names(selector)[0]
                failures.check(all(m.group(2) in source.metrics.get(n, set()) for n in metric), f"variable {name}: no label {m.group(2)}")
                exprs[f"variable {name}"] = selector

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    ids = []
    cells: dict[tuple[int, int], int] = {}
    known_types = {"row", "timeseries", "stat", "bargauge", "gauge", "table", "text", "heatmap"}
    count = 0
    for p in panels(dashboard.get("panels", [])):
        count += 1
        ids.append(p.get("id"))
        where = f"panel {p.get('id')} '{p.get('title')}'"
        failures.check(p.get("type") in known_types, f"{where}: unknown type {p.get('type')}")
        g = p.get("gridPos", {})
        if failures.check(all(k in g for k in "hwxy"), f"{where}: no gridPos"):
            failures.check(g["x"] + g["w"] <= 24, f"{where}: wider than the 24 columns")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    other = cells.setdefault((x, y), p.get("id"))
                    if other != p.get("id"):
                        failures.append(f"{where}: overlaps panel {other}")
                        break
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        failures.check(p.get("datasource", {}).get("uid") == "${datasource}", f"{where}: its data source is not the variable")
        targets = p.get("targets", [])
        failures.check(bool(targets), f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        failures.check(len(refs) == len(set(refs)), f"{where}: refIds repeat")
        for t in targets:
            tw = f"{where} {t.get('refId')}"
            expr = substitute(t.get("expr", ""), tw)
            check_promql(source, expr, failures, tw)
            exprs[tw] = expr
    failures.check(len(ids) == len(set(ids)), "panel ids repeat")
    promtool_check_exprs(exprs, failures)
    # The panels the deployment promises.
    text = json.dumps(dashboard)
    for metric in ("xinqiao_rpc_requests_total", "xinqiao_rpc_duration_seconds_bucket", "xinqiao_records_published_total",
                   "xinqiao_records_delivered_total", "xinqiao_validation_failures_total", "xinqiao_subscription_lag",
                   "xinqiao_subscriptions", "xinqiao_audit_chain_length", "xinqiao_scorecard"):
        failures.check(metric in text, f"no panel shows {metric}")
    run.report(path, failures, f"{count} panels, {len(exprs)} queries: PromQL (promtool), metric and label names, variables, layout")


# -------------------------------------------------------------------------------------------------


def check_readmes(run: Run) -> None:
    for path in sorted((run.root / "deploy").glob("*/README.md")):
        if path.parent.name not in ("compose", "kubernetes", "monitoring"):
            continue
        failures = Failures()
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if not re.match(r"[a-z]+://", target):
                failures.check((path.parent / target).exists(), f"links to {target}, which does not exist")
        run.report(path, failures, "relative links resolve")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    root = args.root.resolve()
    started = time.monotonic()
    import importlib.metadata as md

    print(
        "tools: "
        + ", ".join(
            [
                "hadolint " + version_of("hadolint", "--version").split()[-1],
                f"kubernetes-validate {md.version('kubernetes-validate')} (schemas {', '.join(KUBERNETES_VERSIONS)})",
                f"cloudcoil cert-manager models {md.version('cloudcoil.models.cert_manager')}",
                f"cloudcoil prometheus-operator models {md.version('cloudcoil.models.prometheus_operator')}",
                f"check-jsonschema {md.version('check-jsonschema')}",
                "promtool " + version_of("promtool", "--version").split()[2],
                "shellcheck " + tool("shellcheck", "--version")[1].splitlines()[1].removeprefix("version: "),
            ]
        )
    )
    run = Run(root)
    source = Source(root)
    checks = [
        ("Dockerfile", lambda: check_dockerfile(run, source)),
        (".dockerignore", lambda: check_dockerignore(run)),
        ("deploy/compose/compose.yaml", lambda: check_compose(run, source)),
        ("deploy/kubernetes/kustomization.yaml", lambda: check_kubernetes(run, source)),
        ("deploy/monitoring/alerts.yml", lambda: check_alerts(run, source)),
        ("deploy/monitoring/grafana-dashboard.json", lambda: check_dashboard(run, source)),
        ("deploy", lambda: check_readmes(run)),
        (".ci/validate-deploy", lambda: check_shell(run, root / ".ci/validate-deploy", "bash")),
    ]
    for where, check in checks:
        try:
            check()
        except Exception as e:  # a file too broken for the checks' assumptions
            run.report(root / where, [f"the check itself failed: {type(e).__name__}: {e}"], "")
    # Every deployment file is checked by something.
    checked = {name for name, _, _ in run.results}
    owned = [p for d in ("deploy/compose", "deploy/kubernetes", "deploy/monitoring") for p in sorted((root / d).rglob("*")) if p.is_file()]
    unchecked = [run.rel(p) for p in owned if run.rel(p) not in checked]
    failed = [name for name, ok, _ in run.results if not ok]
    if unchecked:
        print(f"FAIL files no check covers: {', '.join(unchecked)}")
    elapsed = time.monotonic() - started
    print(f"validate-deploy: {len(run.results) - len(failed)} files ok, {len(failed)} failed, {len(unchecked)} unchecked ({elapsed:.1f} s)")
    return 1 if failed or unchecked else 0


if __name__ == "__main__":
    sys.exit(main())
