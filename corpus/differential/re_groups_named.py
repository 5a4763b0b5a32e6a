# name: named groups, groupdict and finditer spans
import re
pattern = re.compile(r"\[(?P<date>\d{4}-\d{2}-\d{2}) (?P<time>[\d:]+)\] (?P<level>[A-Z]+) user=(?P<user>\w+)")
m = pattern.search(context)
print(m.group(0))
print(m.group("date"), m.group("level"), m.group(1, 4))
print(m.groupdict())
print(m.start(), m.end(), m.span("user"))
for i, match in enumerate(pattern.finditer(context)):
    if i >= 4:
        break
    print(i, match.span(), match["user"], match.lastgroup)
m2 = re.match(r"(\w+)(?:-(\w+))?", "alpha")
print(m2.groups(), m2.groups(default="none"))
print(pattern.groups, sorted(pattern.groupindex.items()))
