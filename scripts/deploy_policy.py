"""What deploy/, docker-compose.yml and the Dockerfile must keep, checked.

Each check is a function named for what it holds; scripts/check-deploy runs
them all (python deploy_policy.py [ROOT]) and fails when one does. They read
the files as data (YAML, TOML), never run them.
"""

import ipaddress
import pathlib
import sys

import yaml

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent)

# What webhook traffic may never reach, whatever Herald's own SSRF policy
# decides: private (RFC 1918), CGNAT, link-local (cloud metadata), loopback.
INTERNAL_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"]
INTERNAL_V6 = ["fc00::/7", "fe80::/10", "::1/128"]


def load_yaml_documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_documents():
    return [(p.name, d) for p in sorted((ROOT / "deploy/k8s").glob("*.yaml")) for d in load_yaml_documents(p)]


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


CHECKS = [
    k8s_pods_mount_no_service_account_token,
    k8s_network_policy_limits_herald,
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
