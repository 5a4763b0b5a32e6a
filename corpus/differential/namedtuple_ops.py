# name: namedtuple fields, _replace and _asdict
from collections import namedtuple
Point = namedtuple("Point", ["x", "y"])
p = Point(3, 4)
print(p, p.x, p[1], p._fields)
print(p._replace(x=10), p._asdict())
Entry = namedtuple("Entry", "user action latency", defaults=[0])
e = Entry("alice", "login")
print(e, e.latency)
entries = [Entry("bob", "search", 30), Entry("alice", "upload", 10), Entry("carol", "login", 20)]
print(sorted(entries, key=lambda t: t.latency))
print(max(entries, key=lambda t: t.latency).user)
x, y = p
print(x + y, Point._make([7, 8]), isinstance(p, tuple))
