# name: groupby consecutive log lines by level and by date
import itertools
entries = []
for line in context.splitlines():
    if line.startswith("[2024-"):
        date = line[1:11]
        level = line.split("] ", 1)[1].split(" ", 1)[0]
        entries.append((date, level))
runs = [(level, len(list(group))) for level, group in itertools.groupby(e[1] for e in entries)]
print(len(runs), max(runs, key=lambda r: r[1]))
per_date = {date: len(list(g)) for date, g in itertools.groupby(sorted(entries), key=lambda e: e[0])}
print(len(per_date))
for date in sorted(per_date)[:5]:
    print(date, per_date[date])
batches = [entries[i:i + 100] for i in range(0, len(entries), 100)]
print([len(b) for b in batches])
