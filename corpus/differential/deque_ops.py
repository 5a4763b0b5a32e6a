# name: deque rotate, maxlen and sliding windows
from collections import deque
d = deque([1, 2, 3, 4, 5])
d.rotate(2)
print(d)
d.rotate(-3)
print(d)
d.appendleft(0)
d.append(6)
print(d, d.popleft(), d.pop(), d)
window = deque(maxlen=3)
for x in range(7):
    window.append(x)
    print(list(window), sum(window))
d2 = deque("abcdef")
d2.extendleft("xy")
print(d2, d2.index("c"), d2.count("a"))
lines = deque(context.splitlines(), maxlen=2)
print(list(lines))
