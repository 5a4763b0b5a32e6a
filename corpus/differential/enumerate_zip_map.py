# name: enumerate, zip (strict), map, filter and reversed
names = ["ann", "bob", "cy"]
ages = [31, 25, 40]
for i, (n, a) in enumerate(zip(names, ages), start=1):
    print(i, n, a)
print(list(zip(*[(1, "a"), (2, "b")])), dict(zip(names, ages)))
try:
    list(zip(names, ages[:2], strict=True))
except ValueError as exc:
    print("ValueError:", exc)
print(list(map(str.upper, names)), list(filter(None, [0, 1, "", "x", None, []])))
print(list(map(lambda x, y: x * y, [1, 2, 3], [4, 5])), list(reversed(range(5))))
print(list(enumerate("ab")), sorted(enumerate("cab"), key=lambda t: t[1]))
