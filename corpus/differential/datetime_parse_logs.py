# name: parse log timestamps from the context and compute spans
from datetime import datetime
stamps = []
for line in context.splitlines():
    if line.startswith("[2024-"):
        stamps.append(datetime.strptime(line[1:20], "%Y-%m-%d %H:%M:%S"))
stamps.sort()
print(len(stamps), stamps[0], stamps[-1], stamps[-1] - stamps[0])
by_weekday = {}
for s in stamps:
    key = s.strftime("%a")
    by_weekday[key] = by_weekday.get(key, 0) + 1
print(sorted(by_weekday.items()))
gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
print(max(gaps), min(gaps), round(sum(gaps) / len(gaps), 3))
hours = [0] * 24
for s in stamps:
    hours[s.hour] += 1
print(hours)
