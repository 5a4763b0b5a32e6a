# name: Counter.most_common over context words
import re
from collections import Counter
words = re.findall(r"[a-z]+", context.lower())
counts = Counter(words)
print(len(words), len(counts))
for word, n in counts.most_common(10):
    print(f"{word:>10} {n}")
actions = Counter(re.findall(r"action=(\w+)", context))
print(actions.most_common())
c = Counter("mississippi")
print(c.most_common(3), c["s"], c["z"])
c.update("sip")
c.subtract({"i": 2})
print(sorted(c.items()), c.total())
print(Counter(a=3, b=1) + Counter(a=1, c=2), Counter(a=3, b=1) - Counter(a=1, b=5))
print(list((Counter("aab") | Counter("abb")).elements()))
