# name: find non-ASCII lines in the context and count characters by script
import unicodedata
lines = [l for l in context.splitlines() if not l.isascii()]
print(len(lines))
print(sorted(set(lines)))
scripts = {}
for ch in "".join(lines):
    if ord(ch) > 127:
        name = unicodedata.name(ch, "UNKNOWN").split()[0]
        scripts[name] = scripts.get(name, 0) + 1
print(sorted(scripts.items(), key=lambda kv: (-kv[1], kv[0]))[:8])
print(sum(1 for ch in context if ord(ch) > 0xFFFF))
