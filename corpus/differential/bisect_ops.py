# name: bisect for grades, insort and range counting
import bisect
breakpoints = [60, 70, 80, 90]
grades = "FDCBA"
scores = [33, 99, 77, 70, 89, 90, 100, 60, 59]
print([grades[bisect.bisect(breakpoints, s)] for s in scores])
data = sorted([5, 1, 9, 3, 7, 3])
print(data, bisect.bisect_left(data, 3), bisect.bisect_right(data, 3))
bisect.insort(data, 4)
bisect.insort_left(data, 3)
print(data)
lat = sorted(int(l.rsplit("=", 1)[1]) for l in context.splitlines() if "latency_ms=" in l)
print(bisect.bisect_left(lat, 500) , len(lat) - bisect.bisect_right(lat, 900))
records = [(1, "a"), (3, "c"), (5, "e")]
print(bisect.bisect(records, (3, "z")), bisect.bisect_left([r[0] for r in records], 4))
print(bisect.bisect_left(["apple", "kiwi", "pear"], "fig"))
