# name: records() parses key=value and JSON lines into dicts with numbers as numbers, for sum/max/Counter
from collections import Counter
logs = records("latency_ms")
print(len(logs), logs[0], type(logs[0]["latency_ms"]).__name__)
print(sum(r["latency_ms"] for r in logs), max(r["latency_ms"] for r in logs))
print(Counter(r["user"] for r in logs if r["action"] == "login").most_common(3))
print(logs[0]["no_such_field"], logs[0].get("user"), "user" in logs[0], isinstance(logs[0], dict))
rows = records("RECORD")
print(len(rows), rows[0])
print(sum(round(r["score"] * 100) for r in rows), max(rows, key=lambda r: r["score"])["name"])
print(Counter(tag for r in rows for tag in r["tags"]).most_common(2))
print(records("user=carol", "action=logout")[:2])
print(records("Chapter"))
print(str(records("RECORD")).splitlines()[-1])
# %%
print(records(None))
