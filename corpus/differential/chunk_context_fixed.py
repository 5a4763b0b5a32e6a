# name: fixed-size chunks of the context with per-chunk statistics
size = 10_000
chunks = [context[i:i + size] for i in range(0, len(context), size)]
print(len(context), len(chunks), [len(c) for c in chunks][-3:])
for i, chunk in enumerate(chunks):
    print(f"chunk {i:02d}: lines={chunk.count(chr(10)):4d} errors={chunk.count('ERROR'):3d} needle={'NEEDLE' in chunk}")
print("".join(chunks) == context)
