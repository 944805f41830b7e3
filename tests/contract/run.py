"""Runs schemathesis against the gateway once per role: anonymous, USER, OPERATOR, AUDITOR and
ADMIN, each with every check (`--checks all`). Exits non-zero if any run reports a failure.

The gateway's URL and the administrator's credentials come from the environment that
`./dev env` prints (and `./dev test` sets). Each role gets an account of its own, made for
the run, so the fuzzer can change or delete it without touching anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ROLES = ["anonymous", "USER", "OPERATOR", "AUDITOR", "ADMIN"]
# `DELETE /users/me` ends the caller's own account, so it runs after everything else.
SELF_DELETE = "delete_me"


def gateway_url() -> str:
    return os.environ.get("REWARDS_TEST_URL_GATEWAY", "http://127.0.0.1:3000")


def call(method: str, path: str, token: str | None = None, body: dict | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 30
    while True:
        response = requests.request(
            method, gateway_url() + path, json=body, headers=headers, timeout=10
        )
        # Sign-in routes are rate limited per client; wait as told.
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))


def sign_in(email: str, password: str) -> str:
    response = call("POST", "/auth/login", body={"email": email, "password": password})
    response.raise_for_status()
    return response.json()["accessToken"]


def token_for(role: str, admin: str) -> str | None:
    """A fresh account with `role` (USER is every account's first role), signed in."""
    if role == "anonymous":
        return None
    email = f"contract-{role.lower()}-{uuid.uuid4().hex[:12]}@example.test"
    password = uuid.uuid4().hex
    made = call(
        "POST",
        "/auth/register",
        body={"email": email, "password": password, "nickname": f"contract {role}"},
    )
    made.raise_for_status()
    if role != "USER":
        user_id = made.json()["id"]
        roles = call("PUT", f"/users/{user_id}/roles", admin, {"roles": [role]})
        roles.raise_for_status()
    return sign_in(email, password)


def schemathesis(args: argparse.Namespace, role: str, token: str | None, only_self_delete: bool):
    selection = [
        "--include-operation-id" if only_self_delete else "--exclude-operation-id",
        SELF_DELETE,
    ]
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{gateway_url()}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--workers",
        "2",
        "--report",
        "junit",
        "--report-dir",
        str(args.report_dir / role),
        *selection,
    ]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", PYTHONPATH=str(HERE))
    return subprocess.run(command, env=env, cwd=HERE).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20261202)
    home = Path(os.environ.get("REWARDS_HOME", Path.home() / ".cache/reward-platform"))
    parser.add_argument("--report-dir", type=Path, default=home / "run/contract")
    args = parser.parse_args()
    admin = sign_in(
        os.environ["REWARDS_TEST_ADMIN_EMAIL"], os.environ["REWARDS_TEST_ADMIN_PASSWORD"]
    )
    results = {}
    for role in args.roles.split(","):
        started = time.monotonic()
        token = token_for(role, admin)
        code = schemathesis(args, role, token, only_self_delete=False)
        if token:
            code = code or schemathesis(args, role, token, only_self_delete=True)
        results[role] = (code, time.monotonic() - started)
    print("\ncontract runs (schemathesis --checks all):")
    for role, (code, took) in results.items():
        verdict = "no failures" if code == 0 else f"FAILED (exit {code})"
        print(f"  {role:<10} {verdict:<20} {took:6.1f}s")
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
