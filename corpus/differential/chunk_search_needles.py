# name: scan chunks of the context for needles, then report positions
size = 4096
found = []
for start in range(0, len(context), size):
    window = context[max(0, start - 100):start + size]
    idx = window.find("NEEDLE-")
    while idx != -1:
        absolute = max(0, start - 100) + idx
        if absolute not in [f[0] for f in found]:
            end = context.index("\n", absolute)
            found.append((absolute, context[absolute:end]))
        idx = window.find("NEEDLE-", idx + 1)
for pos, text in found:
    print(pos, text)
print(len(found))
