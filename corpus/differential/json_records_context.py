# name: parse JSON records from context lines and aggregate
import json
records = [json.loads(line[len("RECORD "):]) for line in context.splitlines() if line.startswith("RECORD ")]
print(len(records))
by_name = {}
for r in records:
    by_name.setdefault(r["name"], []).append(r["score"])
for name in sorted(by_name):
    scores = by_name[name]
    print(f"{name:<6} n={len(scores):>2} avg={sum(scores) / len(scores):.2f} max={max(scores)}")
top = sorted(records, key=lambda r: (-r["score"], r["id"]))[:3]
print(json.dumps(top, indent=1, sort_keys=True))
tags = {}
for r in records:
    for t in r["tags"]:
        tags[t] = tags.get(t, 0) + 1
print(sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:5])
