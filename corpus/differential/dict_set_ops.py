# name: dict merging and views, set algebra printed sorted
a = {"x": 1, "y": 2}
b = {"y": 20, "z": 30}
print(a | b, b | a, {**a, **b})
c = dict(a)
c |= {"w": 0}
print(c, c.get("missing", "default"), c.setdefault("v", 5), c)
print(sorted(a.keys() & b.keys()), sorted(a.keys() | b.keys()), sorted(a.items() - b.items()))
print(dict.fromkeys(["k1", "k2"], []), dict(zip("abc", range(3))), dict([("p", 1)]))
d = {"b": 2, "a": 1, "c": 3}
print(sorted(d), sorted(d.items(), key=lambda kv: kv[1], reverse=True), list(reversed(d)))
print(d.pop("b"), d.popitem(), d)
s1, s2 = set("abracadabra"), set("alacazam")
print(sorted(s1), sorted(s1 - s2), sorted(s1 | s2), sorted(s1 & s2), sorted(s1 ^ s2))
print(s1 <= s1 | s2, {1, 2}.isdisjoint({3}), sorted(frozenset([3, 1, 2])), len({1, 1.0, True}))
