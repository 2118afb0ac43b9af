#!/usr/bin/env python3
"""A small Helm command line for the tests, on Helm 4's Go SDK through helm-python-sdk.

No `helm` binary is needed (nor can one be downloaded here): the PyPI package
helm-python-sdk bundles Helm's own Go code (Helm SDK v4.2.3) as a shared library.

    helm.py check
    helm.py lint CHART [--strict] [--values FILE]... [--set K=V]...
    helm.py template CHART --release R --namespace NS [--include-crds]
                     [--values FILE]... [--set K=V]...
    helm.py install CHART --release R --namespace NS --kubeconfig FILE
                    [--create-namespace] [--timeout SECONDS] [--values FILE]... [--set K=V]...
    helm.py uninstall --release R --namespace NS --kubeconfig FILE [--timeout SECONDS]

Values are merged as the helm CLI does: the chart's values.yaml, then each --values file,
then each --set (Helm's own --set syntax, e.g. `rbac.watchNamespaces={a,b}`).
`template` is `helm template`: a client-only dry-run install, values checked against
values.schema.json; it prints the manifests (and with --include-crds, the chart's CRDs first).
`lint` is `helm lint`: it fails on errors (with --strict, on warnings too).
Every failure exits non-zero with Helm's message on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

PACKAGE = "helm-python-sdk"
VERSION = "0.2.2"
INSTALL_HINT = f"python3 -m pip install {PACKAGE}=={VERSION}"

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_HELM = 3


def die(message: str, code: int = EXIT_FAILED) -> None:
    print(f"helm.py: {message}", file=sys.stderr)
    sys.exit(code)


def load_helm() -> Any:
    """Imports helm_python, or exits with the command that installs it."""
    try:
        import helm_python
    except ImportError as e:
        die(
            f"Helm's Python SDK is not installed ({e}).\n"
            f"Install it with: {INSTALL_HINT}",
            EXIT_NO_HELM,
        )
    return helm_python


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge as Helm merges value sources: maps merge, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def user_values(helm: Any, args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in args.values or []:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            die(f"--values {path}: {e}")
        try:
            values = merge(values, helm.values_from_yaml(text) or {})
        except helm.HelmError as e:
            die(f"--values {path}: {e}")
    for expression in args.set or []:
        try:
            values = merge(values, helm.parse_set_string(expression))
        except helm.HelmError as e:
            die(f"--set {expression}: {e}")
    return values


def chart_dir(path: str) -> str:
    if not os.path.isfile(os.path.join(path, "Chart.yaml")):
        die(f"{path}: not a chart directory (no Chart.yaml)")
    return os.path.abspath(path)


# ---- commands -----------------------------------------------------------------------------


def cmd_check(_args: argparse.Namespace) -> None:
    try:
        import helm_python
    except ImportError as e:
        print(f"helm-python-sdk: not installed ({e}); install it with: {INSTALL_HINT}")
        sys.exit(EXIT_NO_HELM)
    print(
        f"helm-python-sdk: importable from {os.path.dirname(helm_python.__file__)}; "
        f"helm-c {helm_python.helm_c_version()}, Helm SDK {helm_python.helm_sdk_version()}"
    )


SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def cmd_lint(args: argparse.Namespace) -> None:
    helm = load_helm()
    path = chart_dir(args.chart)
    try:
        report = helm.lint(path, user_values(helm, args), strict=args.strict)
    except helm.HelmError as e:
        die(f"lint {path}: {e}")
    failing = 2 if args.strict else 3
    failed = list(report.get("errors") or [])
    for message in report.get("messages") or []:
        severity = message.get("severity", 0)
        line = f"[{SEVERITY.get(severity, severity)}] {message.get('path')}: {message.get('error')}"
        print(line)
        if severity >= failing:
            failed.append(line)
    if failed:
        die(f"lint {path}: {len(failed)} chart(s) failed:\n" + "\n".join(map(str, failed)))
    print(f"1 chart(s) linted, 0 chart(s) failed ({path})")


def render(helm: Any, path: str, release: str, namespace: str, values: dict[str, Any]) -> str:
    """`helm template`: a client-only dry-run install; no cluster is contacted."""
    try:
        helm.validate_release_name(release)
        # An empty KUBECONFIG-less configuration: a client dry-run never uses it.
        with helm.Config(namespace=namespace) as cfg:
            rel = cfg.install(path, release, values, namespace=namespace, dry_run="client")
    except helm.HelmError as e:
        die(f"template {path}: {e}")
    return rel["manifest"]


def chart_crds(path: str) -> list[tuple[str, str]]:
    """The chart's crds/*.yaml files, as Helm reads them (sorted by name)."""
    directory = os.path.join(path, "crds")
    if not os.path.isdir(directory):
        return []
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith((".yaml", ".yml", ".json")):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                out.append((f"crds/{name}", f.read()))
    return out


def cmd_template(args: argparse.Namespace) -> None:
    helm = load_helm()
    path = chart_dir(args.chart)
    manifest = render(helm, path, args.release, args.namespace, user_values(helm, args))
    if args.include_crds:
        for source, text in chart_crds(path):
            sys.stdout.write(f"---\n# Source: {source}\n{text}")
            if not text.endswith("\n"):
                sys.stdout.write("\n")
    sys.stdout.write(manifest)
    if manifest and not manifest.endswith("\n"):
        sys.stdout.write("\n")


def config(helm: Any, args: argparse.Namespace) -> Any:
    if not os.path.isfile(args.kubeconfig):
        die(f"--kubeconfig {args.kubeconfig}: no such file")
    return helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)


def cmd_install(args: argparse.Namespace) -> None:
    helm = load_helm()
    # The native call below is the one the binding's Config.install makes, with two options
    # that this binding version does not expose as keyword arguments but helm-c's
    # helm_install takes (its JSON options are a stable ABI):
    #   server_side_apply=false: Helm 4 applies server-side by default, and an API server
    #     older than 1.25 refuses to server-side-apply our CRD, whose schema has
    #     x-kubernetes-validations (a field it does not know): "failed to create typed patch
    #     object: ... x-kubernetes-validations: field not declared in schema". A client-side
    #     create (the helm CLI's --server-side=false) is accepted; the old server just drops
    #     the CEL rules, which the operator checks itself anyway.
    #   skip_crds (--skip-crds): for a CRD managed outside the release.
    from helm_python import _native

    path = chart_dir(args.chart)
    values = user_values(helm, args)
    options = {
        "namespace": args.namespace,
        "timeout_seconds": args.timeout,
        "create_namespace": args.create_namespace,
        "server_side_apply": False,
        "skip_crds": args.skip_crds,
    }
    if args.wait:
        options["wait"] = "watcher"
    try:
        helm.validate_release_name(args.release)
        with config(helm, args) as cfg:
            payload = _native.call_string(
                "helm_install",
                cfg._raw(),
                _native.HANDLE(0),  # no cancellation context
                _native.HANDLE(0),  # no preloaded chart: the reference below
                path,
                args.release,
                json.dumps(values),
                json.dumps(options),
            )
    except helm.HelmError as e:
        die(f"install {args.release} ({path}) into {args.namespace}: {e}")
    release = json.loads(payload)
    print(
        f"release {release.get('name')} in {release.get('namespace')}: "
        f"{release.get('status')}, revision {release.get('revision')}"
    )


def cmd_uninstall(args: argparse.Namespace) -> None:
    helm = load_helm()
    try:
        with config(helm, args) as cfg:
            cfg.uninstall(args.release, timeout=args.timeout)
    except helm.HelmError as e:
        die(f"uninstall {args.release} from {args.namespace}: {e}")
    print(f"release {args.release} uninstalled from {args.namespace}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="helm.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def values_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--values", "-f", action="append", metavar="FILE", help="a values file")
        p.add_argument("--set", action="append", metavar="K=V", help="a value, helm --set syntax")

    def release_options(p: argparse.ArgumentParser, kubeconfig: bool) -> None:
        p.add_argument("--release", required=True, help="release name")
        p.add_argument("--namespace", required=True, help="release namespace")
        if kubeconfig:
            p.add_argument("--kubeconfig", required=True, help="kubeconfig file")
            p.add_argument("--timeout", type=int, default=120, help="seconds (default 120)")

    p = commands.add_parser("check", help="whether Helm's Python SDK is importable")
    p.set_defaults(run=cmd_check)

    p = commands.add_parser("lint", help="helm lint")
    p.add_argument("chart")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    values_options(p)
    p.set_defaults(run=cmd_lint)

    p = commands.add_parser("template", help="helm template (prints YAML)")
    p.add_argument("chart")
    release_options(p, kubeconfig=False)
    p.add_argument("--include-crds", action="store_true", help="print the chart's CRDs too")
    values_options(p)
    p.set_defaults(run=cmd_template)

    p = commands.add_parser("install", help="helm install, client-side apply")
    p.add_argument("chart")
    release_options(p, kubeconfig=True)
    p.add_argument("--create-namespace", action="store_true")
    p.add_argument("--skip-crds", action="store_true", help="do not install the chart's CRDs")
    p.add_argument("--wait", action="store_true", help="wait until the objects are ready")
    values_options(p)
    p.set_defaults(run=cmd_install)

    p = commands.add_parser("uninstall", help="helm uninstall")
    release_options(p, kubeconfig=True)
    p.set_defaults(run=cmd_uninstall)

    args = parser.parse_args()
    # Helm keeps caches and its registry/repository configuration under HOME; a scratch
    # HOME keeps the tests from reading or writing the user's.
    with tempfile.TemporaryDirectory(prefix="helm-py-") as home:
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            os.environ.setdefault(var, os.path.join(home, sub))
        args.run(args)


if __name__ == "__main__":
    main()
