# name: build a 1 MB string, then chunk and search it
import hashlib
parts = []
for i in range(20000):
    parts.append(f"row {i:05d} value={(i * 7919) % 10007:05d} ")
    if i % 1000 == 999:
        parts.append("\n")
big = "".join(parts) * 2
big = big[:1_000_000]
print(len(big), big.count("\n"), big.count("value=00000"))
chunk_size = 65536
hits = []
for start in range(0, len(big), chunk_size):
    chunk = big[start:start + chunk_size]
    pos = chunk.find("row 12345")
    if pos >= 0:
        hits.append(start + pos)
print(hits)
print(hashlib.sha256(big.encode()).hexdigest())
print(big[499_990:500_010])
