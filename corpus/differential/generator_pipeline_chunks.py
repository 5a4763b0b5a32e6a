# name: lazy generator pipeline over chunks of the context
def chunks(text, size):
    for start in range(0, len(text), size):
        yield start, text[start:start + size]
def lines_with(chunk_iter, word):
    for start, chunk in chunk_iter:
        for offset, line in enumerate(chunk.split("\n")):
            if word in line:
                yield start, offset, line.strip()
def take(n, it):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x
for start, offset, line in take(5, lines_with(chunks(context, 8192), "ERROR")):
    print(start, offset, line[:60])
total = sum(1 for _ in lines_with(chunks(context, 8192), "upload"))
print("upload lines (chunk-split):", total)
