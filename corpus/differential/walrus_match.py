# name: assignment expressions and structural pattern matching
import re
if (m := re.search(r"vault code is (\S+)", context)) is not None:
    print("code", m.group(1).rstrip("."))
values = [n for x in range(10) if (n := x * x) % 3 == 0]
print(values)
def handle(command):
    match command:
        case {"action": "search", "query": str(q)}:
            return f"search for {q}"
        case {"action": "read", "lines": [start, end]}:
            return f"read {start}-{end}"
        case ["chunk", int(i), *rest]:
            return f"chunk {i} with {len(rest)} extra"
        case Point(x=0, y=y):
            return f"on the y axis at {y}"
        case str() as s if s.startswith("!"):
            return "bang " + s[1:]
        case int() | float() as n:
            return f"number {n}"
        case _:
            return "unknown"
class Point:
    __match_args__ = ("x", "y")
    def __init__(self, x, y):
        self.x, self.y = x, y
for cmd in [{"action": "search", "query": "needle"}, {"action": "read", "lines": [3, 9]}, ["chunk", 4, "a", "b"],
            Point(0, 7), "!go", 2.5, None]:
    print(handle(cmd))
