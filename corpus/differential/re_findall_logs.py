# name: re.findall over log lines in the context
import re
levels = re.findall(r"\] (INFO|WARN|ERROR|DEBUG) ", context)
print(len(levels))
for level in ["INFO", "WARN", "ERROR", "DEBUG"]:
    print(level, levels.count(level))
pairs = re.findall(r"user=(\w+) action=(\w+)", context)
print(pairs[:5])
latencies = [int(x) for x in re.findall(r"latency_ms=(\d+)", context)]
print(len(latencies), min(latencies), max(latencies), sum(latencies))
slow = re.findall(r"^\[([^\]]+)\] ERROR user=(\w+) action=\w+ latency_ms=(9\d\d)$", context, re.M)
print(len(slow), slow[:3])
