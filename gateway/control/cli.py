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

__all__ = ["add_parser"]


class AdminError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error") or {}
        super().__init__(f"{status} {error.get('code', '')}: {error.get('message', body)}")
        self.status, self.body = status, body


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="operate a deployment through a gateway's admin API",
                           description="Switch versions, roll back, set canary traffic, drain or fail regions, run "
                           "drills and read status and audit, through any gateway's /admin/v1 API.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("GEOGATE_ADMIN_URL", "http://127.0.0.1:8080"),
                        help="a gateway (or its admin port) [env GEOGATE_ADMIN_URL; default %(default)s]")
    common.add_argument("--token-file", default=os.environ.get("GEOGATE_ADMIN_TOKEN_FILE"),
                        help="file holding the bearer token [env GEOGATE_ADMIN_TOKEN_FILE; else GEOGATE_ADMIN_TOKEN]")
    common.add_argument("--cacert", help="CA bundle for an HTTPS gateway")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    cmds = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    def cmd(name: str, help_text: str, *, reason: bool = False) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text, parents=[common])
        if reason:
            p.add_argument("--reason", required=True, help="why (written to the audit stream)")
        p.set_defaults(run=_run)
        return p

    cmd("status", "registry, regions, nodes, gateways, watch and drill")
    p = cmd("switch", "verified switch to another color", reason=True)
    p.add_argument("--to", required=True, help="target color")
    p.add_argument("--dry-run", action="store_true", help="run the pre-checks only")
    p.add_argument("--expected-epoch", type=int, help="refuse if the registry is not at this epoch")
    cmd("rollback", "back to the previous color", reason=True)
    p = cmd("canary", "share of traffic for the preview color", reason=True)
    p.add_argument("--percent", type=float, required=True)
    for action in ("drain", "fail", "restore"):
        p = cmd(action, f"{action} a region", reason=True)
        p.add_argument("region")
    p = cmd("drill", "run a failover drill and print its report", reason=True)
    p.add_argument("--region", required=True)
    p.add_argument("--duration-s", type=float, default=30.0)
    p.add_argument("--mode", choices=["fail", "drain", "kill"], default="fail")
    p = cmd("audit", "the newest registry changes")
    p.add_argument("--count", type=int, default=20)
    p = cmd("route", "where a client's call would go now (dry run)")
    p.add_argument("--ip", required=True)
    p.add_argument("--task", choices=["similarity", "parse"], default="similarity")
    p = cmd("register", "register the version and checksum a color's nodes serve (admin role)", reason=True)
    p.add_argument("color")
    p.add_argument("--model-version", required=True)
    p.add_argument("--sha256", default="")
    cmd("clients", "calling services, their keys and limits (admin role)")
    for name, help_text in (("client-add", "add a calling service and print its first API key (shown once)"),
                            ("client-set", "change a calling service's tasks, regions, limits or certificate names")):
        p = cmd(name, help_text + " (admin role)", reason=True)
        p.add_argument("name")
        p.add_argument("--tasks", help="comma-separated: similarity,parse")
        p.add_argument("--regions", help="comma-separated regions its calls must stay in")
        p.add_argument("--cert-names", help="comma-separated TLS client certificate names (CN, DNS or URI) that identify it")
        for limit in LIMITS:
            p.add_argument("--" + limit.replace("_", "-"), type=float, help="0: none")
        if name == "client-add":
            p.add_argument("--no-key", action="store_true", help="no API key (a certificate-only client)")
        else:
            p.add_argument("--disabled", choices=["true", "false"], help="refuse (or accept again) all its calls")
    p = cmd("client-rotate", "give a client a new API key; the old ones stay valid --overlap-s more", reason=True)
    p.add_argument("name")
    p.add_argument("--overlap-s", type=float, default=86_400.0, help="0: the old keys stop at once")
    p = cmd("client-revoke", "revoke one API key (--key ID) or the whole client", reason=True)
    p.add_argument("name")
    p.add_argument("--key", help="the key's id (the 8 hex digits after gg_)")
    h = cmds.add_parser("hash-token", help="print the SHA-256 a tokens file stores for a token (read from stdin)")
    h.set_defaults(run=_hash_token)


def _hash_token(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().strip()
    if not token:
        print("geogate admin hash-token: give the token on standard input", file=sys.stderr)
        return 2
    print(hashlib.sha256(token.encode()).hexdigest())
    return 0


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip()
    return os.environ.get("GEOGATE_ADMIN_TOKEN", "")


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except AdminError as exc:
        if args.json:
            print(json.dumps(exc.body, ensure_ascii=False, indent=2))
        else:
            print(f"geogate admin {args.admin_command}: {exc}", file=sys.stderr)
            for problem in (exc.body.get("report") or {}).get("problems", []):
                print(f"  - {problem}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"geogate admin {args.admin_command}: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace) -> int:
    ctx = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    headers = {"Authorization": f"Bearer {_token(args)}"}
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(args.url.rstrip("/") + "/", headers=headers, timeout=timeout,
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
                         lambda d: json.dumps(d, ensure_ascii=False, indent=2))
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
        body["disabled"] = args.disabled == "true"
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


def _audit_text(d: dict[str, Any]) -> str:
    lines = [f"{'WHEN':25s} {'EPOCH':>5s} {'ACTION':16s} {'WHO':16s} WHY"]
    for e in d["entries"]:
        lines.append(f"{e['when']:25s} {e['epoch']:5d} {e['action']:16s} {e['who']:16s} {e['why']}")
    return "\n".join(lines)
