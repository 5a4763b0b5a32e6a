# name: csv reading and writing through StringIO
import csv, io
rows = []
for line in context.splitlines():
    if line.startswith("[2024-") and " ERROR " in line:
        parts = dict(p.split("=") for p in line.split("] ", 1)[1].split()[1:])
        rows.append({"time": line[1:20], **parts})
buf = io.StringIO()
writer = csv.DictWriter(buf, fieldnames=["time", "user", "action", "latency_ms"], lineterminator="\n")
writer.writeheader()
writer.writerows(rows[:5])
print(buf.getvalue(), end="")
reader = csv.DictReader(io.StringIO(buf.getvalue()))
print([r["user"] for r in reader])
tricky = io.StringIO()
csv.writer(tricky, lineterminator="\n").writerow(["plain", "with,comma", 'with "quote"', "multi\nline", ""])
print(repr(tricky.getvalue()))
print(list(csv.reader(io.StringIO(tricky.getvalue()))))
print(list(csv.reader(["a;b;c", "1;2;3"], delimiter=";")))
