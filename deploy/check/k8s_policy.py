#!/usr/bin/env python3
"""Plain-YAML checks of the rendered overlays: what a schema cannot say.

  k8s_policy.py REPO_ROOT dev=RENDERED.yaml prod=RENDERED.yaml

Each check prints `ok`, `FAIL` or `WARN`; any FAIL exits 1. The facts the manifests must agree
with (environment variables, ports, the drain grace) come from the Rust sources (code_facts.py).
"""

import os
import re
import sys
from urllib.parse import urlparse

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import code_facts  # noqa: E402

NAMESPACE = "arf"
SERVICES = ("analyzer", "editor", "trainer", "gateway")
GPU = "nvidia.com/gpu"
# Variables being added to the code now (by name, as agreed): a warning until the code has them.
PENDING = {
    "ARF_STORE": "gateway: the PostgreSQL URL of the run store (`--store postgres://...`)",
    "ARF_GATEWAY_ID": "gateway: this gateway's id for run leases",
    "ARF_HEALTH_LISTEN": "every server: a plaintext listener serving grpc.health.v1 only, for kubelet probes",
}
# Variables no ARF code declares, and why they are set.
NOT_ARF = {
    "POD_NAME": "downward API, for $(POD_NAME) in OTEL_RESOURCE_ATTRIBUTES",
    "POD_NAMESPACE": "downward API, for $(POD_NAMESPACE) in OTEL_RESOURCE_ATTRIBUTES",
    "HOME": "a writable home (/tmp) under readOnlyRootFilesystem",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "read by common/src/telemetry",
    "OTEL_RESOURCE_ATTRIBUTES": "read by the OpenTelemetry SDK (README: honoured)",
    "RUST_LOG": "read by the tracing EnvFilter (common/src/telemetry)",
}
# Client settings: which variable holds the endpoint, and which the CA that turns TLS on.
CLIENTS = {
    ("gateway", "ARF_ANALYZER_ENDPOINT"): ("analyzer", "ARF_DOWNSTREAM_TLS_CA"),
    ("gateway", "ARF_TRAINER_ENDPOINT"): ("trainer", "ARF_DOWNSTREAM_TLS_CA"),
    ("analyzer", "ARF_JUDGE_ENDPOINT"): ("editor", "ARF_JUDGE_TLS_CA"),
}
# Variables that name files or folders, which must lie on a mount of the container.
PATH_VARS = ("ARF_TLS_CERT", "ARF_TLS_KEY", "ARF_TLS_CLIENT_CA", "ARF_DOWNSTREAM_TLS_CA",
             "ARF_DOWNSTREAM_TLS_CERT", "ARF_DOWNSTREAM_TLS_KEY", "ARF_JUDGE_TLS_CA",
             "ARF_JUDGE_TLS_CERT", "ARF_JUDGE_TLS_KEY", "ARF_EDITOR_MODEL",
             "ARF_TRAINER_STATE_DIR", "ARF_DATA_DIR")


class Report:
    def __init__(self):
        self.failures = 0
        self.warnings = 0

    def check(self, cond, what, why=""):
        if cond:
            print(f"ok   {what}")
        else:
            self.failures += 1
            print(f"FAIL {what}" + (f": {why}" if why else ""))
        return cond

    def warn(self, what):
        self.warnings += 1
        print(f"WARN {what}")


def load(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return by_kind


def container(dep):
    cs = dep["spec"]["template"]["spec"]["containers"]
    return cs[0]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c, name):
    e = env_of(c).get(name)
    return e.get("value") if e else None


def mounted(c, path):
    return any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in c.get("volumeMounts", []))


def probe_checks(r, tag, name, c, port):
    tls = env_value(c, "ARF_TLS_CERT") is not None
    health = env_value(c, "ARF_HEALTH_LISTEN")
    health_port = int(health.rsplit(":", 1)[1]) if health else None
    # kubelet gRPC probes are plaintext: a TLS port would fail them.
    expected = health_port if tls else port
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(kind, {})
        grpc = p.get("grpc")
        r.check(grpc is not None, f"{tag} {name}: {kind} is a grpc (grpc.health.v1) probe")
        if grpc:
            r.check(grpc.get("port") == expected,
                    f"{tag} {name}: {kind} on port {expected} "
                    + ("(the plaintext health listener: the service port has TLS)" if tls else "(the service port)"),
                    f"it asks port {grpc.get('port')}")
            # "" is SERVING only once every service of the server is (common/src/server/health.rs).
            r.check(grpc.get("service", "") == "",
                    f"{tag} {name}: {kind} asks the whole server (service \"\"), which follows the model")
    if tls:
        r.check(health_port is not None and health_port != port,
                f"{tag} {name}: TLS on {port}, so ARF_HEALTH_LISTEN gives the probes another port")
        ports = [p["containerPort"] for p in c.get("ports", [])]
        r.check(health_port in ports, f"{tag} {name}: the health port {health_port} is a containerPort")
    lp = c.get("livenessProbe", {})
    r.check(lp.get("failureThreshold", 3) * lp.get("periodSeconds", 10) >= 60,
            f"{tag} {name}: liveness lenient (>= 60 s of failures before a restart)")


def deployment_checks(r, tag, root, docs, name, grace_default):
    dep = docs["Deployment"].get(name)
    if not r.check(dep is not None, f"{tag}: Deployment {name} exists"):
        return
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    port = code_facts.default_port(root, name)
    ports = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == "grpc"]
    r.check(ports == [port], f"{tag} {name}: grpc containerPort {port} (the code's default)", f"got {ports}")
    probe_checks(r, tag, name, c, port)

    req = c.get("resources", {}).get("requests", {})
    r.check("cpu" in req and "memory" in req, f"{tag} {name}: cpu and memory requests")
    r.check("memory" in c.get("resources", {}).get("limits", {}), f"{tag} {name}: a memory limit")

    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    r.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{tag} {name}: runAsNonRoot")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    r.check(isinstance(uid, int) and uid > 0, f"{tag} {name}: a numeric non-root runAsUser ({uid})")
    r.check(csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True,
            f"{tag} {name}: no privilege escalation, read-only root filesystem")

    grace = int(env_value(c, "ARF_SHUTDOWN_GRACE_SECS") or grace_default)
    term = pod.get("terminationGracePeriodSeconds", 30)
    r.check(term > grace, f"{tag} {name}: terminationGracePeriodSeconds {term} > drain grace {grace} s",
            "the kubelet would SIGKILL calls still draining")

    known = code_facts.env_vars(root, name)
    defined = set()
    for e in c.get("env", []):
        n = e["name"]
        for ref in sorted(set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")))):
            r.check(ref in defined, f"{tag} {name}: $({ref}) in {n} is defined before it",
                    "Kubernetes expands only variables listed earlier")
        defined.add(n)
        if n in known:
            continue
        if n in PENDING:
            r.warn(f"{tag} {name}: {n} is not in the code yet ({PENDING[n]})")
        elif n in NOT_ARF:
            print(f"ok   {tag} {name}: {n} ({NOT_ARF[n]})")
        else:
            r.check(False, f"{tag} {name}: {n} is read by the service", "no such variable in its sources")
    declared = sorted(n for n in defined if n in known)
    print(f"ok   {tag} {name}: declared in {' and '.join(code_facts.SOURCES[name])}: {', '.join(declared)}")
    for n in PENDING:
        if n in known:
            print(f"ok   {tag} {name}: {n} is in the code now (PENDING can drop it)")

    for var in PATH_VARS:
        v = env_value(c, var)
        if v:
            r.check(mounted(c, v), f"{tag} {name}: {var}={v} is on a mounted volume")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        r.check(m["name"] in volumes, f"{tag} {name}: volume {m['name']} exists")
    for v in volumes.values():
        claim = v.get("persistentVolumeClaim", {}).get("claimName")
        if claim:
            r.check(claim in docs.get("PersistentVolumeClaim", {}), f"{tag} {name}: PVC {claim} is rendered")
    refs = [f["configMapRef"]["name"] for f in c.get("envFrom", []) if "configMapRef" in f]
    r.check("arf-telemetry" in refs, f"{tag} {name}: telemetry settings (envFrom arf-telemetry)")
    otlp = docs.get("ConfigMap", {}).get("arf-telemetry", {}).get("data", {}).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    r.check(urlparse(otlp).scheme in ("http", "https") and urlparse(otlp).port,
            f"{tag} {name}: OTEL_EXPORTER_OTLP_ENDPOINT is a collector URL ({otlp})")


def service_checks(r, tag, root, docs):
    deps = docs["Deployment"]
    for sname, svc in docs.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        hits = [d for d in deps.values()
                if sel and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if r.check(len(hits) == 1, f"{tag} Service {sname}: selects one Deployment"):
            c = container(hits[0])
            for p in svc["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                ok = any(cp.get("name") == tp or cp["containerPort"] == tp for cp in c.get("ports", []))
                r.check(ok, f"{tag} Service {sname}: targetPort {tp} is a port of {c['name']}")
    for pname, pdb in docs.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        hits = [d for d in deps.values()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        r.check(len(hits) == 1, f"{tag} PodDisruptionBudget {pname}: selects one Deployment")
    for name in ("editor", "gateway"):
        r.check(name in docs.get("PodDisruptionBudget", {}), f"{tag}: a PodDisruptionBudget for {name}")

    headless = docs.get("Service", {}).get("editor-headless")
    if not r.check(headless is not None, f"{tag}: Service editor-headless exists"):
        return
    r.check(headless["spec"].get("clusterIP") == "None", f"{tag} editor-headless: clusterIP None (one DNS record per pod)")
    r.check(headless["metadata"].get("namespace") == NAMESPACE, f"{tag} editor-headless: in namespace {NAMESPACE}")
    editor_port = [p["containerPort"] for p in container(deps["editor"])["ports"] if p.get("name") == "grpc"][0]
    r.check([p["port"] for p in headless["spec"]["ports"]] == [editor_port],
            f"{tag} editor-headless: port {editor_port}, the editor's")
    want = f"dns:///editor-headless.{NAMESPACE}.svc.cluster.local:{editor_port}"
    got = env_value(container(deps["gateway"]), "ARF_EDITOR_ENDPOINTS")
    r.check(got == want, f"{tag} gateway: ARF_EDITOR_ENDPOINTS={want}", f"got {got}")
    if not code_facts.mentions(root, "gateway", '"dns:'):
        r.warn(f"{tag} gateway: no dns:/// endpoint handling in gateway/src yet (re-resolving the headless Service)")


def endpoint_checks(r, tag, docs):
    deps = docs["Deployment"]
    for (client, var), (server, ca_var) in CLIENTS.items():
        c = container(deps[client])
        url = urlparse(env_value(c, var) or "")
        host = url.hostname or ""
        svc_name = host.split(".")[0]
        svc = docs.get("Service", {}).get(svc_name)
        r.check(svc is not None and host in (svc_name, f"{svc_name}.{NAMESPACE}.svc.cluster.local")
                and url.port in [p["port"] for p in svc["spec"]["ports"]],
                f"{tag} {client}: {var} names Service {svc_name} and its port")
        server_tls = env_value(container(deps[server]), "ARF_TLS_CERT") is not None
        # Unambiguous either way: https:// with the CA, or http:// without one.
        client_tls = (url.scheme, env_value(c, ca_var) is not None)
        r.check(client_tls == (("https", True) if server_tls else ("http", False)),
                f"{tag} {client}: {var} {'https:// and ' + ca_var if server_tls else 'http://, no CA'},"
                f" as {server} serves {'TLS' if server_tls else 'plaintext'}", f"got {client_tls}")


def student_base_checks(r, tag, docs):
    """The gateway names the student base as a path on the trainer's machine."""
    base = env_value(container(docs["Deployment"]["gateway"]), "ARF_STUDENT_BASE")
    trainer = container(docs["Deployment"]["trainer"])
    roots = (env_value(trainer, "ARF_MODEL_ROOTS") or "").split(",")
    r.check(bool(base) and any(base.startswith(x.rstrip("/") + "/") for x in roots if x),
            f"{tag} gateway: ARF_STUDENT_BASE {base} is under the trainer's ARF_MODEL_ROOTS {roots}")
    r.check(bool(base) and mounted(trainer, base), f"{tag} trainer: mounts the student base {base}")


def certificate_checks(r, tag, docs):
    certs = {c["spec"]["secretName"]: c for c in docs.get("Certificate", {}).values()}
    deps = docs["Deployment"]
    for name in SERVICES:
        c = container(deps[name])
        if env_value(c, "ARF_TLS_CERT") is None:
            continue
        secrets = [v["secret"]["secretName"] for v in deps[name]["spec"]["template"]["spec"].get("volumes", [])
                   if "secret" in v]
        certs_here = [certs[s] for s in secrets if s in certs]
        if not r.check(len(certs_here) == 1, f"{tag} {name}: its TLS secret is a cert-manager Certificate's"):
            continue
        cert = certs_here[0]
        names = set(cert["spec"].get("dnsNames", []))
        services = [s for s, svc in docs["Service"].items()
                    if all(deps[name]["spec"]["template"]["metadata"]["labels"].get(k) == v
                           for k, v in svc["spec"].get("selector", {}).items())]
        for s in services:
            r.check(f"{s}.{NAMESPACE}.svc.cluster.local" in names,
                    f"{tag} {name}: the certificate names {s}.{NAMESPACE}.svc.cluster.local")
        client = name in ("gateway", "analyzer")
        if client:
            r.check("client auth" in cert["spec"].get("usages", []),
                    f"{tag} {name}: its certificate allows client auth (it calls mutual-TLS services)")
        r.check("issuerRef" in cert["spec"], f"{tag} {name}: the certificate names its issuer")


def dev_checks(r, root, docs):
    for name, dep in docs["Deployment"].items():
        c = container(dep)
        r.check(dep["spec"].get("replicas") == 1, f"dev {name}: one replica")
        r.check(GPU not in c.get("resources", {}).get("limits", {})
                and GPU not in c.get("resources", {}).get("requests", {}),
                f"dev {name}: no {GPU}")
        r.check(env_value(c, "ARF_TLS_CERT") is None, f"dev {name}: no TLS (tokens only)")
    for name in ("editor", "trainer"):
        r.check("-cpu" in container(docs["Deployment"][name])["image"], f"dev {name}: the CPU image")
    gw = docs["Deployment"]["gateway"]
    c = container(gw)
    r.check("ARF_STORE" not in env_of(c), "dev gateway: SQLite (no ARF_STORE)")
    data = env_value(c, "ARF_DATA_DIR")
    mount = [m for m in c.get("volumeMounts", []) if m["mountPath"] == data]
    vols = {v["name"]: v for v in gw["spec"]["template"]["spec"]["volumes"]}
    r.check(bool(mount) and "persistentVolumeClaim" in vols.get(mount[0]["name"], {}),
            f"dev gateway: ARF_DATA_DIR {data} (arf.sqlite3) on a PVC")
    r.check(gw["spec"].get("strategy", {}).get("type") == "Recreate",
            "dev gateway: Recreate (one SQLite file never has two gateways)")


def prod_checks(r, root, docs):
    deps = docs["Deployment"]
    for name, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        gpus = c.get("resources", {}).get("limits", {}).get(GPU)
        if name in ("editor", "trainer"):
            r.check(isinstance(gpus, int) and gpus >= 1, f"prod {name}: limits {GPU}: {gpus}")
            r.check(bool(pod.get("nodeSelector")) and any(t.get("key") == GPU for t in pod.get("tolerations", [])),
                    f"prod {name}: GPU nodeSelector and toleration")
            r.check(c["image"].endswith("-cuda"), f"prod {name}: the CUDA image ({c['image']})")
        else:
            r.check(gpus is None, f"prod {name}: no GPU")
        r.check(env_value(c, "ARF_TLS_CERT") is not None, f"prod {name}: serves TLS")
        if name != "gateway":
            r.check(env_value(c, "ARF_TLS_CLIENT_CA") is not None, f"prod {name}: mutual TLS (client CA)")
    gw = deps["gateway"]
    c = container(gw)
    r.check(gw["spec"].get("replicas", 1) >= 2, f"prod gateway: {gw['spec'].get('replicas')} replicas (>= 2)")
    store = env_of(c).get("ARF_STORE", {}).get("valueFrom", {}).get("secretKeyRef")
    r.check(store is not None, "prod gateway: ARF_STORE (PostgreSQL URL) from a Secret")
    gid = env_of(c).get("ARF_GATEWAY_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    r.check(gid == "metadata.name", "prod gateway: ARF_GATEWAY_ID from the pod name (downward API)")
    r.check("replicas" not in deps["editor"]["spec"], "prod editor: no replicas field (the autoscaler owns it)")
    so = docs.get("ScaledObject", {}).get("editor")
    if r.check(so is not None, "prod: a KEDA ScaledObject for the editor"):
        r.check(so["spec"]["scaleTargetRef"]["name"] == "editor", "prod ScaledObject: targets Deployment editor")
        queries = [t["metadata"]["query"] for t in so["spec"]["triggers"] if t["type"] == "prometheus"]
        r.check(any("arf_editor_queue_depth" in q for q in queries),
                "prod ScaledObject: a prometheus trigger on arf_editor_queue_depth")
        # Prometheus names -> the OTel instrument (dots for underscores) and who records it.
        for metric, service in (("arf_editor_queue_depth", "editor"), ("arf_gateway_pending_items", "gateway")):
            instrument = metric.replace("_", ".", 2)
            if any(metric in q for q in queries) and not code_facts.mentions(root, service, f'"{instrument}"'):
                r.warn(f"prod ScaledObject: {service} records no {instrument} yet (the query on {metric} finds nothing)")


def main(argv):
    root = argv[1]
    rendered = dict(a.split("=", 1) for a in argv[2:])
    r = Report()
    grace = code_facts.default_grace_secs(root)
    print(f"--   code: drain grace default {grace} s; ports "
          + ", ".join(f"{s} {code_facts.default_port(root, s)}" for s in SERVICES))
    for tag, path in rendered.items():
        docs = load(path)
        for name in SERVICES:
            deployment_checks(r, tag, root, docs, name, grace)
        service_checks(r, tag, root, docs)
        endpoint_checks(r, tag, docs)
        student_base_checks(r, tag, docs)
        certificate_checks(r, tag, docs)
        {"dev": dev_checks, "prod": prod_checks}[tag](r, root, docs)
    print(f"--   policy: {r.failures} failed, {r.warnings} warnings")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
