#!/usr/bin/env bash
# Gateway overhead: the same cheap routes called through the gateway and straight at the
# service, in one run, with wrk. Needs a running `./dev up --release` and wrk (apt install wrk).
#   bench/gateway_overhead.sh [seconds] [connections]
set -euo pipefail
seconds=${1:-10}
connections=${2:-64}
secrets="${REWARDS_HOME:-$HOME/.cache/reward-platform}/run/dev/secrets.json"
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$secrets" "$1"; }

token=$(curl -sf -XPOST http://127.0.0.1:3000/auth/login -H 'content-type: application/json' \
  -d "{\"email\":\"$(field admin_email)\",\"password\":\"$(field admin_password)\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
# What the gateway would forward for this user: an identity assertion signed with the
# instance's secret, valid for 10 minutes.
assertion=$(python3 - "$secrets" "$token" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret = json.load(open(sys.argv[1]))["identity_secret"].encode()
payload = sys.argv[2].split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=")
now = int(time.time())
head = b64({"alg": "HS256", "typ": "JWT"})
body = b64({"sub": claims["sub"], "roles": claims["roles"], "iat": now, "exp": now + 600,
            "aud": "reward-platform/internal"})
sig = base64.urlsafe_b64encode(hmac.new(secret, head + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
print((head + b"." + body + b"." + sig).decode())
PY
)

run() {
  local name=$1; shift
  printf '%-34s ' "$name"
  wrk -t2 -c"$connections" -d"${seconds}s" --latency "$@" |
    awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx|timeout/ {err=err" "$0}
         END {printf "%10s req/s  p50 %8s  p99 %8s%s\n", rps, p50, p99, err}'
}

run "jwks (public) direct to auth" http://127.0.0.1:3001/.well-known/jwks.json
run "jwks (public) via gateway" http://127.0.0.1:3000/.well-known/jwks.json
run "/users/me (signed in) direct" -H "x-rewards-identity: $assertion" http://127.0.0.1:3001/users/me
run "/users/me (signed in) via gateway" -H "Authorization: Bearer $token" http://127.0.0.1:3000/users/me
