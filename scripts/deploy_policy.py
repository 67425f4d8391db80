"""What deploy/, docker-compose.yml and the Dockerfile must keep, checked.

Each check is a function named for what it holds; scripts/check-deploy runs
them all (python deploy_policy.py [ROOT]) and fails when one does. They read
the files as data (YAML, TOML), never run them.
"""

import ipaddress
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent)

# What webhook traffic may never reach, whatever Herald's own SSRF policy
# decides: private (RFC 1918), CGNAT, link-local (cloud metadata), loopback.
INTERNAL_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"]
INTERNAL_V6 = ["fc00::/7", "fe80::/10", "::1/128"]

# Images that cannot carry a digest here: Herald's own, built from this
# repository (compose builds herald:local; the release image's digest exists
# only once it is published). Every other image must be pinned.
UNPINNED_ALLOWED = {
    "herald:local": "built from this repository by `docker compose up --build`",
    "ghcr.io/herald/herald": "Herald's release image: pin its digest when publishing (kustomize `images:`)",
}

PINNED = re.compile(r"^(?P<name>[^@\s]+):(?P<tag>[^@:/\s]+)@sha256:[0-9a-f]{64}$")

# Words that mark a value as one to be replaced.
PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|your[-_ ]?(token|password|secret)|x{4,}", re.I)


def load_yaml_documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_documents():
    return [(p.name, d) for p in sorted((ROOT / "deploy/k8s").glob("*.yaml")) for d in load_yaml_documents(p)]


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def pod_specs():
    for name, doc in k8s_documents():
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{name}: {doc['kind']} {doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def k8s_pods_mount_no_service_account_token():
    specs = list(pod_specs())
    assert specs, "no pod template in deploy/k8s"
    for where, spec in specs:
        assert spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken is not false"


def k8s_network_policy_limits_herald():
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())
    policies = [
        (name, d)
        for name, d in k8s_documents()
        if d.get("kind") == "NetworkPolicy"
        and d["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "herald"
    ]
    assert policies, "no NetworkPolicy selects Herald's pods"
    for name, policy in policies:
        assert name in kustomization.get("resources", []), f"{name} is not in kustomization.yaml"
        spec = policy["spec"]
        assert set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}, f"{name}: policyTypes {spec.get('policyTypes')}"
        served = {p[k] for _, pod in pod_specs() for c in pod["containers"] for p in c.get("ports", []) for k in ("name", "containerPort") if k in p}
        for rule in spec.get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            assert ports and ports <= served, f"{name}: an ingress rule opens {ports or 'every port'}, not only Herald's {served}"
        egress = spec.get("egress", [])
        assert egress, f"{name}: no egress rule (nothing would be reachable) or none listed"
        blocks = []
        for rule in egress:
            assert rule.get("to"), f"{name}: an egress rule reaches every destination"
            assert rule.get("ports"), f"{name}: an egress rule opens every port"
            blocks += [peer["ipBlock"] for peer in rule["to"] if "ipBlock" in peer]
        for block in blocks:
            cidr = ipaddress.ip_network(block["cidr"])
            excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
            for internal in map(ipaddress.ip_network, INTERNAL_V4 + INTERNAL_V6):
                if internal.version == cidr.version and internal.overlaps(cidr):
                    assert any(internal.subnet_of(e) for e in excepted if e.version == internal.version), (
                        f"{name}: egress to {cidr} does not except {internal}"
                    )


def images():
    """(where, image) for every image the deployment files name."""
    stages = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        m = re.match(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if m.group(1) not in stages:
                yield "Dockerfile", m.group(1)
            if m.group(2):
                stages.add(m.group(2))
    for service, spec in compose()["services"].items():
        if "image" in spec:
            yield f"docker-compose.yml: {service}", spec["image"]
    for where, spec in pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"deploy/k8s/{where}", c["image"]


def images_are_pinned_by_digest():
    unpinned = []
    for where, image in images():
        if PINNED.match(image):
            continue
        name = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
        if image in UNPINNED_ALLOWED or name in UNPINNED_ALLOWED:
            print(f"   not pinned, allowed: {where}: {image} ({UNPINNED_ALLOWED.get(image) or UNPINNED_ALLOWED[name]})")
            continue
        unpinned.append(f"{where}: {image}")
    assert not unpinned, "not pinned by digest (name:tag@sha256:...): " + "; ".join(unpinned)


def compose_publishes_only_on_loopback():
    for service, spec in compose()["services"].items():
        for port in spec.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0] if str(port).count(":") >= 2 else None
            assert host_ip in ("127.0.0.1", "[::1]", "::1"), f"{service} publishes {port} beyond this machine"


def compose_holds_no_credential():
    """Tokens and passwords come from the environment, with no default."""
    text = (ROOT / "docker-compose.yml").read_text()
    for service, spec in compose()["services"].items():
        env = spec.get("environment", {})
        env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
        for key, value in env.items():
            if re.search(r"TOKEN|PASSWORD|REDIS__URL", key):
                value = str(value)
                assert re.search(r"\$\{[A-Z0-9_]+:\?", value), f"{service}: {key} is not taken from the environment with ${{VAR:?...}}"
                literal = re.sub(r"\$\{[^}]*\}", "", value)
                assert not re.search(r'token\s*=\s*"[^"]', literal), f"{service}: {key} holds a literal token"
    assert not re.search(r'token\s*[=:]\s*"?[A-Za-z0-9][^"$\s]{7,}', text, re.I), "docker-compose.yml holds a literal token"


def compose_allows_only_the_demo_receiver():
    """Herald's allow_cidrs in compose open the demo receiver's address only."""
    config = tomllib.loads((ROOT / "deploy/compose/herald.toml").read_text())
    allowed = [ipaddress.ip_network(c) for c in config.get("delivery", {}).get("allow_cidrs", [])]
    receiver_addresses = {
        ipaddress.ip_address(net[k])
        for net in (compose()["services"]["receiver"].get("networks") or {}).values()
        if isinstance(net, dict)
        for k in ("ipv4_address", "ipv6_address")
        if k in net
    }
    assert receiver_addresses, "the receiver has no fixed address to allow"
    for net in allowed:
        assert net.num_addresses == 1 and net[0] in receiver_addresses, (
            f"allow_cidrs opens {net}, not only the receiver ({', '.join(map(str, receiver_addresses))})"
        )


def compose_redis_requires_herald_s_acl_user():
    services = compose()["services"]
    redis = services["redis"]
    command = " ".join(redis.get("entrypoint", []) + (redis.get("command") or []))
    mounts = dict(v.split(":")[:2] for v in redis.get("volumes", []) if isinstance(v, str))
    acl = mounts.get("./deploy/k8s/redis-acl.conf")
    assert acl, "Redis does not mount deploy/k8s/redis-acl.conf, the rules the Kubernetes manifests publish"
    assert re.search(r"--user herald reset on \S*HERALD_REDIS_PASSWORD\S* .*" + re.escape(acl), command), (
        f"Redis does not create the user herald with HERALD_REDIS_PASSWORD and the rules of {acl}"
    )
    assert re.search(r"--user default on nopass resetkeys resetchannels -@all( \+ping)?( |$)", command), (
        "Redis's default user may do more than PING"
    )
    url = str(services["herald-1"]["environment"]["HERALD_REDIS__URL"])
    assert url.startswith("redis://herald:${HERALD_REDIS_PASSWORD:?"), f"Herald does not connect as herald: {url}"


def deploy_holds_no_placeholder():
    files = [ROOT / "docker-compose.yml"] + sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not PLACEHOLDER.search(line), f"{path.relative_to(ROOT)}:{n}: a placeholder: {line.strip()}"


CHECKS = [
    k8s_pods_mount_no_service_account_token,
    k8s_network_policy_limits_herald,
    images_are_pinned_by_digest,
    compose_publishes_only_on_loopback,
    compose_holds_no_credential,
    compose_allows_only_the_demo_receiver,
    compose_redis_requires_herald_s_acl_user,
    deploy_holds_no_placeholder,
]


def main():
    failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok   {check.__name__}")
        except (AssertionError, KeyError, FileNotFoundError) as e:
            failed += 1
            why = e if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            print(f"FAIL {check.__name__}: {why}")
    print(f"deploy policy: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
