# name: chunk the context by lines with overlap
lines = context.splitlines()
size, overlap = 300, 20
chunks = []
start = 0
while start < len(lines):
    chunks.append(lines[start:start + size])
    if start + size >= len(lines):
        break
    start += size - overlap
print(len(lines), len(chunks))
for i, c in enumerate(chunks):
    print(i, len(c), c[0][:30], "...", c[-1][:30])
covered = set()
for i in range(len(chunks)):
    covered.update(range(i * (size - overlap), i * (size - overlap) + len(chunks[i])))
print(len(covered) == len(lines))
