# name: json loads/dumps with indent, sort_keys, separators and ensure_ascii
import json
data = {"zeta": [3, 2, 1], "alpha": {"nested": True, "none": None, "pi": 3.14159}, "name": "Zoë 東京", "n": 10**20}
print(json.dumps(data))
print(json.dumps(data, sort_keys=True))
print(json.dumps(data, indent=2, sort_keys=True))
print(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
print(json.dumps([1.0, 0.1, 1e-7, 1e22, float("inf")]))
text = '{"b": [1, 2, {"c": null}], "a": "x\\u00e9", "f": 1.5e3}'
obj = json.loads(text)
print(obj, type(obj["f"]).__name__)
print(json.loads(json.dumps(data)) == data)
print(json.dumps((1, 2)), json.dumps("quote\"and\\slash"))
print(json.dumps({"k": 1}, indent="\t"))
print(json.dumps({3: "int key", "2": "str key"}, sort_keys=False))
