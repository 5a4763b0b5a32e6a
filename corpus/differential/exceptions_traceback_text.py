# name: formatted traceback of a caught error names the cell
import traceback
def inner(data):
    return data["missing"]
def outer():
    return inner({"present": 1})
try:
    outer()
except KeyError:
    text = traceback.format_exc()
    for line in text.splitlines():
        print(line)
summary = traceback.extract_stack()[-1]
print(summary.filename, summary.name)
