"""``geogate admin ...``: the admin API from a terminal (tables by default, ``--json``
for scripts). It is an HTTP client of any gateway; it imports nothing of the gateway."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from geogate.shared.rundir import default_run_dir, read_endpoints

__all__ = ["add_parser"]


class AdminError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error") or {}
        super().__init__(f"{status} {error.get('code', '')}: {error.get('message', body)}")
        self.status, self.body = status, body


class UsageError(Exception):
    """The command line or its environment is wrong (a missing token file, say): said once, exit 2."""


ADMIN_EXAMPLES = """\
examples:
  geogate admin status                          the deployment geogate up started here (its --run-dir)
  geogate admin switch --to green --reason "release 2026-12"
  geogate admin --url https://gw.example:9443 --token-file ~/.geogate/token --cacert ca.pem status

Which gateway: --url (or GEOGATE_ADMIN_URL); without one, the deployment geogate up left
in --run-dir (its first gateway, its admin token and, for --tls, its CA).
Which token: --token-file (or GEOGATE_ADMIN_TOKEN_FILE), else GEOGATE_ADMIN_TOKEN, else
(without --url) the run directory's admin-token.
"""

EXAMPLES = {
    "status": "geogate admin status --json | jq .regions",
    "switch": 'geogate admin switch --to green --dry-run --reason "check the pre-checks"',
    "rollback": 'geogate admin rollback --reason "p99 doubled after the switch"',
    "canary": 'geogate admin canary --percent 5 --reason "first look at demo-v2"',
    "drain": 'geogate admin drain eu-central --reason "maintenance window"',
    "fail": 'geogate admin fail eu-central --reason "the region is down"',
    "restore": 'geogate admin restore eu-central --reason "maintenance over"',
    "drill": 'geogate admin drill eu-central --mode kill --duration-s 20 --reason "quarterly failover drill"',
    "audit": "geogate admin audit --count 5",
    "route": "geogate admin route --ip 81.2.69.142 --task parse",
    "register": 'geogate admin register green --model-version mgeo-base-v3-20261201 --sha256 "$SHA" --reason new',
    "clients": "geogate admin clients",
    "client-add": 'geogate admin client-add orders --tasks similarity --rps 200 --reason "order service"',
    "client-set": 'geogate admin client-set orders --regions eu-central --reason "EU data stays in the EU"',
    "client-rotate": 'geogate admin client-rotate orders --overlap-s 3600 --reason "quarterly rotation"',
    "client-revoke": 'geogate admin client-revoke orders --key 1a2b3c4d --reason "key leaked"',
    "hash-token": "openssl rand -base64 32 | tee token | geogate admin hash-token",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="operate a deployment through a gateway's admin API",
                           description="Switch versions, roll back, set canary traffic, drain or fail regions, run "
                           "drills and read status and audit, through any gateway's /admin/v1 API.",
                           epilog=ADMIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("GEOGATE_ADMIN_URL"),
                        help="a gateway (or its admin port) [env GEOGATE_ADMIN_URL; default: the first gateway of "
                        "--run-dir's deployment]")
    common.add_argument("--run-dir", type=Path, default=default_run_dir(), metavar="DIR",
                        help="a deployment started by geogate up (default: %(default)s)")
    common.add_argument("--token-file", default=os.environ.get("GEOGATE_ADMIN_TOKEN_FILE"), metavar="FILE",
                        help="file holding the bearer token [env GEOGATE_ADMIN_TOKEN_FILE; default: "
                        "GEOGATE_ADMIN_TOKEN, else (without --url) the run directory's admin-token]")
    common.add_argument("--cacert", metavar="FILE",
                        help="CA bundle for an HTTPS gateway (default: without --url, the run directory's CA; else "
                        "the system's)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    cmds = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    def cmd(name: str, help_text: str, *, reason: bool = False) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                            parents=[common], epilog=f"example:\n  {EXAMPLES[name]}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if reason:
            p.add_argument("--reason", required=True, help="why (written to the audit stream)")
        p.set_defaults(run=_run)
        return p

    cmd("status", "registry, regions, nodes, gateways, watch and drill")
    p = cmd("switch", "verified switch to another color", reason=True)
    p.add_argument("--to", required=True, metavar="COLOR", help="the color to serve from now on: blue or green")
    p.add_argument("--dry-run", action="store_true", help="run the pre-checks only; change nothing")
    p.add_argument("--expected-epoch", type=int, metavar="N",
                   help="refuse if the registry is not at this epoch (default: the one this gateway serves by)")
    cmd("rollback", "back to the previous color", reason=True)
    p = cmd("canary", "share of traffic for the preview color", reason=True)
    p.add_argument("--percent", type=float, required=True, metavar="P",
                   help="0 to 100: the share of calls the preview color serves (0 ends the canary)")
    for action, what in (("drain", "drain a region (its clients are served elsewhere)"),
                         ("fail", "mark a region failed"), ("restore", "serve from a region again")):
        p = cmd(action, what, reason=True)
        p.add_argument("region", help="the region, as the topology names it")
    p = cmd("drill", "run a failover drill and print its report", reason=True)
    p.add_argument("region", help="the region to take out, as the topology names it")
    p.add_argument("--duration-s", type=float, default=30.0, metavar="S",
                   help="how long the region stays out, in seconds (default: %(default)s)")
    p.add_argument("--mode", choices=["fail", "drain", "kill"], default="fail",
                   help="fail or drain it in the registry, or SIGKILL its nodes (default: %(default)s)")
    p = cmd("audit", "the newest registry changes")
    p.add_argument("--count", type=int, default=20, metavar="N", help="how many (default: %(default)s)")
    p = cmd("route", "where a client's call would go now (dry run)")
    p.add_argument("--ip", required=True, help="the client's address (IPv4 or IPv6)")
    p.add_argument("--task", choices=["similarity", "parse"], default="similarity",
                   help="which call (default: %(default)s)")
    p = cmd("register", "register the version and checksum a color's nodes serve (admin role)", reason=True)
    p.add_argument("color", help="the color whose nodes serve it: blue or green")
    p.add_argument("--model-version", required=True, help="the version the nodes report")
    p.add_argument("--sha256", default="", help="the weights' checksum the nodes report (default: not checked)")
    cmd("clients", "calling services, their keys and limits (admin role)")
    for name, help_text in (("client-add", "add a calling service and print its first API key (shown once)"),
                            ("client-set", "change a calling service's tasks, regions, limits or certificate names")):
        p = cmd(name, help_text + " (admin role)", reason=True)
        p.add_argument("name", help="the calling service's name")
        p.add_argument("--tasks", help="comma-separated: similarity,parse (default: both)")
        p.add_argument("--regions", help="comma-separated regions its calls must stay in (default: any)")
        p.add_argument("--cert-names", help="comma-separated TLS client certificate names (CN, DNS or URI) that "
                       "identify it (default: none)")
        for limit in LIMITS:
            p.add_argument("--" + limit.replace("_", "-"), type=float, metavar="X",
                           help=f"{LIMIT_HELP[limit]} (0: none; default: the gateway's)")
        if name == "client-add":
            p.add_argument("--no-key", action="store_true", help="no API key (a certificate-only client)")
        else:
            p.add_argument("--disabled", action=argparse.BooleanOptionalAction, default=None,
                           help="refuse (or, with --no-disabled, accept again) all its calls (default: unchanged)")
    p = cmd("client-rotate", "give a client a new API key; the old ones stay valid --overlap-s more", reason=True)
    p.add_argument("name", help="the calling service's name")
    p.add_argument("--overlap-s", type=float, default=86_400.0, metavar="S",
                   help="how long the old keys stay valid, in seconds; 0: they stop at once (default: %(default)s)")
    p = cmd("client-revoke", "revoke one API key (--key ID) or the whole client", reason=True)
    p.add_argument("name", help="the calling service's name")
    p.add_argument("--key", metavar="ID", help="the key's id (the 8 hex digits after gg_); default: the whole client")
    h = cmds.add_parser("hash-token", help="print the SHA-256 a tokens file stores for a token (read from stdin)",
                        description="Print the SHA-256 that admin_tokens_file stores for a token read from standard "
                        "input.", epilog=f"example:\n  {EXAMPLES['hash-token']}",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    h.set_defaults(run=_hash_token)


def _hash_token(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().strip()
    if not token:
        print("geogate admin hash-token: give the token on standard input", file=sys.stderr)
        return 2
    print(hashlib.sha256(token.encode()).hexdigest())
    return 0


def _target(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(gateway URL, bearer token, CA file). Without --url, the deployment geogate up left
    in --run-dir supplies all three; its token never goes to a gateway named otherwise."""
    local = (read_endpoints(args.run_dir) or {}) if args.url is None else {}
    url = args.url or next(iter(local.get("gateways", {}).values()), DEFAULT_URL)
    cacert = args.cacert or local.get("tls_ca")
    env_token = os.environ.get("GEOGATE_ADMIN_TOKEN")
    token_file = args.token_file or (None if env_token else local.get("admin_token_file"))
    if token_file is None:
        return url, env_token or "", cacert
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read the admin token file {token_file}: {exc.strerror or exc}") from exc
    if not token:
        raise UsageError(f"the admin token file {token_file} is empty")
    return url, token, cacert


def _run(args: argparse.Namespace) -> int:
    try:
        url, token, cacert = _target(args)
    except UsageError as exc:
        print(f"geogate admin {args.admin_command}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args, url, token, cacert))
    except AdminError as exc:
        if args.json:
            print(json.dumps(exc.body, ensure_ascii=False, indent=2))
        else:
            print(f"geogate admin {args.admin_command}: {exc}", file=sys.stderr)
            for problem in (exc.body.get("report") or {}).get("problems", []):
                print(f"  - {problem}", file=sys.stderr)
            if exc.status == 401:
                print("  pass --token-file FILE (or set GEOGATE_ADMIN_TOKEN), or --run-dir of a geogate up "
                      "deployment", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"geogate admin {args.admin_command}: cannot reach {url}: {exc}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace, url: str, token: str, cacert: str | None) -> int:
    ctx = ssl.create_default_context(cafile=cacert) if cacert else None
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(url.rstrip("/") + "/", headers=headers, timeout=timeout,
                                     connector=aiohttp.TCPConnector(ssl=ctx or True)) as http:

        async def call(method: str, path: str, body: dict[str, Any] | None = None,
                       params: dict[str, str] | None = None) -> dict[str, Any]:
            async with http.request(method, path.lstrip("/"), json=body, params=params) as resp:
                data: dict[str, Any] = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise AdminError(resp.status, data)
                return data

        name = args.admin_command
        if name == "status":
            data = await call("GET", "admin/v1/status")
            return _show(args, data, _status_text)
        if name == "switch":
            data = await call("POST", "admin/v1/switch", {"to": args.to, "reason": args.reason,
                                                          "dry_run": args.dry_run,
                                                          "expected_epoch": args.expected_epoch})
            return _show(args, data, _switch_text)
        if name == "rollback":
            return _show(args, await call("POST", "admin/v1/rollback", {"reason": args.reason}), _changed_text)
        if name == "canary":
            body = {"percent": args.percent, "reason": args.reason}
            return _show(args, await call("POST", "admin/v1/canary", body), _changed_text)
        if name in ("drain", "fail", "restore"):
            path = f"admin/v1/regions/{args.region}/{name}"
            return _show(args, await call("POST", path, {"reason": args.reason}), _changed_text)
        if name == "drill":
            body = {"region": args.region, "duration_s": args.duration_s, "mode": args.mode, "reason": args.reason}
            report = await call("POST", "admin/v1/drills", body)
            while report["state"] in ("running", "recovering"):
                if not args.json:
                    print(f"\r{time.strftime('%H:%M:%S')} drill {report['id']} {report['region']} {report['state']}: "
                          f"{report.get('elapsed_s', 0):.0f}/{args.duration_s:.0f} s", end="", flush=True)
                await asyncio.sleep(0.5)
                report = await call("GET", f"admin/v1/drills/{report['id']}")
            if not args.json:
                print()
            return _show(args, report, _drill_text)
        if name == "audit":
            return _show(args, await call("GET", "admin/v1/audit", params={"count": str(args.count)}), _audit_text)
        if name == "route":
            return _show(args, await call("GET", "admin/v1/route", params={"ip": args.ip, "task": args.task}),
                         _route_text)
        if name == "register":
            body = {"model_version": args.model_version, "sha256": args.sha256, "reason": args.reason}
            return _show(args, await call("POST", f"admin/v1/colors/{args.color}", body), _changed_text)
        if name == "clients":
            return _show(args, await call("GET", "admin/v1/clients"), _clients_text)
        if name in ("client-add", "client-set"):
            body = _client_body(args)
            if name == "client-add":
                data = await call("POST", "admin/v1/clients", {"name": args.name, "key": not args.no_key, **body})
            else:
                data = await call("POST", f"admin/v1/clients/{args.name}", body)
            return _show(args, data, _client_text)
        if name == "client-rotate":
            body = {"reason": args.reason, "overlap_s": args.overlap_s}
            return _show(args, await call("POST", f"admin/v1/clients/{args.name}/keys", body), _client_text)
        if name == "client-revoke":
            path = f"admin/v1/clients/{args.name}/" + (f"keys/{args.key}/revoke" if args.key else "revoke")
            return _show(args, await call("POST", path, {"reason": args.reason}), _client_text)
    raise AssertionError(name)


LIMITS = ("rps", "burst", "items_per_s", "items_burst", "daily_quota", "max_concurrent")
LIMIT_HELP = {"rps": "calls per second, shared by every gateway", "burst": "calls allowed at once above the rate",
              "items_per_s": "items (pairs, addresses) per second", "items_burst": "items allowed at once above that",
              "daily_quota": "items per UTC day", "max_concurrent": "calls in flight at one gateway"}
DEFAULT_URL = "http://127.0.0.1:8080"


def _client_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": args.reason}
    for field in ("tasks", "regions", "cert_names"):
        if getattr(args, field) is not None:
            body[field] = [x.strip() for x in getattr(args, field).split(",") if x.strip()]
    limits = {k: getattr(args, k) for k in LIMITS if getattr(args, k) is not None}
    if limits:
        if "max_concurrent" in limits:
            limits["max_concurrent"] = int(limits["max_concurrent"])
        body["limits"] = limits
    if getattr(args, "disabled", None) is not None:
        body["disabled"] = args.disabled
    return body


def _limits_text(limits: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in limits.items() if v) or "no limits of its own"


def _clients_text(d: dict[str, Any]) -> str:
    out = [(f"anonymous access: {'ON' if d['anonymous'] else 'off'}; default limits: "
           f"{_limits_text(d['default_limits'])}"), ""]
    out.append(f"{'CLIENT':24s} {'SOURCE':8s} {'STATE':8s} {'TASKS':18s} {'REGIONS':16s} {'KEYS':>4s}  LIMITS")
    for c in d["clients"]:
        valid = sum(1 for k in c["keys"] if k["valid"])
        out.append(f"{c['name']:24s} {c['source']:8s} {'revoked' if c['disabled'] else 'active':8s} "
                   f"{','.join(c['tasks']):18s} {','.join(c['regions']) or 'any':16s} {valid:4d}  "
                   f"{_limits_text(c['limits'])}")
    return "\n".join(out)


def _client_text(d: dict[str, Any]) -> str:
    c = d["client"]
    lines = [(f"client {c['name']}: {'revoked' if c['disabled'] else 'active'}, tasks {','.join(c['tasks'])}, "
             f"regions {','.join(c['regions']) or 'any'}, {_limits_text(c['limits'])}")]
    for k in c["keys"]:
        state = "revoked" if k["revoked"] else f"valid until {k['expires_at']}" if k["expires_at"] else "valid"
        lines.append(f"  key {k['id']}: {state if k['valid'] or k['revoked'] else 'expired'}")
    if d.get("api_key"):
        lines.append(f"\nAPI key (shown once; store it now): {d['api_key']}")
    lines.append(_changed_text({k: v for k, v in d.items() if k not in ("client", "api_key")}))
    return "\n".join(lines)


def _show(args: argparse.Namespace, data: dict[str, Any], text: Any) -> int:
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else text(data))
    return 0


def _status_text(d: dict[str, Any]) -> str:
    reg = d["registry"]
    colors = reg.get("colors", {})
    out = [(f"registry epoch {reg['epoch']} (age {d['registry_age_s']} s, store {d['store']}); "
            f"ACTIVE {reg['active_color']} {colors.get(reg['active_color'], {}).get('model_version', '?')}; "
            f"canary {reg['canary_percent']:g}%"), ""]
    out.append(f"{'REGION':14s} {'STATE':8s} {'COLOR':6s} {'NODES':>6s}  {'VERSION':40s} {'QUEUE':>5s} {'ERR':>6s} "
               f"{'P99 MS':>7s}")
    for region, info in d["regions"].items():
        for color, nodes in sorted(info["colors"].items()):
            healthy = sum(1 for n in nodes if n["healthy"])
            versions = ",".join(sorted({str(n["model_version"]) for n in nodes}))
            queue = sum(n["queue_depth"] for n in nodes)
            err = max((n["error_rate"] for n in nodes), default=0.0)
            p99 = max((n["p99_ms"] for n in nodes), default=0.0)
            out.append(f"{region:14s} {info['state']:8s} {color:6s} {f'{healthy}/{len(nodes)}':>6s}  {versions:40s} "
                       f"{queue:5d} {err:6.1%} {p99:7.1f}")
        if not info["colors"]:
            out.append(f"{region:14s} {info['state']:8s} (no nodes known)")
    out.append("")
    gateways = d.get("gateways")
    if gateways is None:
        out.append("gateways: unknown (store unreachable)")
    else:
        out.append(f"{'GATEWAY':34s} {'REGION':14s} {'EPOCH':>5s} {'REQ/S':>7s} {'P99 MS':>7s} {'ERR':>6s}")
        for g in gateways:
            total = (g.get("stats") or {}).get("all") or {}
            out.append(f"{g['url'] + ' pid ' + str(g['pid']):34s} {g['region']:14s} {g['epoch']:5d} "
                       f"{total.get('rps', 0):7.1f} {total.get('p99_ms', 0):7.1f} {total.get('error_rate', 0):6.1%}")
    for region, rows in (d.get("top_clients") or {}).items():
        out.append(f"\ntop clients in {region} (last 10 s): " + ", ".join(
            f"{r['client']} {r['rps']:g}/s ({r['errors']} refused or failed)" for r in rows))
    if d.get("watch"):
        w = d["watch"]
        out.append(f"\nwatch after the switch {w['old']} -> {w['new']}: {w['state']} {w.get('reason', '')}")
    if d.get("drill"):
        out.append(f"drill running: {d['drill']['region']} ({d['drill']['mode']})")
    return "\n".join(out)


def _changed_text(d: dict[str, Any]) -> str:
    head = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("gateways_applied", "gateways_not_confirmed",
                                                                    "registry", "report", "watch"))
    lines = [head, f"applied by {len(d.get('gateways_applied', []))} gateway(s)"]
    lines += [f"  NOT confirmed: {g}" for g in d.get("gateways_not_confirmed", [])]
    return "\n".join(lines)


def _switch_text(d: dict[str, Any]) -> str:
    r = d["report"]
    lines = [(f"pre-checks for {r['from_color']} ({r['from_version']}) -> {r['to_color']} ({r['to_version']}): "
              f"{'passed' if r['ok'] else 'FAILED'}")]
    for region in r["regions"]:
        lines.append(f"  {region['region']:14s} {region['state']:8s} ready {region['ready']}/{region['needed']} "
                     f"{'ok' if region['ok'] else 'NOT READY'}")
    g = r.get("golden")
    if g:
        lines.append(f"  golden set: labels agree {g['label_agreement']:.1%} of {g['pairs']} pairs, parses "
                     f"{g['parse_agreement']:.1%} of {g['addresses']} addresses, max drift {g['max_drift']:.4f}")
    lines += [f"  - {p}" for p in r["problems"]]
    if d.get("dry_run"):
        lines.append("dry run: nothing changed")
    elif d.get("switched"):
        lines.append(_changed_text({k: v for k, v in d.items() if k != "report"}))
    return "\n".join(lines)


def _drill_text(r: dict[str, Any]) -> str:
    lines = [(f"drill {r['id']}: {r['mode']} {r['region']} for {r['duration_s']:g} s: {r['state']}"
              f"{' (' + r['error'] + ')' if r.get('error') else ''}"),
             f"  time to reroute: {r['reroute_ms']} ms; time to recover after restore: {r['recover_ms']} ms",
             f"  {'PHASE':7s} {'CALLS':>6s} {'FAILED':>6s} {'P50 MS':>7s} {'P99 MS':>7s}  SERVED BY"]
    for phase in ("before", "during", "after"):
        p = r[phase]
        served = ", ".join(f"{k}: {v}" for k, v in sorted(p.get("served_by", {}).items()))
        lines.append(f"  {phase:7s} {p['requests']:6d} {p['failed']:6d} {p['p50_ms']:7.1f} {p['p99_ms']:7.1f}  {served}")
    lines.append(f"  measured by gateway {r['gateway']} (its own calls for clients of {r['region']})")
    return "\n".join(lines)


def _route_text(d: dict[str, Any]) -> str:
    node = d.get("node")
    lines = [(f"client {d['ip']} ({d['country'] or 'unknown country'}, by {d['how']}): home {d['home']}; "
             f"{d['task']} on {d['color']} {d['version']}"),
             f"  {'ORDER':5s} {'REGION':14s} {'':8s} WHY"]
    for i, region in enumerate(d["order"], 1):
        lines.append(f"  {i:<5d} {region:14s} {'serves' if node and node['region'] == region else 'next':8s} "
                     f"{'home' if region == d['home'] else 'failover'}")
    for region, why in d["skipped"].items():
        lines.append(f"  {'-':5s} {region:14s} {'skipped':8s} {why}")
    if node:
        lines.append(f"  node {node['url']} ({node['reason']}; {node['outstanding']} in flight, "
                     f"{node['ewma_ms']} ms typical)")
    lines.append(f"answer: {d['answer']}")
    return "\n".join(lines)


def _audit_text(d: dict[str, Any]) -> str:
    lines = [f"{'WHEN':25s} {'EPOCH':>5s} {'ACTION':16s} {'WHO':16s} WHY"]
    for e in d["entries"]:
        lines.append(f"{e['when']:25s} {e['epoch']:5d} {e['action']:16s} {e['who']:16s} {e['why']}")
    return "\n".join(lines)
