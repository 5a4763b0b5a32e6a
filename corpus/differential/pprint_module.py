# name: pprint of nested data with widths
from pprint import pprint, pformat
data = {"users": [{"name": n, "roles": ["reader", "writer"][: i % 2 + 1], "id": i} for i, n in enumerate(["ann", "ben", "cy"])],
        "meta": {"version": 3, "tags": ("a", "b"), "empty": {}}, "numbers": list(range(30))}
pprint(data)
pprint(data, width=40, depth=2)
print(pformat({"b": 1, "a": 2}, sort_dicts=False), pformat({"b": 1, "a": 2}))
pprint("a long string " * 8, width=30)
