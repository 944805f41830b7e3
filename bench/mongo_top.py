"""MongoDB work per unit of load: `snap FILE` before a run, `diff FILE N` after it prints
serverStatus opcounters and committed transactions per unit (N claims, messages, ...) and each
collection's operation counts and time from the `top` command. Needs `pip install pymongo`.
The URI is the `./dev up` instance's unless MONGO_URI is set."""
import sys, json, pymongo, time
import os
c = pymongo.MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0&directConnection=true"))
def snap():
    s = c.admin.command("serverStatus")
    t = c.admin.command("top")["totals"]
    return {"op": s["opcounters"], "txn": s.get("transactions", {}).get("totalCommitted", 0), "top": t, "wt_cache": s["wiredTiger"]["cache"]["bytes currently in the cache"]}
if sys.argv[1] == "snap":
    json.dump(snap(), open(sys.argv[2], "w"))
else:
    a = json.load(open(sys.argv[2])); b = snap()
    n = float(sys.argv[3]) if len(sys.argv) > 3 else 1
    print("per unit (n=%d):" % n)
    print(" opcounters:", {k: round((b["op"][k]-a["op"].get(k,0))/n, 2) for k in b["op"] if isinstance(b["op"][k], int)})
    print(" txns committed:", round((b["txn"]-a["txn"])/n, 3))
    rows = []
    for ns, v in b["top"].items():
        if ns == "note": continue
        av = a["top"].get(ns)
        if not av: av = {k: {"time": 0, "count": 0} for k in v}
        tot = v["total"]["time"] - av["total"]["time"]
        if tot <= 0: continue
        parts = {k: (v[k]["count"]-av[k]["count"], (v[k]["time"]-av[k]["time"])/1000) for k in ["queries","getmore","insert","update","remove","commands"] if k in v}
        rows.append((tot/1000, ns, parts))
    rows.sort(reverse=True)
    for tot, ns, parts in rows[:25]:
        print(" %9.0f ms  %-45s %s" % (tot, ns, {k: "%d/%.0fms" % p for k, p in parts.items() if p[0]}))
