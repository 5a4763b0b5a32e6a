# name: json decode errors are caught and inspected
import json
bad = ['{"a": 1,}', "[1, 2", "{'single': 1}", "", "nan", '{"a": 1} extra']
for text in bad:
    try:
        value = json.loads(text)
        print("parsed", repr(text), "->", value)
    except json.JSONDecodeError as exc:
        print("error", repr(text), exc.msg, exc.pos, exc.lineno, exc.colno)
try:
    json.dumps({"s": {1, 2}})
except TypeError as exc:
    print("TypeError:", exc)
print(json.dumps({"s": sorted({3, 1, 2})}, default=str))
