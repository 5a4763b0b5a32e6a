# name: defaultdict grouping of log entries
import re
from collections import defaultdict
by_user = defaultdict(list)
by_level = defaultdict(int)
for m in re.finditer(r"\] (\w+) user=(\w+) action=(\w+) latency_ms=(\d+)", context):
    level, user, action, latency = m.groups()
    by_user[user].append(int(latency))
    by_level[level] += 1
for user in sorted(by_user):
    values = by_user[user]
    print(user, len(values), round(sum(values) / len(values), 1))
print(dict(sorted(by_level.items())))
tree = lambda: defaultdict(tree)
root = tree()
root["a"]["b"]["c"] = 1
root["a"]["d"] = 2
def plain(d):
    return {k: plain(v) if isinstance(v, dict) else v for k, v in d.items()}
print(plain(root))
dd = defaultdict(set)
for word in ["apple", "avocado", "banana", "blueberry", "cherry"]:
    dd[word[0]].add(len(word))
print({k: sorted(v) for k, v in dd.items()}, dd.default_factory.__name__)
