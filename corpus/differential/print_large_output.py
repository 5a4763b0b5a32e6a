# name: print a single 100k-character line and a 50k-character block
line = "".join(chr(ord("a") + i % 26) for i in range(100_000))
print(line)
block = ("0123456789" * 10 + "\n") * 500
print(block, end="")
print(len(line) + len(block))
