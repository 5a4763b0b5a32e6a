# name: ranking users from the context with tuple keys and lambdas
import re
stats = {}
for user, action, latency in re.findall(r"user=(\w+) action=(\w+) latency_ms=(\d+)", context):
    s = stats.setdefault(user, {"n": 0, "total": 0, "actions": set()})
    s["n"] += 1
    s["total"] += int(latency)
    s["actions"].add(action)
ranking = sorted(stats.items(), key=lambda kv: (-kv[1]["total"] / kv[1]["n"], kv[0]))
for rank, (user, s) in enumerate(ranking, 1):
    print(f"{rank:>2}. {user:<6} {s['n']:>4} {s['total'] / s['n']:8.2f} {','.join(sorted(s['actions']))}")
