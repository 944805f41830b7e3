"""Where a claim's time goes between acceptance and SUCCEEDED, hop by hop, from the claims,
both outboxes and the grant ledger: `saga_hops.py [user-id-prefix] [count]` (default: the
last 5000 claims of the bench's saga scenario). Needs `pip install pymongo`."""
import pymongo, statistics, sys
import os
c = pymongo.MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0&directConnection=true"))
prefix = sys.argv[1] if len(sys.argv) > 1 else "bench-saga"
claims = list(c.event_db.claims.find({"userId": {"$regex": "^"+prefix}}).sort("createdAt", -1).limit(int(sys.argv[2]) if len(sys.argv)>2 else 5000))
cmd_ids = [cl["commandMessageIds"][0] for cl in claims]
cmds = {d["_id"]: d for d in c.event_db.outbox.find({"_id": {"$in": cmd_ids}}, {"payload": 0})}
grants = {g["claimId"]: g for g in c.reward_db.grants.find({"claimId": {"$in": [cl["_id"] for cl in claims]}})}
users = [cl["userId"] for cl in claims]
res = {d["key"]: d for d in c.reward_db.outbox.find({"topic": "reward.grant-results", "key": {"$in": users}}, {"payload": 0})}
hops = {k: [] for k in ["request->cmd published", "cmd published->granted", "granted->result published", "result published->completed", "total"]}
ms = lambda a, b: (b - a).total_seconds() * 1000
for cl in claims:
    cmd = cmds.get(cl["commandMessageIds"][0]); g = grants.get(cl["_id"]); r = res.get(cl["userId"])
    done = [s["at"] for s in cl["timeline"] if s["step"] == "COMPLETED"]
    if not (cmd and g and r and done and cmd.get("publishedAt") and r.get("publishedAt")): continue
    hops["request->cmd published"].append(ms(cl["createdAt"], cmd["publishedAt"]))
    hops["cmd published->granted"].append(ms(cmd["publishedAt"], g["decidedAt"]))
    hops["granted->result published"].append(ms(g["decidedAt"], r["publishedAt"]))
    hops["result published->completed"].append(ms(r["publishedAt"], done[0]))
    hops["total"].append(ms(cl["createdAt"], done[0]))
for k, v in hops.items():
    if not v: print(k, "none"); continue
    v.sort(); q = lambda p: v[min(len(v)-1, int(p*len(v)))]
    print("%-30s n=%d p50 %6.1f p90 %6.1f p99 %6.1f" % (k, len(v), q(.5), q(.9), q(.99)))
