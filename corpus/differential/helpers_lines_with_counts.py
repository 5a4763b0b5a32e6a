# name: lines_with() returns every matching line, for len/Counter; its printed form is a count and the first lines
from collections import Counter
errors = lines_with("ERROR")
print(type(errors).__name__, isinstance(errors, list), len(errors))
print(len(lines_with("error")) == len(errors))
both = lines_with("user=alice", "action=login")
print(len(both), both[:2])
print(all("user=alice" in line and "action=login" in line for line in both))
print(len(lines_with("user=ali")), len(lines_with("user=alice")) > 0)
print(Counter(line.split("] ")[1].split()[0] for line in lines_with("latency_ms")).most_common())
print(lines_with("NEEDLE-2"))
print(lines_with("action=login", "no-such-word"))
print(len(lines_with()), len(lines_with()) == len([l for l in context.splitlines() if l.strip()]))
print(lines_with("user=bob", "ERROR"))
print(str(lines_with("RECORD")).splitlines()[0])
# Lines are text, and their fields can be read by name as well.
first = lines_with("user=alice", "action=login")[0]
print(first["user"], first["USER"], first["no_such_field"], first.get("no_such_field", "-"), first[:5], first[-1])
print(Counter(line["action"] for line in lines_with("user=alice")).most_common(2))
print(isinstance(first, str), first.upper() == str(first).upper(), first.split()[0] == str(first).split()[0])
# %%
print(lines_with(3))
# %%
print(lines_with("  "))
